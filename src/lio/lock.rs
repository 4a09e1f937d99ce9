//! The lock files rtslib and targetcli take, so an admin's targetcli never
//! interleaves with the agent.
//!
//! targetcli holds `flock(<dir>/targetcli.lock)` for its whole run; rtslib takes
//! `flock(<dir>/rtslib_backstore.lock)` while it picks an HBA index. We take both, in
//! that order (the order they nest in targetcli, so no deadlock).
//!
//! `flock` locks belong to an open file description: two opens in one process
//! would block each other. `Locker` therefore hands out shared guards: while one
//! guard is alive, further `acquire`s (from parallel ops of one apply, or an
//! `execute` inside a caller's whole-apply guard) share it instead of re-locking.
//!
//! The wait has a deadline (LOCK_TIMEOUT): an interactive `targetcli` holds its lock for
//! as long as the administrator leaves it open, and a scan must not wait for that
//! forever. Past the deadline the error names the holder's PID (from `/proc/locks`).

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::LioError;

/// The lock files, in the order they are taken.
pub(crate) const LOCK_FILES: [&str; 2] = ["targetcli.lock", "rtslib_backstore.lock"];

#[derive(Debug)]
struct HeldFiles {
    // Closing the files releases the locks.
    _files: Vec<File>,
}

/// Proof that the locks are held; they are released when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct LockGuard {
    _held: Option<Arc<HeldFiles>>,
}

impl LockGuard {
    /// A guard that holds nothing (backends without lock files).
    pub(crate) fn none() -> LockGuard {
        LockGuard { _held: None }
    }
}

/// How long `Locker`s wait for the lock files unless told otherwise (LOCK_TIMEOUT).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Hands out [`LockGuard`]s for one lock directory.
#[derive(Debug)]
pub(crate) struct Locker {
    dir: Option<PathBuf>,
    timeout: Duration,
    current: Mutex<Weak<HeldFiles>>,
}

impl Locker {
    /// `None`: no locking (tests on a private fake). Waits at most `timeout` for the
    /// lock files.
    pub(crate) fn new(dir: Option<PathBuf>, timeout: Duration) -> Locker {
        Locker {
            dir,
            timeout,
            current: Mutex::new(Weak::new()),
        }
    }

    /// Takes (or shares) the locks, waiting up to the timeout while another process
    /// holds them.
    pub(crate) fn acquire(&self) -> Result<LockGuard, LioError> {
        let Some(dir) = &self.dir else {
            return Ok(LockGuard::none());
        };
        // Holding the mutex while blocking in flock keeps a second thread from
        // opening its own description and deadlocking against us.
        let mut cur = self
            .current
            .lock()
            .map_err(|_| LioError::Refused("lock state poisoned".into()))?;
        if let Some(h) = cur.upgrade() {
            return Ok(LockGuard { _held: Some(h) });
        }
        // One deadline for both files: the whole wait is bounded by the timeout.
        let deadline = Instant::now() + self.timeout;
        let mut files = Vec::with_capacity(LOCK_FILES.len());
        for name in LOCK_FILES {
            files.push(lock_file(&dir.join(name), deadline, self.timeout)?);
        }
        let held = Arc::new(HeldFiles { _files: files });
        *cur = Arc::downgrade(&held);
        Ok(LockGuard { _held: Some(held) })
    }
}

fn lock_file(path: &Path, deadline: Instant, timeout: Duration) -> Result<File, LioError> {
    let err = |source| LioError::Lock {
        path: path.to_path_buf(),
        source,
    };
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(err)?;
    let mut logged = false;
    // Polled rather than a blocking lock: a blocking call could not be given up at the
    // deadline. 100 ms apart: nothing else waits on these locks at a finer grain.
    // `try_lock` is `flock(LOCK_EX | LOCK_NB)` on Linux: the lock targetcli and rtslib take.
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(TryLockError::Error(e)) => return Err(err(e)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(LioError::LockHeld {
                path: path.to_path_buf(),
                secs: timeout.as_secs(),
                holder: holder_of(&f).map_or_else(
                    || "another process".to_string(),
                    |pid| format!("PID {pid}{}", command_of(pid)),
                ),
            });
        }
        if !logged {
            tracing::info!(path = %path.display(), "waiting for another LIO tool (targetcli?) to release its lock");
            logged = true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

/// The PID holding an exclusive `flock` on `f`, from `/proc/locks` (best effort: none
/// when the file cannot be read or the holder lives in another PID namespace).
fn holder_of(f: &File) -> Option<u32> {
    let meta = f.metadata().ok()?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, &id)
}

/// The holder of the `FLOCK` on device:inode `id` in a `/proc/locks` text (waiters,
/// the lines with `->`, are not holders).
fn holder_in(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            [_, "FLOCK", _, _, pid, dev, ..] if *dev == id => pid.parse().ok().filter(|p| *p != 0),
            _ => None,
        }
    })
}

/// ` (targetcli)`: the holder's command name, when it can be read.
fn command_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| format!(" ({})", c.trim()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another open file description of `path` cannot take the lock.
    fn is_locked_elsewhere(path: &Path) -> bool {
        let f = File::open(path).unwrap();
        match f.try_lock() {
            Ok(()) => false,
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(e)) => panic!("try_lock {}: {e}", path.display()),
        }
    }

    #[test]
    fn guards_share_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let l = Locker::new(Some(dir.path().to_path_buf()), DEFAULT_TIMEOUT);
        let g1 = l.acquire().unwrap();
        let g2 = l.acquire().unwrap(); // shared, does not deadlock
        for n in LOCK_FILES {
            assert!(is_locked_elsewhere(&dir.path().join(n)));
        }
        drop(g1);
        assert!(is_locked_elsewhere(&dir.path().join(LOCK_FILES[0])));
        drop(g2);
        for n in LOCK_FILES {
            assert!(!is_locked_elsewhere(&dir.path().join(n)));
        }
    }

    #[test]
    fn missing_dir_is_an_error() {
        let l = Locker::new(
            Some(PathBuf::from("/nonexistent/sbps-lock-dir")),
            DEFAULT_TIMEOUT,
        );
        assert!(matches!(l.acquire(), Err(LioError::Lock { .. })));
    }

    #[test]
    fn a_held_lock_is_given_up_at_the_deadline_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        // An administrator's targetcli: another open file description holding the lock.
        let admin = File::create(dir.path().join(LOCK_FILES[0])).unwrap();
        admin.lock().unwrap();
        let l = Locker::new(Some(dir.path().to_path_buf()), Duration::from_millis(300));
        let t = Instant::now();
        let e = l.acquire().unwrap_err();
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(e.kind(), "lock");
        let msg = e.to_string();
        assert!(msg.contains("targetcli.lock"), "{msg}");
        assert!(
            msg.contains(&format!("PID {}", std::process::id())),
            "{msg}"
        );
        drop(admin);
        drop(l.acquire().unwrap());
    }

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 30797 fe:00:5309291 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 659 fe:00:5309291 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 77 fe:00:42 0 EOF\n";
        assert_eq!(holder_in(locks, "fe:00:5309291"), Some(30797));
        assert_eq!(holder_in(locks, "fe:00:42"), None);
        assert_eq!(holder_in(locks, "fe:00:1"), None);
    }
}
