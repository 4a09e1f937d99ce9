//! What a scan saw and did, and every shape it takes for an operator: the log lines
//! (`log`), the status document (`sbps-marshal status`, `/status`, [`status`]), the
//! fields each operation logs (`fields`) and where a running scan is (`progress`).
//!
//! The reconciler (`agent`) returns a [`ScanReport`]; the runner hands it to the log,
//! the metrics (`telemetry`) and the status. This module sits below both, so neither
//! imports the other, as kube-runtime's controller keeps the reconciler apart from the
//! runner that logs, counts and retries.

#![warn(unreachable_pub)]

pub(crate) mod fields;
pub(crate) mod log;
pub(crate) mod progress;
pub mod status;

use std::time::Duration;

use serde::Serialize;

use crate::desired::{self, Desired};
use crate::inventory::gather::GatherStats;
use crate::lio::{Actual, Op};
use crate::plan::{self, Plan};

/// One op's outcome, for logs, status and `scan --once`.
#[derive(Debug, Clone, Serialize)]
pub struct OpOutcome {
    pub op: Op,
    pub error: Option<String>,
    /// What kind of error (`LioError::kind`: `busy`, `not-found`, `denied` …), for
    /// metrics labels and alerts that must not parse messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    pub millis: u64,
}

/// Why a scan stopped before it could finish changing LIO, by what failed: the logs,
/// the metrics (`sbps_marshal_scan_failures_total{kind}`) and `explain` say which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// The kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// TARGET_SERVICE (systemctl) did not answer or start: LIO is not touched.
    TargetService,
    /// The LIO locks could not be taken, or configfs could not be read.
    Lio,
    /// An LIO step is past its deadline (the watchdog stops; systemd restarts the agent).
    Stuck,
    /// The ledger or saveconfig.json could not be written.
    Persistence,
    /// The scan's worker thread failed.
    Internal,
}

impl FailureKind {
    /// The label value (`target-service`, `lio`, `stuck`, `persistence`, `internal`).
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::TargetService => "target-service",
            FailureKind::Lio => "lio",
            FailureKind::Stuck => "stuck",
            FailureKind::Persistence => "persistence",
            FailureKind::Internal => "internal",
        }
    }

    /// A failure of this kind.
    pub fn because(self, message: impl Into<String>) -> Failure {
        Failure {
            kind: self,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Wall time of each phase of a scan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub gather: Duration,
    pub desired: Duration,
    pub observe: Duration,
    pub plan: Duration,
    pub apply: Duration,
    pub persist: Duration,
    pub total: Duration,
}

/// Everything one scan saw and did.
#[derive(Debug, Clone)]
pub struct ScanReport {
    pub started: u64,
    pub desired: Desired,
    /// The kernel state after the scan (before it, for a dry run).
    pub actual: Option<Actual>,
    pub plan: Option<Plan>,
    pub outcomes: Vec<OpOutcome>,
    /// Why the scan stopped before planning (LIO unreadable, ledger unwritable …).
    pub failure: Option<Failure>,
    pub labelled: Option<bool>,
    pub label_error: Option<String>,
    pub stats: GatherStats,
    pub timings: Timings,
    /// Nothing was unknown, nothing failed, and nothing waits for an operator: see
    /// [`ScanReport::problems`], which lists exactly what keeps it false.
    pub converged: bool,
    pub saveconfig_written: bool,
    pub ledger_written: bool,
    /// Why no LUN number could be taken or freed this scan (the ledger in the Kubernetes
    /// API could not be read or written), if so.
    pub numbers_frozen: Option<String>,
}

impl ScanReport {
    /// The report of a scan started at `started` that has seen and done nothing yet:
    /// what an early return fills in.
    pub fn empty(started: u64) -> ScanReport {
        ScanReport {
            started,
            desired: Desired::default(),
            actual: None,
            plan: None,
            outcomes: Vec::new(),
            failure: None,
            labelled: None,
            label_error: None,
            stats: GatherStats::default(),
            timings: Timings::default(),
            converged: false,
            saveconfig_written: false,
            ledger_written: false,
            numbers_frozen: None,
        }
    }

    /// Whether the target portal group was enabled when the scan last read it (`None`:
    /// LIO was not read, or there is no target).
    pub fn tpg_enabled(&self) -> Option<bool> {
        self.actual
            .as_ref()
            .and_then(|a| a.tpg.as_ref())
            .map(|t| t.enabled)
    }

    /// Why this scan did not converge, one line each. Empty exactly when it converged:
    /// every source answered, no image was unknown, every operation succeeded, the
    /// target exists, and no removal waits for an operator (deletion brake).
    pub fn problems(&self) -> Vec<String> {
        let mut v: Vec<String> = self.failure.iter().map(|f| f.message.clone()).collect();
        for o in &self.outcomes {
            if let Some(e) = &o.error {
                v.push(format!("{}: {e}", o.op));
            }
        }
        if let Some(p) = &self.plan {
            for w in &p.warnings {
                if matches!(
                    w,
                    plan::Warning::NoTarget
                        | plan::Warning::LunSpaceExhausted
                        | plan::Warning::EnableHeld { .. }
                ) {
                    v.push(w.to_string());
                }
            }
            if let (Some(why), true) = (&self.numbers_frozen, p.waiting.is_empty()) {
                v.push(format!("LUN numbers are frozen: {why}"));
            }
            if let Some(w) = p.waiting.first() {
                v.push(format!(
                    "{} image(s) wait for a LUN number: {}",
                    p.waiting.len(),
                    w.reason
                ));
            }
            if p.brake {
                v.push("deletion brake engaged: removals wait for `sbps-marshal scan --once --release-brake`".into());
            }
        }
        if let Some(e) = &self.label_error {
            v.push(format!("node label unknown: {e}"));
        }
        let u = &self.desired.uncertainty;
        v.extend(u.everything.iter().chain(&u.rootfs).cloned());
        let unknown = self
            .desired
            .verdicts
            .iter()
            .filter_map(|x| match &x.outcome {
                desired::Outcome::Unknown { reason } => Some((x, reason)),
                _ => None,
            });
        // The whole-source reasons are already said once above.
        let unknown: Vec<String> = unknown
            .filter(|(_, r)| {
                !matches!(
                    r,
                    desired::Reason::S3Unavailable { .. }
                        | desired::Reason::ImsUnavailable { .. }
                        | desired::Reason::ImsNamesNoneServed { .. }
                )
            })
            .map(|(x, reason)| format!("{}: unknown: {reason}", x.subject))
            .collect();
        const SHOWN: usize = 20;
        if unknown.len() > SHOWN {
            let more = unknown.len() - SHOWN;
            v.extend(unknown.into_iter().take(SHOWN));
            v.push(format!(
                "{more} more unknown (`sbps-marshal status` lists them)"
            ));
        } else {
            v.extend(unknown);
        }
        if !u.is_empty() && v.is_empty() {
            v.push("the inventory was not fully known".into());
        }
        v
    }
}
