//! Every step of a scan has a deadline: a `systemctl` that never returns, a
//! `targetcli.lock` an administrator's open targetcli holds, and a configfs write the
//! kernel never answers each end the scan with a failure naming the step, within its
//! deadline; the hung write is left behind, named by the agent's progress (which stops
//! the watchdog's pings) and taken back once it returns.

use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sbps_marshal::agent::service::Systemctl;
use sbps_marshal::lio::fs::{Entry, Fs, Meta};
use sbps_marshal::lio::{ConfigfsSettings, ConfigfsTarget, Op, Target};
use sbps_marshal::report::FailureKind;

use crate::scans::{world_opts, Options};
use crate::support::DynFs;

fn secs(n: u64) -> String {
    n.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_systemctl_that_never_returns_fails_the_scan_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let stand_in = dir.path().join("systemctl");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 600\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut w = world_opts(Options {
        env: vec![
            ("TARGET_SERVICE".into(), "target.service".into()),
            ("COMMAND_TIMEOUT".into(), secs(1)),
        ],
        service: Some(Box::new(Systemctl::new(&stand_in))),
        ..Options::default()
    })
    .await;
    let before = w.target.observe().unwrap();

    let t = Instant::now();
    let r = w.agent.scan_and_publish().await;
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(!r.converged);
    let failure = r.failure.clone().map(|f| f.message).unwrap_or_default();
    failed_as(&w, &r, FailureKind::TargetService);
    assert!(
        failure.starts_with(
            "target service: `systemctl is-active target.service` did not return within 1 s"
        ),
        "{failure}"
    );
    assert!(r.problems().contains(&failure));
    // LIO is not touched while the service manager hangs (a restore may be running).
    assert!(r.outcomes.is_empty());
    assert_eq!(w.target.observe().unwrap(), before);
    // The stand-in was killed, not left behind; nothing is stuck.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !Path::new(&format!("/proc/{}", pid.trim())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .is_ok_and(|s| s.contains(") Z "))
    });
    assert!(gone, "systemctl stand-in {} still running", pid.trim());
    assert_eq!(w.agent.progress.stuck(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_targetcli_lock_fails_the_scan_naming_the_holder() {
    let mut w = world_opts(Options {
        env: vec![("LOCK_TIMEOUT".into(), secs(1))],
        target: Some(Box::new(|rig| {
            let s = ConfigfsSettings {
                lock_timeout: Duration::from_secs(1),
                ..rig.settings()
            };
            Arc::new(ConfigfsTarget::new(rig.fs.clone(), s)) as Arc<dyn Target>
        })),
        ..Options::default()
    })
    .await;
    // An administrator left targetcli open: it holds targetcli.lock.
    let lock = w.rig.locks.path().join("targetcli.lock");
    let admin = File::create(&lock).unwrap();
    admin.lock().unwrap(); // flock(LOCK_EX), as targetcli takes it
                           // The test looks at LIO without the locks (the agent's target waits for them).
    let look = ConfigfsTarget::new(
        w.rig.fs.clone(),
        ConfigfsSettings {
            lock_dir: None,
            ..w.rig.settings()
        },
    );
    let before = look.observe().unwrap();

    let t = Instant::now();
    let r = w.agent.scan_and_publish().await;
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(!r.converged && r.outcomes.is_empty());
    let failure = r.failure.clone().map(|f| f.message).unwrap_or_default();
    failed_as(&w, &r, FailureKind::Lio);
    for want in [
        "cannot take the LIO locks",
        lock.to_str().unwrap(),
        &format!("held by PID {}", std::process::id()),
        "for more than 1 s (LOCK_TIMEOUT)",
    ] {
        assert!(failure.contains(want), "{want:?} not in {failure}");
    }
    assert_eq!(look.observe().unwrap(), before);
    assert_eq!(w.agent.progress.stuck(), None);

    // The administrator quits targetcli: the next scan goes through.
    drop(admin);
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
}

/// Releases a [`Hanging`] write when dropped, so a failed assertion ends the test with
/// its message instead of hanging it: the runtime's shutdown waits for the blocking
/// thread that holds the write.
struct Release(Arc<(Mutex<(bool, usize)>, Condvar)>);

impl Drop for Release {
    fn drop(&mut self) {
        let (lock, cv) = &*self.0;
        lock.lock().unwrap_or_else(|p| p.into_inner()).0 = true;
        cv.notify_all();
    }
}

/// The fake configfs, except that a write to `hang` blocks until released: a configfs
/// write the kernel never answers (the blocking call cannot be cancelled).
struct Hanging {
    inner: DynFs,
    hang: PathBuf,
    /// (released, writes seen) and its condition variable.
    state: Arc<(Mutex<(bool, usize)>, Condvar)>,
}

impl Fs for Hanging {
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        self.inner.mkdir(p)
    }
    fn rmdir(&self, p: &Path) -> io::Result<()> {
        self.inner.rmdir(p)
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        self.inner.read(p)
    }
    fn write(&self, p: &Path, d: &str) -> io::Result<()> {
        if p == self.hang {
            let (lock, cv) = &*self.state;
            let mut g = lock.lock().unwrap();
            g.1 += 1;
            while !g.0 {
                g = cv.wait(g).unwrap();
            }
        }
        self.inner.write(p, d)
    }
    fn symlink(&self, t: &Path, l: &Path) -> io::Result<()> {
        self.inner.symlink(t, l)
    }
    fn readlink(&self, p: &Path) -> io::Result<PathBuf> {
        self.inner.readlink(p)
    }
    fn unlink(&self, p: &Path) -> io::Result<()> {
        self.inner.unlink(p)
    }
    fn read_dir(&self, p: &Path) -> io::Result<Vec<Entry>> {
        self.inner.read_dir(p)
    }
    fn metadata(&self, p: &Path) -> io::Result<Meta> {
        self.inner.metadata(p)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_configfs_write_is_reported_stuck_and_no_other_job_runs() {
    let state = Arc::new((Mutex::new((false, 0usize)), Condvar::new()));
    let shared = state.clone();
    // A failed assertion below releases the hung write as it unwinds, before the
    // runtime's shutdown waits for the blocking thread that holds it.
    let _release = Release(state.clone());
    let mut w = world_opts(Options {
        env: vec![("LIO_TIMEOUT".into(), secs(1))],
        target: Some(Box::new(move |rig| {
            let fs = Hanging {
                inner: rig.fs.clone(),
                hang: rig.tpg().join("enable"),
                state: shared,
            };
            Arc::new(rig.target_with(fs)) as Arc<dyn Target>
        })),
        ..Options::default()
    })
    .await;

    // The cold scan creates both images, then the write enabling the TPG never returns.
    let t = Instant::now();
    let r = w.agent.scan_and_publish().await;
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(!r.converged);
    let failure = r.failure.clone().map(|f| f.message).unwrap_or_default();
    failed_as(&w, &r, FailureKind::Stuck);
    assert!(
        failure.starts_with("LIO stuck in enable TPG for ")
            && failure.contains("(its deadline is 1 s)"),
        "{failure}"
    );
    let stuck = w
        .agent
        .progress
        .stuck()
        .expect("still stuck after the scan");
    assert_eq!(stuck.what, Op::EnableTpg.to_string());

    // The next scan runs no other job while that one is out: it reports the step at once.
    let t = Instant::now();
    let r = w.agent.scan_and_publish().await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let failure = r.failure.clone().map(|f| f.message).unwrap_or_default();
    assert!(failure.contains("stuck in enable TPG"), "{failure}");
    assert_eq!(state.0.lock().unwrap().1, 1, "a second write was tried");

    // The kernel answers after all: the job finishes, the next scan takes it back.
    {
        let (lock, cv) = &*state;
        lock.lock().unwrap().0 = true;
        cv.notify_all();
    }
    let released = Instant::now();
    while w.agent.progress.current().is_some() && released.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        w.agent.progress.current(),
        None,
        "the late job did not return"
    );
    assert_eq!(w.agent.progress.stuck(), None);
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    assert!(r.outcomes.is_empty(), "{:?}", r.outcomes);
    assert!(w.target.observe().unwrap().tpg.is_some_and(|t| t.enabled));
    // The ledger the late job wrote ahead is the agent's: both images keep their numbers.
    assert_eq!(w.agent.ledger().luns.len(), 2);
}

/// The scan's failure is of `kind`, and the metrics count it under that label.
fn failed_as(w: &crate::scans::World, r: &sbps_marshal::report::ScanReport, kind: FailureKind) {
    assert_eq!(
        r.failure.as_ref().map(|f| f.kind),
        Some(kind),
        "{:?}",
        r.failure
    );
    let metrics = w.agent.metrics.render();
    let line = format!(
        "sbps_marshal_scan_failures_total{{kind=\"{}\"}} 1",
        kind.label()
    );
    assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    let status = w
        .agent
        .status
        .read()
        .unwrap()
        .clone()
        .expect("a status document");
    assert_eq!(status.failure, Some(kind));
}
