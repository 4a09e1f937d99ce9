//! The LIO iSCSI target: the model of its objects and the backends that change it.
//!
//! A backend implements [`Target`]: `observe()` reads the kernel's truth,
//! `execute()` performs one [`Op`]. [`apply`] runs a plan's ops phase by phase,
//! independent ops in parallel, and never lets one failure stop the others, except
//! that the TPG is not enabled when anything before it failed.

#![warn(unreachable_pub)]

pub mod attr;
pub mod configfs;
pub mod fs;
pub(crate) mod layout;
pub mod lock;
pub mod saveconfig;
pub(crate) mod saved;
pub(crate) mod savefile;
pub(crate) mod seen;
pub mod targetcli;

use std::io;
use std::path::{Path, PathBuf};

pub use configfs::{ConfigfsSettings, ConfigfsTarget};
pub use lock::LockGuard;
pub(crate) use model::Phase;
pub use model::{Actual, Backstore, BackstoreRef, Lun, Op, Tpg};
/// The model of LIO's objects and the operations on them: pure, in [`sbps_core::lio`].
pub(crate) use sbps_core::lio as model;

/// Errors of the LIO backends, each naming what it was doing and where. Kernel
/// errnos that mean something specific for LIO get their own variant, so callers
/// (and the contract suite) can tell "still linked" from "already there".
#[derive(Debug, thiserror::Error)]
pub enum LioError {
    /// Any other I/O error.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// EEXIST: a backstore of that name, a LUN, a link or an enable already there.
    #[error("{what} {path}: already exists")]
    Exists { what: &'static str, path: PathBuf },
    /// ENOENT: the object (or the directory of the backing file) does not exist.
    #[error("{what} {path}: does not exist")]
    NotFound { what: &'static str, path: PathBuf },
    /// EBUSY: the backstore is still linked by a LUN (of any target).
    #[error("{what} {path}: busy (the backstore is still exported through a LUN)")]
    Busy { what: &'static str, path: PathBuf },
    /// ENOTEMPTY: a LUN directory still holds its link, an HBA still holds devices.
    #[error("{what} {path}: not empty")]
    NotEmpty { what: &'static str, path: PathBuf },
    /// ENODEV: linking a backstore the kernel has not enabled.
    #[error("{what} {path}: the backstore is not enabled")]
    NotEnabled { what: &'static str, path: PathBuf },
    /// EROFS: the backing file lies on a read-only filesystem (LIO opens it O_RDWR).
    #[error("{what} {path}: read-only filesystem (LIO opens backing files read-write)")]
    ReadOnly { what: &'static str, path: PathBuf },
    /// EINVAL (and EOVERFLOW, EFAULT): the kernel refused the value; see dmesg.
    #[error("{what} {path}: invalid ({source}); the kernel logs the reason")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// EACCES/EPERM.
    #[error("{what} {path}: permission denied ({source})")]
    Denied {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The backing file failed the check made before handing it to the kernel.
    #[error("backing file {path}: {reason}")]
    BackingFile { path: PathBuf, reason: String },
    /// Taking the targetcli/rtslib lock files failed.
    #[error("lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    /// Another process held a lock file past LOCK_TIMEOUT.
    #[error("lock {path}: held by {holder} for more than {secs} s (LOCK_TIMEOUT); an open targetcli session holds it until it exits")]
    LockHeld {
        path: PathBuf,
        secs: u64,
        holder: String,
    },
    /// A targetcli command failed.
    #[error("targetcli {command:?} failed ({status}): {stderr}")]
    Targetcli {
        command: String,
        status: String,
        stderr: String,
    },
    /// saveconfig.json could not be read, parsed or written.
    #[error("saveconfig {path}: {detail}")]
    Saveconfig { path: PathBuf, detail: String },
    #[error("{0}")]
    Refused(String),
}

impl LioError {
    /// Maps an `io::Error` of a configfs call to the variant for its errno.
    pub fn from_io(what: &'static str, path: &Path, e: io::Error) -> LioError {
        let path = path.to_path_buf();
        match e.raw_os_error() {
            Some(libc::EEXIST) => LioError::Exists { what, path },
            Some(libc::ENOENT) => LioError::NotFound { what, path },
            Some(libc::EBUSY) => LioError::Busy { what, path },
            Some(libc::ENOTEMPTY) => LioError::NotEmpty { what, path },
            Some(libc::ENODEV) => LioError::NotEnabled { what, path },
            Some(libc::EROFS) => LioError::ReadOnly { what, path },
            Some(libc::EINVAL | libc::EOVERFLOW | libc::EFAULT | libc::ERANGE) => {
                LioError::Invalid {
                    what,
                    path,
                    source: e,
                }
            }
            Some(libc::EACCES | libc::EPERM) => LioError::Denied {
                what,
                path,
                source: e,
            },
            _ => LioError::Io {
                what,
                path,
                source: e,
            },
        }
    }

    /// The errno-like name of the error, for tests and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            LioError::Io { .. } => "io",
            LioError::Exists { .. } => "exists",
            LioError::NotFound { .. } => "not-found",
            LioError::Busy { .. } => "busy",
            LioError::NotEmpty { .. } => "not-empty",
            LioError::NotEnabled { .. } => "not-enabled",
            LioError::ReadOnly { .. } => "read-only",
            LioError::Invalid { .. } => "invalid",
            LioError::Denied { .. } => "denied",
            LioError::BackingFile { .. } => "backing-file",
            LioError::Lock { .. } | LioError::LockHeld { .. } => "lock",
            LioError::Targetcli { .. } => "targetcli",
            LioError::Saveconfig { .. } => "saveconfig",
            LioError::Refused(_) => "refused",
        }
    }
}

/// One LIO backend.
pub trait Target: Send + Sync {
    /// Reads the current state from the kernel (never from saveconfig.json).
    fn observe(&self) -> Result<Actual, LioError>;
    /// Performs one operation.
    fn execute(&self, op: &Op) -> Result<(), LioError>;
    /// The state after `applied` (each op run since the observation `before`, in
    /// order, with its result). A backend that can tell what they changed reads only
    /// that; by default everything is observed again.
    fn observe_after(&self, before: Actual, applied: &[OpResult]) -> Result<Actual, LioError> {
        let _ = (before, applied);
        self.observe()
    }
    /// Takes the locks that keep an admin's targetcli from interleaving with us, for as
    /// long as the guard lives. Hold one around a whole [`apply`] (and the observe
    /// before it): each `execute` otherwise takes and releases them per op. Backends
    /// without such locks return a no-op guard.
    fn lock(&self) -> Result<LockGuard, LioError> {
        Ok(LockGuard::none())
    }
    /// Writes the live state to `path` in rtslib's saveconfig.json format (what
    /// `targetctl restore` reads at boot), only when it changed. Returns whether it wrote.
    /// The state is the one this backend last observed (observed again when it changed
    /// LIO itself since): a scan saves right after observing, and the next scan's
    /// observation brings in what changed behind its back in between.
    fn save_config(&self, path: &std::path::Path) -> Result<bool, LioError>;
}

/// The result of one op.
#[derive(Debug)]
pub struct OpResult {
    pub op: Op,
    pub result: Result<(), LioError>,
    pub elapsed: std::time::Duration,
}

/// Runs `ops` (in phase order) against `target`: the ops of one phase in parallel
/// with at most `parallelism` at once, phases one after another. A failed op does
/// not stop the others, except what depends on it: a LUN is not mapped to a backstore
/// whose create failed (whatever answers to that name then, if anything, is not what
/// was checked), and `EnableTpg` is skipped when any earlier op failed, so initiators
/// never see a half-built LUN map.
pub fn apply(target: &dyn Target, ops: &[Op], parallelism: usize) -> Vec<OpResult> {
    apply_until(
        target,
        ops,
        parallelism,
        &std::sync::atomic::AtomicBool::new(false),
    )
}

/// [`apply`], stopping early when `stop` is set (SIGTERM): ops already running
/// finish, ops not yet started are reported as skipped.
pub(crate) fn apply_until(
    target: &dyn Target,
    ops: &[Op],
    parallelism: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<OpResult> {
    let mut results: Vec<OpResult> = Vec::with_capacity(ops.len());
    let mut start = 0;
    while start < ops.len() {
        let phase = ops[start].phase();
        let end = ops[start..]
            .iter()
            .position(|o| o.phase() != phase)
            .map_or(ops.len(), |n| start + n);
        let batch = &ops[start..end];
        if phase == Phase::Enable && results.iter().any(|r| r.result.is_err()) {
            for op in batch {
                results.push(refused(
                    op,
                    "not enabling the TPG: earlier operations of this scan failed",
                ));
            }
        } else if phase == Phase::Map {
            let failed: std::collections::HashSet<&BackstoreRef> = results
                .iter()
                .filter(|r| r.result.is_err())
                .filter_map(|r| match &r.op {
                    Op::CreateBackstore { at, .. } => Some(at),
                    _ => None,
                })
                .collect();
            let held = |op: &Op| matches!(op, Op::MapLun { at, .. } if failed.contains(at));
            let runnable: Vec<Op> = batch.iter().filter(|op| !held(op)).cloned().collect();
            let mut ran = run_batch(target, &runnable, parallelism.max(1), stop).into_iter();
            let mut out = Vec::with_capacity(batch.len());
            for op in batch {
                if held(op) {
                    out.push(refused(
                        op,
                        "not mapping the LUN: creating its backstore failed this scan",
                    ));
                } else if let Some(r) = ran.next() {
                    out.push(r);
                }
            }
            results.extend(out);
        } else {
            results.extend(run_batch(target, batch, parallelism.max(1), stop));
        }
        start = end;
    }
    results
}

fn refused(op: &Op, why: &str) -> OpResult {
    OpResult {
        op: op.clone(),
        result: Err(LioError::Refused(why.into())),
        elapsed: std::time::Duration::ZERO,
    }
}

fn run_one(target: &dyn Target, op: &Op, stop: &std::sync::atomic::AtomicBool) -> OpResult {
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        return OpResult {
            op: op.clone(),
            result: Err(LioError::Refused("skipped: the agent is stopping".into())),
            elapsed: std::time::Duration::ZERO,
        };
    }
    let t = std::time::Instant::now();
    let result = target.execute(op);
    OpResult {
        op: op.clone(),
        result,
        elapsed: t.elapsed(),
    }
}

fn run_batch(
    target: &dyn Target,
    batch: &[Op],
    parallelism: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<OpResult> {
    if parallelism == 1 || batch.len() == 1 {
        return batch.iter().map(|op| run_one(target, op, stop)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<OpResult>>> =
        batch.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..parallelism.min(batch.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(op) = batch.get(i) else { break };
                let r = run_one(target, op, stop);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .zip(batch)
        .map(|(slot, op)| {
            slot.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| OpResult {
                    op: op.clone(),
                    result: Err(LioError::Refused("worker thread panicked".into())),
                    elapsed: std::time::Duration::ZERO,
                })
        })
        .collect()
}
