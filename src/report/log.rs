//! The scan's log lines: one per change, one summary, and the problems an operator
//! must see. Runbooks grep `START SCAN` … `END SCAN` and `error`.

use super::ScanReport;
use crate::desired::Outcome;

/// Logs what the scan did.
pub(crate) fn log(r: &ScanReport) {
    if let Some(e) = &r.label_error {
        tracing::warn!("node label unknown, target portal group left as it is: {e}");
    }
    for (source, stats) in r.stats.by_source() {
        if let Some(e) = &stats.error {
            tracing::error!(source, "source error: {e}");
        }
    }
    for v in &r.desired.verdicts {
        if let (
            crate::desired::Subject::Image { id, .. },
            Outcome::Unknown {
                reason: reason @ crate::desired::Reason::ImsNamesNoneServed { .. },
            },
        ) = (&v.subject, &v.outcome)
        {
            if id == "*" {
                tracing::error!("{reason}");
            }
            continue;
        }
        if let Outcome::Unknown { reason } = &v.outcome {
            let image_id = match &v.subject {
                crate::desired::Subject::Image { id, .. } => Some(id.as_str()),
                crate::desired::Subject::Pe { .. } => None,
            };
            tracing::warn!(
                rule = reason.label(),
                image_id,
                "{}: unknown, projection kept: {reason}",
                v.subject
            );
        }
    }
    for o in &r.outcomes {
        // Journal fields OP, LUN, SERIAL, BACKSTORE, IMAGE_ID (`fields`), ERROR_KIND.
        let f = super::fields::op_fields(&o.op, &r.desired);
        match &o.error {
            None => tracing::info!(
                op = f.op,
                lun = f.lun,
                serial = f.serial,
                backstore = f.backstore,
                image_id = f.image_id,
                ms = o.millis,
                "{}",
                o.op
            ),
            Some(e) => tracing::error!(
                op = f.op,
                error_kind = o.error_kind,
                lun = f.lun,
                serial = f.serial,
                backstore = f.backstore,
                image_id = f.image_id,
                "{} failed: {e}",
                o.op
            ),
        }
    }
    if let Some(p) = &r.plan {
        for w in &p.warnings {
            tracing::warn!("{w}");
        }
        for h in &p.held {
            tracing::info!(backstore = %h.at, luns = ?h.luns, "removal held: {}", h.reason);
        }
        if p.brake {
            tracing::error!(
                "deletion brake engaged: {} removals held; fix the inventory or release the brake with `sbps-marshal scan --once --release-brake`",
                p.held.iter().filter(|h| matches!(h.reason, crate::plan::HoldReason::Brake { .. })).count()
            );
        }
    }
    if let Some(f) = &r.failure {
        tracing::error!(failure = f.kind.label(), "scan failed: {f}");
    }
    let skipped = r
        .desired
        .verdicts
        .iter()
        .filter(|v| matches!(v.outcome, Outcome::Skipped { .. }))
        .count();
    let unknown = r
        .desired
        .verdicts
        .iter()
        .filter(|v| matches!(v.outcome, Outcome::Unknown { .. }))
        .count();
    let failed = r.outcomes.iter().filter(|o| o.error.is_some()).count();
    tracing::info!(
        projected = r.desired.projections.len(),
        skipped,
        unknown,
        changes = r.outcomes.len() - failed,
        failed,
        held = r.plan.as_ref().map_or(0, |p| p.held.len()),
        converged = r.converged,
        gather_ms = r.timings.gather.as_millis() as u64,
        apply_ms = r.timings.apply.as_millis() as u64,
        total_ms = r.timings.total.as_millis() as u64,
        "scan summary"
    );
}
