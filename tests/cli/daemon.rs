//! The binary as operators run it: the daemon's signals, the single-instance lock,
//! the health endpoints, and the subcommands' exit codes, on the host. Every source
//! is down here (nothing listens on the S3 port, the SPIRE CLI fails), which is also
//! the case the agent must survive: it keeps running, changes nothing, says why.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{self, IQN};

struct Env {
    dir: tempfile::TempDir,
    port: u16,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        support::scratch_node(dir.path(), &[], &[]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Env { dir, port }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        support::agent(
            self.dir.path(),
            args,
            &[
                ("METRICS_LISTEN", format!("127.0.0.1:{}", self.port)),
                ("SCAN_FREQUENCY", "3600".into()),
            ],
        )
    }
}

/// A running daemon whose log lines arrive on a channel.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(env: &Env) -> Daemon {
        Daemon::spawn(env.cmd(&["run"]))
    }

    fn spawn(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Daemon { child, lines }
    }

    /// Waits for a log line containing `needle`; returns everything seen up to it.
    fn wait_for(&self, needle: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    seen.push(l);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {needle:?} within {within:?}; log:\n{}", seen.join("\n"));
    }

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn daemon_scans_on_sighup_serves_health_holds_the_lock_and_stops_on_sigterm() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("state")).unwrap();
    let mut d = Daemon::start(&env);
    let first = d.wait_for("END SCAN", Duration::from_secs(60));
    assert!(first.iter().any(|l| l.contains("START SCAN")));
    assert!(
        first
            .iter()
            .any(|l| l.contains("S3") && l.contains("ERROR")),
        "{first:#?}"
    );

    // A second instance is refused, naming the holder.
    let out = env.cmd(&["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&d.child.id().to_string()), "{err}");

    // Health and metrics while sources are down: alive, and the errors are counted.
    let (code, body) = http_get(env.port, "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("last scan"), "{body}");
    let (code, body) = http_get(env.port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("sbps_marshal_source_errors_total{source=\"s3\"} 1"),
        "{body}"
    );
    assert!(body.contains("sbps_marshal_converged 0"), "{body}");
    let (code, body) = http_get(env.port, "/status");
    assert_eq!(code, 200);
    assert!(body.contains("\"converged\":false"), "{body}");

    // SIGHUP: a scan now, not in an hour.
    let t = Instant::now();
    d.signal(libc::SIGHUP);
    d.wait_for("START SCAN", Duration::from_secs(10));
    d.wait_for("END SCAN", Duration::from_secs(60));
    assert!(t.elapsed() < Duration::from_secs(60));
    let (_, body) = http_get(env.port, "/metrics");
    assert!(
        body.contains("sbps_marshal_source_errors_total{source=\"s3\"} 2"),
        "{body}"
    );

    // Nothing was changed in "LIO": the TPG stays disabled (the inventory is unknown).
    assert_eq!(
        std::fs::read_to_string(env.path(&format!("configfs/iscsi/{IQN}/tpgt_1/enable"))).unwrap(),
        "0\n"
    );

    // SIGTERM: exits 0.
    d.signal(libc::SIGTERM);
    assert_eq!(wait_exit(&mut d.child, Duration::from_secs(30)), Some(0));
}

#[test]
fn subcommands_report_and_exit_codes() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("state")).unwrap();
    let run = |args: &[&str]| {
        let out = env.cmd(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["scan", "--once"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("not converged") && out.contains("S3"), "{out}");

    let (code, out, err) = run(&["plan"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("nothing to do"), "{out}");
    let (code, out, _) = run(&["plan", "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["ops"].as_array().unwrap().is_empty());

    let (code, out, _) = run(&["status"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(IQN) && out.contains("problem: S3 listing unavailable"),
        "{out}"
    );
    assert!(out.contains("last scan converged: false"), "{out}");
    let (code, out, _) = run(&["status", "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["gate"]["tpg_enabled"], serde_json::json!(false));
    assert_eq!(v["converged"], serde_json::json!(false));

    let (code, out, _) = run(&["explain", "no-such-image"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("nothing"), "{out}");

    // `scan` without --once is a usage error (exit 2), not a failed scan (1).
    let (code, _, err) = run(&["scan"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--once"), "{err}");
}

/// The binary allocates with jemalloc under the options `sbps_marshal::allocator`
/// compiles in (what keeps the agent's memory at what it holds), says so when it
/// starts, and an operator's `_RJEM_MALLOC_CONF` still wins option by option.
#[test]
fn runs_on_jemalloc_with_the_compiled_options() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("state")).unwrap();
    let start_line = |extra: Option<(&str, &str)>| {
        let mut cmd = env.cmd(&["scan", "--once"]);
        if let Some((k, v)) = extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.lines()
            .find(|l| l.contains("starting"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no start line in\n{err}"))
    };
    let line = start_line(None);
    assert!(
        line.contains(
            "allocator=\"jemalloc narenas=1 dirty_decay_ms=0 muzzy_decay_ms=0 tcache_max=1024\""
        ),
        "{line}"
    );
    let line = start_line(Some(("_RJEM_MALLOC_CONF", "narenas:3")));
    assert!(
        line.contains("allocator=\"jemalloc narenas=3 dirty_decay_ms=0"),
        "{line}"
    );
}

#[test]
fn refuses_a_state_dir_writable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let state = env.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.cmd(&["scan", "--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by others"), "{err}");
    // The fatal error is said once, not once by the log and once more by main.
    assert_eq!(err.matches("writable by others").count(), 1, "{err}");
    assert!(!Path::new(&state.join("ledger.json")).exists());
}

#[test]
fn daemon_stops_on_sigint_too() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("state")).unwrap();
    let mut d = Daemon::start(&env);
    d.wait_for("END SCAN", Duration::from_secs(60));
    d.signal(libc::SIGINT);
    assert_eq!(wait_exit(&mut d.child, Duration::from_secs(30)), Some(0));
}

/// What systemd would hear on NOTIFY_SOCKET: every datagram with when it arrived.
struct Notifications {
    path: PathBuf,
    seen: mpsc::Receiver<(Instant, String)>,
    log: Vec<(Instant, String)>,
}

impl Notifications {
    fn listen(path: PathBuf) -> Notifications {
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx.send((Instant::now(), msg)).is_err() {
                    break;
                }
            }
        });
        Notifications {
            path,
            seen,
            log: Vec::new(),
        }
    }

    /// Everything received so far.
    fn all(&mut self) -> &[(Instant, String)] {
        self.log.extend(self.seen.try_iter());
        &self.log
    }

    fn pings_between(&mut self, from: Instant, to: Instant) -> usize {
        self.all()
            .iter()
            .filter(|(t, m)| *t >= from && *t <= to && m.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    }
}

/// A configfs read the kernel never answers: the TPG's `enable` becomes a FIFO with no
/// writer, so opening it blocks (and cannot be cancelled) until the test writes to it.
#[test]
fn the_watchdog_is_pinged_only_while_no_step_is_past_its_deadline() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    std::fs::create_dir_all(env.path("state")).unwrap();
    let enable = env.path(&format!("configfs/iscsi/{IQN}/tpgt_1/enable"));
    std::fs::remove_file(&enable).unwrap();
    let c = std::ffi::CString::new(enable.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut notes = Notifications::listen(env.path("notify.sock"));
    let mut cmd = env.cmd(&["run"]);
    cmd.env("NOTIFY_SOCKET", &notes.path)
        .env("WATCHDOG_USEC", "400000") // a ping every 200 ms while all is well
        .env("SBPS_MARSHAL_LIO_TIMEOUT", "2");
    let d = Daemon::spawn(cmd);

    // Reading LIO hangs; within its deadline the watchdog is still pinged...
    let t0 = Instant::now();
    d.wait_for("stuck in observe LIO", Duration::from_secs(60));
    let stuck_seen = Instant::now();
    assert!(
        notes.pings_between(t0, stuck_seen) >= 2,
        "no pings while the scan was within its deadlines: {:?}",
        notes.all()
    );
    // ...past it the scan gives up, /healthz names the step, and the pings stop.
    d.wait_for("END SCAN", Duration::from_secs(10));
    let (code, body) = http_get(env.port, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("stuck in observe LIO"), "{body}");
    std::thread::sleep(Duration::from_millis(2500));
    let quiet_from = stuck_seen + Duration::from_millis(400);
    assert_eq!(
        notes.pings_between(quiet_from, Instant::now()),
        0,
        "pinged while stuck: {:?}",
        notes.all()
    );
    assert!(
        notes
            .all()
            .iter()
            .any(|(_, m)| m.starts_with("STATUS=") && m.contains("stuck in observe LIO")),
        "{:?}",
        notes.all()
    );

    // The read returns after all (a regular file from now on): the next scan takes the
    // job back and the pings resume.
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(&enable)
        .unwrap();
    std::fs::write(env.path("enable.new"), "0\n").unwrap();
    std::fs::rename(env.path("enable.new"), &enable).unwrap();
    fifo.write_all(b"0\n").unwrap();
    drop(fifo);
    let released = Instant::now();
    // The job finishes its other steps; then nothing runs (no "scanning:" step).
    let idle = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let (code, body) = http_get(env.port, "/healthz");
        code == 200 && !body.contains("scanning:")
    });
    assert!(idle, "{:?}", http_get(env.port, "/healthz"));
    d.signal(libc::SIGHUP);
    d.wait_for("has returned", Duration::from_secs(30));
    d.wait_for("END SCAN", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        notes.pings_between(released, Instant::now()) >= 1,
        "{:?}",
        notes.all()
    );
    let (code, body) = http_get(env.port, "/healthz");
    assert_eq!(code, 200, "{body}");
}
