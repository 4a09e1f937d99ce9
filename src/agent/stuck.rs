//! A scan's LIO job runs on a blocking thread, and a blocking call the kernel never
//! answers (a hung configfs write) cannot be cancelled. The scan therefore waits for its
//! job only while the job's steps are within their deadlines ([`Progress`]); past them it
//! reports the step as stuck and keeps the job aside. No other job runs until that one
//! returns (two jobs would race on LIO and on the ledger): later scans report the same
//! step at once, the watchdog is no longer pinged, and systemd restarts the agent. A job
//! that returns after all is taken back (its ledger and saveconfig state) by the next scan.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Agent, Job, JobDone, Mode};
use crate::report::progress::Progress;
use crate::report::{Failure, FailureKind, ScanReport};

/// How often a scan waiting for its job looks at the job's deadlines.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// A job the scan gave up waiting for.
pub(super) struct Pending {
    job: JoinHandle<JobDone>,
    mode: Mode,
}

impl Agent {
    /// Runs `job` on a blocking thread and waits for it while it keeps its deadlines.
    pub(super) async fn run_job(&mut self, job: Job, mode: Mode) -> JobDone {
        // From here the job's own steps count (an apply may rightly take longer than
        // the scan's last step, e.g. the inventory, was allowed).
        self.progress.idle();
        let mut handle = tokio::task::spawn_blocking(move || job.run());
        loop {
            tokio::select! {
                r = &mut handle => {
                    return r.unwrap_or_else(|e| JobDone::failed(FailureKind::Internal.because(format!("scan worker failed: {e}"))));
                }
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    if let Some(stuck) = self.progress.stuck() {
                        tracing::error!("{stuck}; the scan stops waiting for it");
                        self.pending = Some(Pending { job: handle, mode });
                        return JobDone::failed(stuck_failure(&stuck.to_string()));
                    }
                }
            }
        }
    }

    /// Takes back a job an earlier scan left behind when it has returned; while it still
    /// runs, the report of a scan that does nothing else.
    pub(super) async fn wait_for_pending(&mut self, now: u64) -> Option<ScanReport> {
        let pending = self.pending.take()?;
        if !pending.job.is_finished() {
            let why = stuck_failure(&still_stuck(&self.progress));
            tracing::error!("{why}");
            self.pending = Some(pending);
            return Some(nothing_done(now, why));
        }
        match pending.job.await {
            Ok(mut done) => {
                tracing::warn!("the LIO step an earlier scan left behind has returned");
                if let Some(l) = done.ledger.take() {
                    self.ledger = l;
                }
                if pending.mode == Mode::Apply {
                    self.saved_state = done.saved_state.take();
                }
            }
            Err(e) => tracing::error!("the LIO step an earlier scan left behind failed: {e}"),
        }
        None
    }
}

fn stuck_failure(stuck: &str) -> Failure {
    FailureKind::Stuck.because(format!("LIO {stuck}; nothing more is done until it returns, and the watchdog is no longer pinged (systemd restarts the agent)"))
}

fn still_stuck(progress: &Progress) -> String {
    match (progress.stuck(), progress.current()) {
        (Some(s), _) => s.to_string(),
        (None, Some(step)) => format!(
            "still in {} for {} s",
            step.what,
            step.since.elapsed().as_secs()
        ),
        (None, None) => "still running a step an earlier scan left behind".into(),
    }
}

/// The report of a scan that did nothing: the same shape as every other.
fn nothing_done(now: u64, failure: Failure) -> ScanReport {
    ScanReport {
        failure: Some(failure),
        ..ScanReport::empty(now)
    }
}
