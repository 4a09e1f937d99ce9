//! Where the agent is in its loop, and whether that step is within its deadline.
//!
//! The systemd watchdog must prove that the agent makes progress, not merely that its
//! runtime is alive: it is pinged only while no step is past its deadline (between scans,
//! or in a step of a scan that still has time). A step that cannot be cancelled (a
//! configfs write the kernel never answers blocks its thread for good) keeps its place
//! here after the scan gave up waiting for it, so the pings stop, `/healthz` names the
//! step, and systemd restarts the agent.
//!
//! Every step the scan takes is entered here with its deadline (the inventory, the
//! target service, the LIO locks, reading configfs, each LIO operation, the ledger,
//! saveconfig.json). Several LIO operations of one phase run at once: each is tracked on
//! its own, and the phase counts as progressing while operations finish.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One step: what it is, since when, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub(crate) what: String,
    /// When it began, or last made progress (an operation of the phase finished).
    pub(crate) since: Instant,
    pub(crate) deadline: Duration,
}

impl Step {
    fn overdue(&self, now: Instant) -> Option<Stuck> {
        let elapsed = now.saturating_duration_since(self.since);
        (elapsed > self.deadline).then(|| Stuck {
            what: self.what.clone(),
            elapsed,
            deadline: self.deadline,
        })
    }
}

/// A step past its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub what: String,
    pub(crate) elapsed: Duration,
    pub(crate) deadline: Duration,
}

impl fmt::Display for Stuck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stuck in {} for {} s (its deadline is {} s)",
            self.what,
            self.elapsed.as_secs(),
            self.deadline.as_secs()
        )
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// The scan's own step (inventory, target service …); `None` between scans and
    /// while its LIO job runs.
    scan: Option<Step>,
    /// The step of the scan's LIO job. A job the scan gave up waiting for keeps it
    /// until it returns.
    job: Option<Step>,
    /// LIO operations running now, by ticket.
    ops: Vec<(u64, Step)>,
    next_ticket: u64,
}

/// Added to the deadline of a step that enforces its own (the inventory, systemctl, the
/// lock wait): such a step ends with an error at its deadline, and is stuck only if even
/// that did not happen.
pub(crate) const ENFORCED_GRACE: Duration = Duration::from_secs(5);

/// The agent's progress, shared by the scan, its blocking job, the daemon loop (which
/// pings the watchdog) and `/healthz`.
#[derive(Debug, Default)]
pub struct Progress {
    inner: Mutex<Inner>,
}

fn step(what: String, deadline: Duration) -> Step {
    Step {
        what,
        since: Instant::now(),
        deadline,
    }
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scan enters `what`, which may take `deadline`.
    pub(crate) fn enter(&self, what: impl Into<String>, deadline: Duration) {
        self.lock().scan = Some(step(what.into(), deadline));
    }

    /// The scan is between steps or over (its LIO job, if it left one running, is not).
    pub(crate) fn idle(&self) {
        self.lock().scan = None;
    }

    /// The LIO job enters `what`, which may take `deadline`.
    pub(crate) fn job_enter(&self, what: impl Into<String>, deadline: Duration) {
        self.lock().job = Some(step(what.into(), deadline));
    }

    /// The LIO job returned (also a job the scan had given up waiting for).
    pub(crate) fn job_done(&self) {
        let mut g = self.lock();
        g.job = None;
        g.ops.clear();
    }

    /// An LIO operation starts; it is done when the returned ticket is dropped.
    pub(crate) fn begin(&self, what: String, deadline: Duration) -> Ticket<'_> {
        let mut g = self.lock();
        let id = g.next_ticket;
        g.next_ticket += 1;
        g.ops.push((id, step(what, deadline)));
        Ticket { progress: self, id }
    }

    /// The step the agent is in, if a scan or its job runs.
    pub fn current(&self) -> Option<Step> {
        let g = self.lock();
        g.job.clone().or_else(|| g.scan.clone())
    }

    /// The step past its deadline, if any. While LIO operations run, the one running
    /// longest decides: the job's phase is in flight through it, so a phase whose
    /// last operation finished long ago but whose next one just began is not stuck
    /// (and a hung operation is named, not its phase). Otherwise the job's step, then
    /// the scan's.
    pub fn stuck(&self) -> Option<Stuck> {
        self.stuck_at(Instant::now())
    }

    /// [`Progress::stuck`] at `now`.
    pub(crate) fn stuck_at(&self, now: Instant) -> Option<Stuck> {
        let g = self.lock();
        if let Some(oldest) = g.ops.iter().map(|(_, s)| s).min_by_key(|s| s.since) {
            return oldest.overdue(now);
        }
        g.job
            .as_ref()
            .and_then(|s| s.overdue(now))
            .or_else(|| g.scan.as_ref().and_then(|s| s.overdue(now)))
    }
}

/// A running LIO operation; dropping it marks the operation done and the phase as
/// progressing.
pub(crate) struct Ticket<'a> {
    progress: &'a Progress,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut g = self.progress.lock();
        g.ops.retain(|(id, _)| *id != self.id);
        if let Some(s) = &mut g.job {
            s.since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    #[test]
    fn a_step_past_its_deadline_is_stuck_and_idle_clears_it() {
        let p = Progress::default();
        assert_eq!(p.stuck_at(later(3600)), None);
        p.enter("inventory", Duration::from_secs(10));
        assert_eq!(p.stuck_at(later(5)), None);
        let s = p.stuck_at(later(11)).unwrap();
        assert_eq!(s.what, "inventory");
        assert!(s.to_string().starts_with("stuck in inventory for 1"), "{s}");
        p.idle();
        assert_eq!(p.stuck_at(later(3600)), None);
    }

    #[test]
    fn a_job_left_behind_stays_stuck_after_the_scan_until_it_returns() {
        let p = Progress::default();
        p.job_enter("observe LIO", Duration::from_secs(10));
        assert_eq!(p.current().map(|s| s.what), Some("observe LIO".into()));
        p.idle(); // the scan gave up waiting and ended
        assert_eq!(
            p.stuck_at(later(11)).map(|s| s.what),
            Some("observe LIO".into())
        );
        p.job_done();
        assert_eq!(p.stuck_at(later(3600)), None);
    }

    /// Regression: the phase's clock restarts when an operation finishes, not when the
    /// next one begins; the phase must not be named stuck while an operation that began
    /// since is within its own deadline (the hung operation is named once it is past).
    #[test]
    fn a_running_operation_within_its_deadline_keeps_its_phase_from_being_stuck() {
        let p = Progress::default();
        p.job_enter("apply", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
        let op = p.begin("enable TPG".into(), Duration::from_secs(10));
        // The phase began 10 s before this instant, the operation not quite.
        let phase_overdue = later(10) - Duration::from_millis(10);
        assert_eq!(p.stuck_at(phase_overdue), None);
        assert_eq!(
            p.stuck_at(later(11)).map(|s| s.what),
            Some("enable TPG".into())
        );
        drop(op);
    }

    #[test]
    fn the_oldest_running_operation_is_named_and_finishing_ones_count_as_progress() {
        let p = Progress::default();
        p.job_enter("apply", Duration::from_secs(10));
        let hung = p.begin("map LUN 5".into(), Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
        drop(p.begin("map LUN 6".into(), Duration::from_secs(10)));
        assert_eq!(p.stuck_at(later(11)).unwrap().what, "map LUN 5");
        drop(hung);
        // The phase progressed when the operations finished.
        assert_eq!(p.stuck_at(later(9)), None);
        assert_eq!(p.stuck_at(later(11)).map(|s| s.what), Some("apply".into()));
    }
}
