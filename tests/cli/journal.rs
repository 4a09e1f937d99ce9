//! The agent's log under systemd: the real binary, with stderr being "the journal
//! stream" (JOURNAL_STREAM names its device and inode, as systemd sets it), talks
//! journald's native protocol to `/run/systemd/journal/socket`. A journald double
//! (a datagram socket that parses the native protocol) is bound there inside a
//! private mount namespace of the child only, so the host's journal (if any) is
//! never touched. Needs root (a mount namespace); skipped with a message otherwise.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;

type Entry = BTreeMap<String, String>;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: a private mount namespace needs root");
    }
    root
}

/// Parses one datagram of journald's native protocol: `NAME=value\n`, or
/// `NAME\n<u64 LE length><bytes>\n` for values that may hold newlines.
fn parse(mut d: &[u8]) -> Entry {
    let mut e = Entry::new();
    while !d.is_empty() {
        let end = d.iter().position(|&b| b == b'\n' || b == b'=').unwrap();
        let name = String::from_utf8(d[..end].to_vec()).unwrap();
        if d[end] == b'=' {
            let rest = &d[end + 1..];
            let nl = rest.iter().position(|&b| b == b'\n').unwrap();
            e.insert(name, String::from_utf8_lossy(&rest[..nl]).into_owned());
            d = &rest[nl + 1..];
        } else {
            let rest = &d[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            e.insert(
                name,
                String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
            );
            assert_eq!(
                rest[8 + len],
                b'\n',
                "a length-encoded value ends with a newline"
            );
            d = &rest[8 + len + 1..];
        }
    }
    e
}

/// A scratch layout: a configfs-shaped tree (TPG disabled, one empty LUN directory
/// the agent cleans up), the journald double's directory, the child's stderr file.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        support::scratch_node(dir.path(), &["lun_7"], &["journal", "state", "run"]);
        Env { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The journald double, bound where the child will find it, reading on its own
    /// thread as journald does (a datagram socket queues only a few datagrams; a
    /// sender beyond that blocks).
    fn journald(&self) -> Journald {
        let s = UnixDatagram::bind(self.path("journal/socket")).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match s.recv(&mut buf) {
                    Ok(0) => {}
                    Ok(n) => {
                        if tx.send(parse(&buf[..n])).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        });
        Journald { rx }
    }

    /// Runs the binary with `args`, its stderr a file whose device:inode is in
    /// JOURNAL_STREAM (or `stream` when given), inside a mount namespace where
    /// `/run` is empty but for `/run/systemd/journal` = our `journal/` directory.
    /// Returns the exit code and what it wrote to stderr.
    fn run(&self, args: &[&str], env: &[(&str, &str)], stream: Option<&str>) -> (i32, String) {
        let stderr_path = self.path("stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let meta = stderr.metadata().unwrap();
        let journal_stream = stream
            .map(String::from)
            .unwrap_or_else(|| format!("{}:{}", meta.dev(), meta.ino()));
        let d = |rel: &str| self.path(rel).display().to_string();
        // Labelled gating with an unreadable kubeconfig: the label is unknown (a warning).
        let overrides = [
            ("NODE_LABEL", "iscsi=sbps".to_string()),
            ("KUBECONFIG", d("no-kubeconfig")),
        ];
        let mut c = support::agent(self.dir.path(), args, &overrides);
        c.env("JOURNAL_STREAM", journal_stream)
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            c.env(k, v);
        }
        in_private_journal_namespace(&mut c, &self.path("journal"));
        let status = c.status().unwrap();
        (
            status.code().unwrap_or(-1),
            std::fs::read_to_string(&stderr_path).unwrap(),
        )
    }
}

/// Makes the child enter its own mount namespace with a fresh `/run` holding only
/// `/run/systemd/journal`, bound to `journal_dir`.
fn in_private_journal_namespace(c: &mut Command, journal_dir: &Path) {
    let cs = |s: &[u8]| CString::new(s).unwrap();
    let (root, run, systemd, journal, tmpfs, mode) = (
        cs(b"/"),
        cs(b"/run"),
        cs(b"/run/systemd"),
        cs(b"/run/systemd/journal"),
        cs(b"tmpfs"),
        cs(b"mode=0755"),
    );
    let source = cs(journal_dir.as_os_str().as_bytes());
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: only async-signal-safe syscalls between fork and exec, on strings
    // prepared before the fork.
    unsafe {
        c.pre_exec(move || {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                run.as_ptr(),
                tmpfs.as_ptr(),
                0,
                mode.as_ptr().cast(),
            ))?;
            check(libc::mkdir(systemd.as_ptr(), 0o755))?;
            check(libc::mkdir(journal.as_ptr(), 0o755))?;
            check(libc::mount(
                source.as_ptr(),
                journal.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))
        });
    }
}

/// What the journald double received.
struct Journald {
    rx: std::sync::mpsc::Receiver<Entry>,
}

/// Every non-empty entry the double received so far (the child has exited).
fn drain(j: &Journald) -> Vec<Entry> {
    let mut out = Vec::new();
    while let Ok(e) = j.rx.recv_timeout(Duration::from_millis(300)) {
        out.push(e);
    }
    out
}

fn find(entries: &[Entry], pred: impl Fn(&Entry) -> bool) -> Vec<&Entry> {
    entries.iter().filter(|e| pred(e)).collect()
}

fn msg(e: &Entry) -> &str {
    e.get("MESSAGE").map_or("", String::as_str)
}

#[test]
fn warnings_and_errors_reach_the_journal_with_priorities_and_fields() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let journald = env.journald();
    let (code, stderr) = env.run(&["scan", "--once"], &[], None);
    let entries = drain(&journald);
    let dump = format!("{entries:#?}");
    assert_eq!(code, 1, "sources are down: not converged\n{dump}");
    assert_eq!(stderr, "", "nothing doubled on the stream");
    assert!(entries.len() > 5, "{dump}");
    for e in &entries {
        assert_eq!(
            e.get("SYSLOG_IDENTIFIER").map(String::as_str),
            Some("sbps-marshal"),
            "{e:?}"
        );
        assert!(e.contains_key("PRIORITY"), "{e:?}");
    }
    let prio = |e: &Entry| e["PRIORITY"].clone();

    // The version and revision, at start.
    let start = find(&entries, |e| msg(e).contains("starting"));
    assert_eq!(start.len(), 1, "{dump}");
    assert_eq!(prio(start[0]), "6");
    assert_eq!(start[0]["VERSION"], env!("CARGO_PKG_VERSION"));
    assert_eq!(start[0]["REVISION"], sbps_marshal::telemetry::REVISION);
    assert!(
        start[0]["ALLOCATOR"].starts_with("jemalloc narenas=1 dirty_decay_ms=0"),
        "{dump}"
    );

    // The runbooks' markers, unchanged: the message is exactly the marker (no
    // timestamp of our own; journald keeps the time).
    for marker in ["START SCAN", "END SCAN"] {
        let m = find(&entries, |e| msg(e) == marker);
        assert_eq!(m.len(), 1, "{marker}: {dump}");
        assert_eq!(prio(m[0]), "6");
    }

    // `journalctl -p warning` finds the warning (4) and the error (3).
    let label = find(&entries, |e| {
        msg(e).starts_with("node label unknown, target portal group")
    });
    assert_eq!(label.len(), 1, "{dump}");
    assert_eq!(prio(label[0]), "4");
    let s3 = find(&entries, |e| {
        e.get("SOURCE").map(String::as_str) == Some("s3")
    });
    assert!(!s3.is_empty(), "{dump}");
    assert!(s3.iter().all(|e| prio(e) == "3"), "{dump}");

    // An operation's fields are journal fields: the empty LUN directory removed.
    let op = find(&entries, |e| {
        e.get("OP").map(String::as_str) == Some("unmap-lun")
    });
    assert_eq!(op.len(), 1, "{dump}");
    assert_eq!(op[0]["LUN"], "7");
    assert_eq!(prio(op[0]), "6");
    assert!(op[0].contains_key("MS"), "{dump}");
}

#[test]
fn a_fatal_error_is_one_journal_entry() {
    if !is_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let journald = env.journald();
    std::fs::set_permissions(env.path("state"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, stderr) = env.run(&["scan", "--once"], &[], None);
    let entries = drain(&journald);
    assert_eq!(code, 1);
    assert_eq!(stderr, "");
    let fatal = find(&entries, |e| msg(e).contains("writable by others"));
    assert_eq!(fatal.len(), 1, "{entries:#?}");
    assert_eq!(fatal[0]["PRIORITY"], "3");

    // A bad setting: exit 2, one error entry naming the key.
    let (code, stderr) = env.run(&["config"], &[("SBPS_MARSHAL_SCAN_FREQUENCY", "abc")], None);
    let entries = drain(&journald);
    assert_eq!(code, 2);
    assert_eq!(stderr, "");
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["PRIORITY"], "3");
    assert!(
        msg(&entries[0]).contains("SBPS_MARSHAL_SCAN_FREQUENCY"),
        "{entries:#?}"
    );
}

/// A stderr that is not the stream JOURNAL_STREAM names (a unit's `2>file`, a child
/// that inherited the variable) gets plain lines; journald gets nothing.
#[test]
fn another_stderr_gets_plain_lines() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let journald = env.journald();
    let (code, stderr) = env.run(&["scan", "--once"], &[], Some("1:2"));
    assert_eq!(code, 1);
    assert!(drain(&journald).is_empty());
    let start = stderr.lines().find(|l| l.ends_with("START SCAN")).unwrap();
    assert!(start.contains(" INFO "), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains("node label unknown")),
        "{stderr}"
    );
}

/// Under systemd without a reachable native socket, each line on the stream carries
/// its priority as a `<N>` prefix, which journald's stream reader takes.
#[test]
fn without_the_native_socket_the_stream_carries_priority_prefixes() {
    if !is_root() {
        return;
    }
    let env = Env::new(); // no socket bound in journal/
    let (code, stderr) = env.run(&["scan", "--once"], &[], None);
    assert_eq!(code, 1);
    assert!(stderr.lines().any(|l| l == "<6>START SCAN"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("<4>") && l.contains("node label unknown")),
        "{stderr}"
    );
    assert!(stderr.lines().all(|l| l.starts_with('<')), "{stderr}");
    // and says once why the native socket is not used
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("<4>journald's socket cannot be reached"))
            .count(),
        1,
        "{stderr}"
    );
}
