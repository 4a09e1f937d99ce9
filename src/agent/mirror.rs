//! When the ledger kept in the Kubernetes API is read and written.
//!
//! The rule it keeps: a LUN number is taken or freed only when the change is durable in
//! the API first (write-ahead, as the local file is), so that a rebuilt worker finds every
//! number again. So:
//!
//! * before the first plan the agent reads its node's document once; with no local ledger
//!   (new disk, rebuild, corrupt file) it restores from it, and when both exist the higher
//!   generation wins. Until the document has been read, numbers are frozen: what is
//!   exported is served and kept, new images wait;
//! * when a plan changes the ledger, the API is written before the local file and before
//!   the kernel; when that write fails the scan plans again with numbers frozen;
//! * a copy left behind (the API was down when the local file moved on) is caught up
//!   before the next plan;
//! * a steady scan makes no request at all; the other nodes' ledgers are listed only when
//!   a new image needs a number (so it takes the one the fleet gave it).

use std::sync::Arc;

use crate::desired::Desired;
use crate::fleet::{FleetView, NodeStatus};
use crate::ledger::remote::{LedgerMirror, MirrorError};
use crate::ledger::Ledger;

/// The agent's side of the mirror.
pub(crate) struct Mirror {
    remote: Arc<dyn LedgerMirror>,
    node: String,
    /// The API's document has been read since the agent started.
    read: bool,
    /// The generation the API is known to hold (`None`: no document, or not known).
    remote_generation: Option<u64>,
    /// The status last written (its transitions, not its timestamps).
    last_status: Option<NodeStatus>,
}

/// What a scan plans with.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// Why LUN numbers are frozen this scan, if they are.
    pub(crate) frozen: Option<String>,
    /// The other nodes' ledgers, when this scan may number a new image.
    pub(crate) fleet: FleetView,
    /// Requests made, for the report.
    pub(crate) requests: usize,
}

/// How the ledger came back at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Restored {
    /// The API's copy replaced the local one (none, or an older one).
    FromApi { generation: u64, luns: usize },
    /// The local ledger is current; the API's copy is older or the same.
    Local,
    /// The API holds no document yet: this node's first.
    NoDocument,
}

impl Mirror {
    pub(crate) fn new(remote: Arc<dyn LedgerMirror>, node: &str) -> Mirror {
        Mirror {
            remote,
            node: node.to_string(),
            read: false,
            remote_generation: None,
            last_status: None,
        }
    }

    /// The API's document has been read since the agent started.
    pub(crate) fn has_read(&self) -> bool {
        self.read
    }

    /// The handle the blocking part of a scan writes ahead through.
    pub(crate) fn remote(&self) -> Arc<dyn LedgerMirror> {
        Arc::clone(&self.remote)
    }

    /// Reads, restores and catches up as needed before a plan; never fails: what it
    /// cannot do freezes numbers, with the reason.
    pub(crate) async fn prepare(
        &mut self,
        ledger: &mut Ledger,
        local_missing: bool,
        desired: &Desired,
        may_write: bool,
    ) -> Prepared {
        let mut prep = Prepared::default();
        if !self.read {
            prep.requests += 1;
            match self.restore(ledger, local_missing).await {
                Ok(r) => log_restored(&self.node, &r, may_write),
                Err(e) => {
                    prep.frozen = Some(format!(
                        "the ledger in the Kubernetes API cannot be read ({e}); {}",
                        if local_missing {
                            "no local ledger either, so no number is known"
                        } else {
                            "numbers change only once it is"
                        }
                    ));
                    return prep;
                }
            }
        }
        // A copy left behind, or none yet: caught up before anything else moves.
        let behind = self.remote_generation.is_none_or(|g| g < ledger.generation);
        if may_write && behind && ledger.generation > 0 {
            prep.requests += 1;
            match self.remote.store(ledger, None).await {
                Ok(()) => self.remote_generation = Some(ledger.generation),
                Err(e) => {
                    prep.frozen = Some(format!(
                        "the ledger in the Kubernetes API cannot be written ({e})"
                    ));
                    return prep;
                }
            }
        }
        let new_image = desired
            .projections
            .keys()
            .any(|serial| !ledger.luns.contains_key(serial));
        if new_image {
            prep.requests += 1;
            match self.remote.fleet().await {
                Ok(docs) => {
                    let others = docs.iter().filter(|d| d.node != self.node);
                    prep.fleet = FleetView::from_ledgers(others.map(|d| &d.ledger));
                }
                // The fleet's numbers are a preference; this node's own are the rule.
                Err(e) => tracing::warn!(
                    "cannot list the other nodes' ledgers ({e}); new images are numbered from this node's ledger alone"
                ),
            }
        }
        prep
    }

    async fn restore(
        &mut self,
        ledger: &mut Ledger,
        local_missing: bool,
    ) -> Result<Restored, MirrorError> {
        let doc = match self.remote.load().await {
            Ok(doc) => doc,
            // The local ledger is whole: it is the truth, and it replaces what cannot be read.
            Err(MirrorError::Unreadable(e)) if !local_missing => {
                tracing::error!(
                    "{e}; the local ledger replaces it (generation {})",
                    ledger.generation
                );
                None
            }
            Err(e) => return Err(e),
        };
        self.read = true;
        let Some(doc) = doc else {
            self.remote_generation = None;
            return Ok(Restored::NoDocument);
        };
        self.remote_generation = Some(doc.ledger.generation);
        self.last_status = doc.status;
        if crate::ledger::remote_wins(ledger, local_missing, &doc.ledger) {
            let r = Restored::FromApi {
                generation: doc.ledger.generation,
                luns: doc.ledger.luns.len(),
            };
            *ledger = doc.ledger;
            return Ok(r);
        }
        Ok(Restored::Local)
    }

    /// Records that the blocking part of the scan wrote `generation` ahead.
    pub(crate) fn written(&mut self, generation: u64) {
        self.remote_generation = Some(generation);
    }

    /// After a scan: the status is written when one of its states changed. A failure
    /// is logged and tried again after the next scan.
    pub(crate) async fn after_scan(&mut self, ledger: &Ledger, status: NodeStatus) -> usize {
        let same = self.last_status.as_ref().is_some_and(|s| {
            NodeStatus {
                last_converged: status.last_converged,
                started: status.started,
                ..s.clone()
            } == status
        });
        if same || !self.read || self.remote_generation.is_none_or(|g| g < ledger.generation) {
            return 0;
        }
        match self.remote.store(ledger, Some(&status)).await {
            Ok(()) => self.last_status = Some(status),
            Err(e) => tracing::warn!("cannot write this node's status to the Kubernetes API: {e}"),
        }
        1
    }
}

/// A dry run (`plan`, `explain`) reads the API but writes nothing, so it says only what
/// it found, and quietly: its stdout is the plan, its stderr should not look like work.
fn log_restored(node: &str, r: &Restored, may_write: bool) {
    match r {
        Restored::FromApi { generation, luns } if may_write => tracing::warn!(
            node,
            generation,
            "restored the ledger from the Kubernetes API: {luns} LUN numbers"
        ),
        Restored::FromApi { generation, luns } => tracing::warn!(
            node,
            generation,
            "the Kubernetes API's ledger is newer than the local one; this plan uses its {luns} LUN numbers"
        ),
        Restored::Local => tracing::debug!(node, "the local ledger is current"),
        Restored::NoDocument if may_write => {
            tracing::info!(node, "no ledger in the Kubernetes API yet; writing this node's")
        }
        Restored::NoDocument => tracing::debug!(node, "no ledger in the Kubernetes API yet"),
    }
}
