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
//! On s3fs every `stat` is a network round trip, so keys are checked
//! concurrently (bounded) on the blocking thread pool.
//!
//! A hung FUSE mount blocks `stat` forever (the thread sits in the kernel and
//! cannot be cancelled). So every `stat` has a deadline: past it the key is
//! unknown, and once one has stalled the rest of the scan does not queue more
//! threads behind it: the remaining keys are unknown at once. Unknown never
//! removes a LUN, and the scan loop goes on.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use super::MountEntry;
use crate::paths::{lexically_inside, one_name};

/// Default number of `stat`s in flight.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Default deadline of one `stat` (s3fs answers from its cache or after one HEAD).
pub const DEFAULT_STAT_TIMEOUT: Duration = Duration::from_secs(30);

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

impl MountChecker {
    /// Stats every key under `root`. A root that cannot be resolved makes every key
    /// an [`MountEntry::Error`] (unknown), never `Missing`; so does a stalled mount.
    pub async fn check_all(&self, root: &Path, keys: &[String]) -> BTreeMap<String, MountEntry> {
        self.check_all_with(root, keys, check).await
    }

    /// [`check_all`](Self::check_all) with the blocking per-key check as a
    /// parameter, so a stalled filesystem can be played in tests.
    pub async fn check_all_with(
        &self,
        root: &Path,
        keys: &[String],
        check: fn(&Path, &str) -> MountEntry,
    ) -> BTreeMap<String, MountEntry> {
        if keys.is_empty() {
            return BTreeMap::new();
        }
        let all = |why: String| -> BTreeMap<String, MountEntry> {
            keys.iter()
                .map(|k| (k.clone(), MountEntry::Error(why.clone())))
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
                return all(why);
            }
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(e))) => {
                let why = format!("mount root {}: {e}", root.display());
                tracing::warn!("{why}");
                return keys
                    .iter()
                    .map(|k| (k.clone(), MountEntry::Error(why.clone())))
                    .collect();
            }
            Ok(Err(e)) => return all(format!("mount root check did not complete: {e}")),
        };
        let stalled = Arc::new(AtomicBool::new(false));
        let timeout = self.timeout;
        let entries: BTreeMap<String, MountEntry> = stream::iter(keys.iter().cloned())
            .map(|key| {
                let root = canon_root.clone();
                let stalled = stalled.clone();
                async move {
                    if stalled.load(Ordering::Relaxed) {
                        let why = format!(
                            "not checked: the mount stalled on an earlier stat (> {}s)",
                            timeout.as_secs_f64()
                        );
                        return (key, MountEntry::Error(why));
                    }
                    let k = key.clone();
                    let stat = tokio::task::spawn_blocking(move || check(&root, &k));
                    let entry = match tokio::time::timeout(timeout, stat).await {
                        Ok(Ok(e)) => e,
                        Ok(Err(e)) => MountEntry::Error(format!("stat did not complete: {e}")),
                        Err(_) => {
                            stalled.store(true, Ordering::Relaxed);
                            MountEntry::Error(format!(
                                "stat did not answer within {}s (a hung mount?)",
                                timeout.as_secs_f64()
                            ))
                        }
                    };
                    (key, entry)
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        if stalled.load(Ordering::Relaxed) {
            tracing::warn!(
                root = %canon_root.display(),
                timeout_s = timeout.as_secs_f64(),
                "the mount stalled: keys not checked are unknown this scan"
            );
        }
        entries
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
