//! The LIO iSCSI target: the model of its objects and the backends that change it.
//!
//! A backend implements [`Target`]: `observe()` reads the kernel's truth,
//! `execute()` performs one [`Op`]. [`apply`] runs a plan's ops phase by phase,
//! independent ops in parallel, and never lets one failure stop the others, except
//! that the TPG is not enabled when anything before it failed.

pub mod model;

use std::io;
use std::path::PathBuf;

pub use model::{Actual, Backstore, BackstoreRef, Lun, Op, Phase, Tpg};

/// Errors of the LIO backends, each naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum LioError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// One LIO backend.
pub trait Target: Send + Sync {
    /// Reads the current state from the kernel (never from saveconfig.json).
    fn observe(&self) -> Result<Actual, LioError>;
    /// Performs one operation.
    fn execute(&self, op: &Op) -> Result<(), LioError>;
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
/// not stop the others; `EnableTpg` is skipped when any earlier op failed, so
/// initiators never see a half-built LUN map.
pub fn apply(target: &dyn Target, ops: &[Op], parallelism: usize) -> Vec<OpResult> {
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
                results.push(OpResult {
                    op: op.clone(),
                    result: Err(LioError::Refused(
                        "not enabling the TPG: earlier operations of this scan failed".into(),
                    )),
                    elapsed: std::time::Duration::ZERO,
                });
            }
        } else {
            results.extend(run_batch(target, batch, parallelism.max(1)));
        }
        start = end;
    }
    results
}

fn run_one(target: &dyn Target, op: &Op) -> OpResult {
    let t = std::time::Instant::now();
    let result = target.execute(op);
    OpResult {
        op: op.clone(),
        result,
        elapsed: t.elapsed(),
    }
}

fn run_batch(target: &dyn Target, batch: &[Op], parallelism: usize) -> Vec<OpResult> {
    if parallelism == 1 || batch.len() == 1 {
        return batch.iter().map(|op| run_one(target, op)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<OpResult>>> =
        batch.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..parallelism.min(batch.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(op) = batch.get(i) else { break };
                let r = run_one(target, op);
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
