//! What the s3fs mount shows for each candidate object key.
//!
//! The kernel will open `<mount>/<key>` read-write and create it if it is missing,
//! so the path must resolve, after symlinks, to a regular file *inside* the mount.
//! Keys with `..` or absolute components are refused by their letters; everything
//! else is resolved with `canonicalize` and checked against the canonical mount
//! root. On s3fs every `stat` is a network round trip, so keys are checked
//! concurrently (bounded) on the blocking thread pool.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt};

use super::MountEntry;
use crate::desired::lexically_inside;

/// Default number of `stat`s in flight.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Checks keys under one mount root.
#[derive(Debug, Clone)]
pub struct MountChecker {
    pub concurrency: usize,
}

impl Default for MountChecker {
    fn default() -> Self {
        MountChecker {
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl MountChecker {
    /// Stats every key under `root`. A root that cannot be resolved makes every key
    /// an [`MountEntry::Error`] (unknown), never `Missing`.
    pub async fn check_all(&self, root: &Path, keys: &[String]) -> BTreeMap<String, MountEntry> {
        if keys.is_empty() {
            return BTreeMap::new();
        }
        let root_owned = root.to_path_buf();
        let canon_root = match tokio::task::spawn_blocking(move || root_owned.canonicalize()).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let why = format!("mount root {}: {e}", root.display());
                tracing::warn!("{why}");
                return keys
                    .iter()
                    .map(|k| (k.clone(), MountEntry::Error(why.clone())))
                    .collect();
            }
            Err(e) => {
                let why = format!("mount root check did not complete: {e}");
                return keys
                    .iter()
                    .map(|k| (k.clone(), MountEntry::Error(why.clone())))
                    .collect();
            }
        };
        stream::iter(keys.iter().cloned())
            .map(|key| {
                let root = canon_root.clone();
                async move {
                    let k = key.clone();
                    let entry = tokio::task::spawn_blocking(move || check(&root, &k))
                        .await
                        .unwrap_or_else(|e| {
                            MountEntry::Error(format!("stat did not complete: {e}"))
                        });
                    (key, entry)
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await
    }
}

/// Checks one key under an already canonical root (blocking).
pub fn check(canon_root: &Path, key: &str) -> MountEntry {
    if let Err(detail) = lexically_inside(key) {
        return MountEntry::Outside(detail);
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
    match std::fs::metadata(&resolved) {
        Ok(m) if m.is_file() => MountEntry::File { size: m.len() },
        Ok(_) => MountEntry::NotRegular,
        Err(e) if e.kind() == ErrorKind::NotFound => MountEntry::Missing,
        Err(e) => MountEntry::Error(format!("{}: {e}", resolved.display())),
    }
}
