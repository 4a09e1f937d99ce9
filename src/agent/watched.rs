//! The LIO backend as the scan uses it: every operation is entered in the scan's
//! [`Progress`] with its deadline, so one the kernel never answers is named by the
//! watchdog and `/healthz`.

use std::time::Duration;

use crate::lio::{Actual, LioError, LockGuard, Op, Target};
use crate::report::progress::Progress;

/// A backend whose every operation is tracked in a [`Progress`] with a deadline, so an
/// operation the kernel never answers is named.
pub(crate) struct Watched<'a> {
    pub(crate) target: &'a dyn Target,
    pub(crate) progress: &'a Progress,
    pub(crate) deadline: Duration,
}

impl Target for Watched<'_> {
    fn observe(&self) -> Result<Actual, LioError> {
        self.target.observe()
    }

    fn observe_after(
        &self,
        before: Actual,
        applied: &[crate::lio::OpResult],
    ) -> Result<Actual, LioError> {
        self.target.observe_after(before, applied)
    }

    fn execute(&self, op: &Op) -> Result<(), LioError> {
        let _t = self.progress.begin(op.to_string(), self.deadline);
        self.target.execute(op)
    }

    fn lock(&self) -> Result<LockGuard, LioError> {
        self.target.lock()
    }

    fn save_config(&self, path: &std::path::Path) -> Result<bool, LioError> {
        self.target.save_config(path)
    }
}
