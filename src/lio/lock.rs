//! The lock files rtslib and targetcli take, so an admin's targetcli never
//! interleaves with the agent.
//!
//! targetcli holds `flock(<dir>/targetcli.lock)` for its whole run; rtslib takes
//! `flock(<dir>/rtslib_backstore.lock)` while it picks an HBA index. We take both, in
//! that order (the order they nest in targetcli, so no deadlock).
//!
//! `flock` locks belong to an open file description: two opens in one process
//! would block each other. [`Locker`] therefore hands out shared guards: while one
//! guard is alive, further `acquire`s (from parallel ops of one apply, or an
//! `execute` inside a caller's whole-apply guard) share it instead of re-locking.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::LioError;

/// The lock files, in the order they are taken.
pub const LOCK_FILES: [&str; 2] = ["targetcli.lock", "rtslib_backstore.lock"];

#[derive(Debug)]
struct Held {
    // Closing the files releases the locks.
    _files: Vec<File>,
}

/// Proof that the locks are held; they are released when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct LockGuard {
    _held: Option<Arc<Held>>,
}

impl LockGuard {
    /// A guard that holds nothing (backends without lock files).
    pub fn none() -> LockGuard {
        LockGuard { _held: None }
    }
}

/// Hands out [`LockGuard`]s for one lock directory.
#[derive(Debug)]
pub struct Locker {
    dir: Option<PathBuf>,
    current: Mutex<Weak<Held>>,
}

impl Locker {
    /// `None`: no locking (tests on a private fake).
    pub fn new(dir: Option<PathBuf>) -> Locker {
        Locker {
            dir,
            current: Mutex::new(Weak::new()),
        }
    }

    /// Takes (or shares) the locks, blocking while another process holds them.
    pub fn acquire(&self) -> Result<LockGuard, LioError> {
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
        let mut files = Vec::with_capacity(LOCK_FILES.len());
        for name in LOCK_FILES {
            files.push(lock_file(&dir.join(name))?);
        }
        let held = Arc::new(Held { _files: files });
        *cur = Arc::downgrade(&held);
        Ok(LockGuard { _held: Some(held) })
    }
}

fn lock_file(path: &Path) -> Result<File, LioError> {
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
    let fd = f.as_raw_fd();
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(f);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(err(e));
    }
    tracing::info!(path = %path.display(), "waiting for another LIO tool (targetcli?) to release its lock");
    loop {
        // SAFETY: as above.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(err(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_locked_elsewhere(path: &Path) -> bool {
        let f = File::open(path).unwrap();
        // SAFETY: flock on our own descriptor.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        r != 0
    }

    #[test]
    fn guards_share_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let l = Locker::new(Some(dir.path().to_path_buf()));
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
        let l = Locker::new(Some(PathBuf::from("/nonexistent/sbps-lock-dir")));
        assert!(matches!(l.acquire(), Err(LioError::Lock { .. })));
    }
}
