//! What the s3fs mount shows for each candidate object key.
//!
//! The kernel will open `<mount>/<key>` read-write and create it if it is missing,
//! so the path must resolve to a regular file *inside* the mount, and to that key's own
//! file: one key, one file. Keys with `..` or absolute components, and keys with empty
//! or `.` segments, are refused by their letters; everything else is resolved with
//! `canonicalize` and must come out as exactly `<canonical mount root>/<key>`.
//!
//! "Exactly" means that symlinks are followed in the mount root (a root reached through
//! a symlink is fine: that is configuration) but not in the key: a key one of whose
//! components is a symlink, even to a file inside the mount, is refused
//! ([`MountEntry::Indirect`]). Such a key is a second name for another key's file, so
//! two identities would export one object's bytes (and an s3fs symlink object's size is
//! that of its target text, never the file's); and the kernel, which follows the link
//! when it opens the path, would open whatever the link points to by then. The tooling
//! that fills the bucket makes no symlinks, so nothing legitimate is lost.
//!
//! On s3fs every `stat` is a network round trip, so keys are checked concurrently: a
//! bounded number of workers on the blocking thread pool take the keys one after the
//! other (nothing is allocated per key but the answer), and a key whose components are
//! plain directories and a plain file is answered with one `lstat` per component; only
//! a key that meets a symlink or an unusual error is resolved with `canonicalize`.
//!
//! A hung FUSE mount blocks `stat` forever (the thread sits in the kernel and
//! cannot be cancelled). So every `stat` has a deadline: past it the key is
//! unknown, and once one has stalled the rest of the scan does not queue more
//! threads behind it: the remaining keys are unknown at once. Unknown never
//! removes a LUN, and the scan loop goes on.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::MountEntry;
use crate::paths::{lexically_inside, one_name};

/// Default number of `stat`s in flight.
pub(crate) const DEFAULT_CONCURRENCY: usize = 16;

/// Default deadline of one `stat` (s3fs answers from its cache or after one HEAD).
pub(crate) const DEFAULT_STAT_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks keys under one mount root.
#[derive(Debug, Clone)]
pub struct MountChecker {
    pub concurrency: usize,
    /// Deadline of each `stat` (and of resolving the root).
    pub timeout: Duration,
}

impl Default for MountChecker {
    fn default() -> Self {
        MountChecker {
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_STAT_TIMEOUT,
        }
    }
}

/// One [`MountChecker::check_keys`] run, shared by its workers and its watchdog.
struct Pool {
    root: PathBuf,
    keys: Vec<String>,
    check: fn(&Path, &str) -> MountEntry,
    /// The next key to take.
    next: AtomicUsize,
    answers: Vec<OnceLock<MountEntry>>,
    /// Per worker: when its key in flight was taken (microseconds since `epoch`, plus
    /// one; 0 while it has none), and which key that is.
    since: Vec<AtomicU64>,
    current: Vec<AtomicUsize>,
    epoch: Instant,
    stalled: AtomicBool,
}

/// Workers that are done and have let go of their [`Pool`] (so the last one's keys
/// can be moved out of it, not copied), and the watchdog's wake-up.
#[derive(Default)]
struct Done {
    workers: AtomicUsize,
    wake: tokio::sync::Notify,
}

impl Pool {
    fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    /// One worker: takes keys until there are none left or the mount stalled.
    fn work(&self, w: usize) {
        while !self.stalled.load(Ordering::Relaxed) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(key) = self.keys.get(i) else { break };
            self.current[w].store(i, Ordering::Relaxed);
            self.since[w].store(self.micros(), Ordering::Release);
            let entry = std::panic::catch_unwind(|| (self.check)(&self.root, key))
                .unwrap_or_else(|_| MountEntry::Error("stat did not complete: it panicked".into()));
            let _ = self.answers[i].set(entry);
            self.since[w].store(0, Ordering::Release);
        }
    }

    /// Workers whose key in flight is older than `timeout`.
    fn stuck(&self, timeout: Duration) -> usize {
        let now = self.micros();
        let limit = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        self.since
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .filter(|&t| t != 0 && now.saturating_sub(t) > limit)
            .count()
    }
}

impl MountChecker {
    /// Stats every key under `root`. A root that cannot be resolved makes every key
    /// an [`MountEntry::Error`] (unknown), never `Missing`; so does a stalled mount.
    pub async fn check_all(&self, root: &Path, keys: &[String]) -> BTreeMap<String, MountEntry> {
        self.check_keys(root, keys.to_vec(), check).await
    }

    /// [`check_all`](Self::check_all) with the blocking per-key check as a
    /// parameter, so a stalled filesystem can be played in tests.
    pub async fn check_all_with(
        &self,
        root: &Path,
        keys: &[String],
        check: fn(&Path, &str) -> MountEntry,
    ) -> BTreeMap<String, MountEntry> {
        self.check_keys(root, keys.to_vec(), check).await
    }

    /// [`check_all_with`](Self::check_all_with), taking the keys.
    pub(crate) async fn check_keys(
        &self,
        root: &Path,
        keys: Vec<String>,
        check: fn(&Path, &str) -> MountEntry,
    ) -> BTreeMap<String, MountEntry> {
        if keys.is_empty() {
            return BTreeMap::new();
        }
        let all = |keys: Vec<String>, why: String| -> BTreeMap<String, MountEntry> {
            keys.into_iter()
                .map(|k| (k, MountEntry::Error(why.clone())))
                .collect()
        };
        let root_owned = root.to_path_buf();
        let resolving = tokio::task::spawn_blocking(move || root_owned.canonicalize());
        let canon_root = match tokio::time::timeout(self.timeout, resolving).await {
            Err(_) => {
                let why = format!(
                    "mount root {} did not answer within {}s (a hung mount?)",
                    root.display(),
                    self.timeout.as_secs_f64()
                );
                tracing::warn!("{why}");
                return all(keys, why);
            }
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(e))) => {
                let why = format!("mount root {}: {e}", root.display());
                tracing::warn!("{why}");
                return all(keys, why);
            }
            Ok(Err(e)) => return all(keys, format!("mount root check did not complete: {e}")),
        };
        let workers = self.concurrency.clamp(1, keys.len());
        let pool = Arc::new(Pool {
            root: canon_root,
            answers: keys.iter().map(|_| OnceLock::new()).collect(),
            keys,
            check,
            next: AtomicUsize::new(0),
            since: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            current: (0..workers).map(|_| AtomicUsize::new(usize::MAX)).collect(),
            epoch: Instant::now(),
            stalled: AtomicBool::new(false),
        });
        let done = Arc::new(Done::default());
        for w in 0..workers {
            let pool = pool.clone();
            let done = done.clone();
            // A worker stuck in a hung FUSE call is left behind: it can only finish.
            drop(tokio::task::spawn_blocking(move || {
                pool.work(w);
                drop(pool);
                done.workers.fetch_add(1, Ordering::AcqRel);
                done.wake.notify_one();
            }));
        }
        // Woken by each worker that ends; ticks to notice one stuck past the deadline.
        let tick = (self.timeout / 8).max(Duration::from_millis(10));
        loop {
            let stuck = pool.stuck(self.timeout);
            if stuck > 0 {
                pool.stalled.store(true, Ordering::Relaxed);
            }
            if done.workers.load(Ordering::Acquire) + stuck >= workers {
                break;
            }
            let _ = tokio::time::timeout(tick, done.wake.notified()).await;
        }
        let stalled = pool.stalled.load(Ordering::Relaxed);
        if stalled {
            tracing::warn!(
                root = %pool.root.display(),
                timeout_s = self.timeout.as_secs_f64(),
                "the mount stalled: keys not checked are unknown this scan"
            );
        }
        let in_flight: Vec<usize> = (0..workers)
            .filter(|&w| pool.since[w].load(Ordering::Acquire) != 0)
            .map(|w| pool.current[w].load(Ordering::Relaxed))
            .collect();
        let secs = self.timeout.as_secs_f64();
        let entry = |i: usize, answer: Option<MountEntry>| match answer {
            Some(e) => e,
            None if in_flight.contains(&i) => MountEntry::Error(format!(
                "stat did not answer within {secs}s (a hung mount?)"
            )),
            None => MountEntry::Error(format!(
                "not checked: the mount stalled on an earlier stat (> {secs}s)"
            )),
        };
        // The keys and answers are moved out when every worker has let go of the pool
        // (thousands of keys are not copied); a worker left behind in a hung call still
        // holds it, and then they are copied.
        let (keys, answers): (Vec<String>, Vec<Option<MountEntry>>) = match Arc::try_unwrap(pool) {
            Ok(pool) => (
                pool.keys,
                pool.answers.into_iter().map(OnceLock::into_inner).collect(),
            ),
            Err(pool) => (
                pool.keys.clone(),
                pool.answers.iter().map(|a| a.get().cloned()).collect(),
            ),
        };
        keys.into_iter()
            .zip(answers)
            .enumerate()
            .map(|(i, (key, answer))| (key, entry(i, answer)))
            .collect()
    }
}

/// Checks one key under an already canonical root (blocking).
pub fn check(canon_root: &Path, key: &str) -> MountEntry {
    if let Err(detail) = lexically_inside(key) {
        return MountEntry::Outside(detail);
    }
    if let Err(detail) = one_name(key) {
        return MountEntry::Indirect(detail);
    }
    let path: PathBuf = canon_root.join(key);
    plain(key, &path).unwrap_or_else(|| resolved(canon_root, &path))
}

/// The answer for `path` by resolving it whole (`canonicalize`, then `stat`).
fn resolved(canon_root: &Path, path: &Path) -> MountEntry {
    let resolved = match path.canonicalize() {
        Ok(p) => p,
        // ENOTDIR: a path component is a file; the object is not there either.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return MountEntry::Missing
        }
        Err(e) => return MountEntry::Error(format!("{}: {e}", path.display())),
    };
    if !resolved.starts_with(canon_root) {
        return MountEntry::Outside(format!(
            "{} resolves to {}, outside {}",
            path.display(),
            resolved.display(),
            canon_root.display()
        ));
    }
    if resolved != path {
        return MountEntry::Indirect(format!(
            "{} resolves to {} through a symlink: a key must name its own file",
            path.display(),
            resolved.display()
        ));
    }
    match std::fs::metadata(&resolved) {
        Ok(m) if m.is_file() => MountEntry::File { size: m.len() },
        Ok(_) => MountEntry::NotRegular,
        Err(e) if e.kind() == ErrorKind::NotFound => MountEntry::Missing,
        Err(e) => MountEntry::Error(format!("{}: {e}", resolved.display())),
    }
}

/// The answer for a key none of whose components is a symlink, from one `lstat` per
/// component below the root: then `canonicalize` would give back `path` itself, and
/// `stat` what `lstat` says. `None` (a symlink met, or an error other than "not there")
/// leaves the key to the full resolution, which words every other case.
fn plain(key: &str, path: &Path) -> Option<MountEntry> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let base = bytes.len().checked_sub(key.len())?;
    // Each directory of the key, outermost first: `<root>/a`, `<root>/a/b`, …
    let dirs = key.match_indices('/').map(|(i, _)| &bytes[..base + i]);
    for d in dirs {
        match std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(d)) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return None,
            // A file where a directory should be: ENOTDIR for `canonicalize` too.
            Ok(_) => return Some(MountEntry::Missing),
            Err(e) if e.kind() == ErrorKind::NotFound => return Some(MountEntry::Missing),
            Err(_) => return None,
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => None,
        Ok(m) if m.is_file() => Some(MountEntry::File { size: m.len() }),
        Ok(_) => Some(MountEntry::NotRegular),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            Some(MountEntry::Missing)
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short way answers exactly as the full resolution wherever it answers.
    #[test]
    fn plain_keys_answer_as_the_full_resolution_does() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), [0u8; 7]).unwrap();
        std::fs::write(root.join("top"), [0u8; 3]).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/l")).unwrap();
        std::os::unix::fs::symlink("top", root.join("lt")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        let keys = [
            "a/b/f",
            "top",
            "a",
            "a/b",
            "a/l/f",
            "a/l",
            "lt",
            "dangling",
            "top/x",
            "a/b/f/x",
            "missing",
            "a/missing/f",
            "dangling/x",
        ];
        for key in keys {
            let path = root.join(key);
            let full = resolved(&root, &path);
            assert_eq!(check(&root, key), full, "{key}");
            if let Some(short) = plain(key, &path) {
                assert_eq!(short, full, "{key}");
            }
        }
        assert_eq!(
            plain("a/b/f", &root.join("a/b/f")),
            Some(MountEntry::File { size: 7 })
        );
        assert_eq!(plain("a/l/f", &root.join("a/l/f")), None);
    }
}
