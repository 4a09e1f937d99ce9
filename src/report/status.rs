//! The status document (`status`, `/status`) and `explain`, both read from one
//! scan's report: what is projected where, what is held and why, what LIO holds
//! that is not ours, and the gate.

use serde::Serialize;

use super::ScanReport;
use crate::config::Settings;
use crate::desired::{Kind, Outcome, Subject, Verdict};
use crate::identity::{wwid_of_serial, Identity};
use crate::ledger::Ledger;
use crate::lio::Actual;
use crate::plan::{HoldReason, Warning};

/// One exported image.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionRow {
    pub(crate) kind: Kind,
    pub(crate) image_id: Option<String>,
    /// Image name, or the PE file name.
    pub(crate) name: String,
    pub(crate) object_key: String,
    pub lun: Option<u64>,
    pub(crate) backstore: String,
    pub(crate) serial: String,
    pub(crate) wwid: String,
    pub(crate) size: u64,
    /// When the agent first saw it exported (seconds since the epoch).
    pub(crate) since: Option<u64>,
}

/// A projection that stays although it is no longer (or not known to be) wanted.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HeldRow {
    pub(crate) backstore: String,
    pub(crate) serial: Option<String>,
    pub(crate) luns: Vec<u64>,
    pub(crate) reason: String,
}

/// A freed LUN number that is not given to a new image before `until` (rule 4).
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRow {
    pub lun: u64,
    /// The image that held it, when known (not for numbers quarantined at adoption or
    /// for an empty `lun_N` nothing explains).
    pub serial: Option<String>,
    pub(crate) until: u64,
}

/// The gate (rule 7). The TPG is enabled by a scan that leaves nothing unknown
/// outside the LUN map; what holds it back is in `warnings` and `problems`.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub(crate) labelled: Option<bool>,
    pub tpg_enabled: Option<bool>,
}

/// The whole document.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub(crate) scanned_at: u64,
    pub(crate) target_iqn: String,
    pub converged: bool,
    pub problems: Vec<String>,
    /// What stopped the scan before it finished with LIO, if something did
    /// (`target-service`, `lio`, `stuck`, `persistence`, `internal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<super::FailureKind>,
    pub gate: Gate,
    pub projections: Vec<ProjectionRow>,
    pub(crate) held: Vec<HeldRow>,
    pub(crate) unmanaged: Vec<String>,
    /// LUN numbers in quarantine, by number.
    pub quarantined: Vec<QuarantineRow>,
    pub(crate) warnings: Vec<String>,
    pub(crate) brake: bool,
    /// Candidates not projected, with the rule.
    pub(crate) not_projected: Vec<Verdict>,
}

impl Status {
    /// Builds the document from a scan.
    pub fn build(r: &ScanReport, ledger: &Ledger, s: &Settings) -> Status {
        let luns = r
            .actual
            .as_ref()
            .map(Actual::lun_by_serial)
            .unwrap_or_default();
        let mut projections: Vec<ProjectionRow> = r
            .desired
            .projections
            .values()
            .map(|p| ProjectionRow {
                kind: p.kind,
                image_id: p.image_id.clone(),
                name: p.image_name.clone().unwrap_or_else(|| {
                    p.object_key
                        .rsplit('/')
                        .next()
                        .unwrap_or(&p.object_key)
                        .to_string()
                }),
                object_key: p.object_key.clone(),
                lun: luns.get(p.identity.serial.as_str()).copied(),
                backstore: p.identity.name.clone(),
                serial: p.identity.serial.clone(),
                wwid: p.identity.wwid(),
                size: p.size,
                since: ledger.luns.get(&p.identity.serial).map(|l| l.since),
            })
            .collect();
        projections.sort_by_key(|p| (p.lun.is_none(), p.lun, p.backstore.clone()));
        let plan = r.plan.as_ref();
        Status {
            scanned_at: r.started,
            target_iqn: s.target_iqn.clone(),
            converged: r.converged,
            problems: r.problems(),
            failure: r.failure.as_ref().map(|f| f.kind),
            gate: Gate {
                labelled: r.labelled,
                tpg_enabled: r.tpg_enabled(),
            },
            projections,
            held: plan
                .map(|p| {
                    p.held
                        .iter()
                        .map(|h| HeldRow {
                            backstore: h.at.to_string(),
                            serial: h.serial.clone(),
                            luns: h.luns.clone(),
                            reason: h.reason.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            unmanaged: plan
                .map(|p| p.unmanaged.iter().map(|b| b.to_string()).collect())
                .unwrap_or_default(),
            // The plan's ledger: this scan's releases and new quarantines included.
            quarantined: plan
                .map_or(ledger, |p| &p.ledger)
                .quarantine
                .iter()
                .map(|(&lun, q)| QuarantineRow {
                    lun,
                    serial: q.serial.clone(),
                    until: q.until,
                })
                .collect(),
            warnings: plan
                .map(|p| p.warnings.iter().map(|w| w.to_string()).collect())
                .unwrap_or_default(),
            brake: plan.is_some_and(|p| p.brake),
            not_projected: r
                .desired
                .verdicts
                .iter()
                .filter(|v| !matches!(v.outcome, Outcome::Projected { .. }))
                .cloned()
                .collect(),
        }
    }

    /// The text `sbps-marshal status` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let yn = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        out += &format!(
            "target {}  labelled: {}  TPG enabled: {}  last scan converged: {}\n",
            self.target_iqn,
            yn(self.gate.labelled),
            yn(self.gate.tpg_enabled),
            self.converged
        );
        for p in &self.problems {
            out += &format!("problem: {p}\n");
        }
        out += &format!(
            "\n{:<6} {:<4} {:<15} {:<33} {:>12}  {}\n",
            "KIND", "LUN", "BACKSTORE", "WWID", "SIZE", "IMAGE"
        );
        for p in &self.projections {
            let lun = p.lun.map_or("-".to_string(), |l| l.to_string());
            let image = match &p.image_id {
                Some(id) => format!("{id} ({})", p.name),
                None => p.name.clone(),
            };
            out += &format!(
                "{:<6} {:<4} {:<15} {:<33} {:>12}  {}\n",
                p.kind, lun, p.backstore, p.wwid, p.size, image
            );
        }
        if !self.held.is_empty() {
            out += "\nheld removals:\n";
            for h in &self.held {
                out += &format!("  {} LUN {:?}: {}\n", h.backstore, h.luns, h.reason);
            }
        }
        if !self.unmanaged.is_empty() {
            out += &format!(
                "\nnot managed (left alone): {}\n",
                self.unmanaged.join(", ")
            );
        }
        if !self.quarantined.is_empty() {
            out += &format!(
                "\nquarantined LUN numbers (not given to new images): {}\n",
                quarantine_ranges(&self.quarantined, self.scanned_at).join(", ")
            );
        }
        for w in &self.warnings {
            out += &format!("warning: {w}\n");
        }
        let unknown = self
            .not_projected
            .iter()
            .filter(|v| matches!(v.outcome, Outcome::Unknown { .. }))
            .count();
        out += &format!(
            "\n{} projected, {} not projected ({} unknown); `sbps-marshal explain <image|key|serial|wwid>` says why\n",
            self.projections.len(),
            self.not_projected.len(),
            unknown
        );
        out
    }
}

/// Why `query` (an image id or name, an S3 key or URL, a backstore name, a serial
/// or a WWID) is or is not projected, naming the rule and the data behind it.
pub fn explain(r: &ScanReport, ledger: &Ledger, query: &str) -> Vec<String> {
    let q = query.trim();
    let mut out = Vec::new();
    for v in &r.desired.verdicts {
        if !verdict_matches(v, q) {
            continue;
        }
        let mut lines = vec![format!("{}", v.subject)];
        if let Some(k) = &v.object_key {
            lines.push(format!("  S3 object: {k}"));
        }
        if let Some(id) = &v.identity {
            lines.push(format!(
                "  identity: backstore {}  serial {}  WWID {}",
                id.name,
                id.serial,
                id.wwid()
            ));
        }
        match &v.outcome {
            Outcome::Projected { serial } => {
                lines.push("  projected: every rule passed".into());
                let waiting = r
                    .plan
                    .iter()
                    .flat_map(|p| &p.waiting)
                    .find(|w| &w.serial == serial);
                lines.push(match (lun_of(r, serial), waiting) {
                    (Some(l), _) => format!("  exported at LUN {l}"),
                    (None, Some(w)) => format!("  not exported: {}", w.reason),
                    (None, None) => "  not exported yet (see the scan's problems)".into(),
                });
            }
            Outcome::Skipped { reason } => {
                lines.push(format!(
                    "  not projected, rule {}: {reason}",
                    reason.label()
                ));
            }
            Outcome::Unknown { reason } => {
                lines.push(format!(
                    "  unknown, rule {}: {reason}; an existing projection is kept until this clears",
                    reason.label()
                ));
            }
        }
        if let (Some(id), Some(p)) = (&v.identity, &r.plan) {
            for h in p
                .held
                .iter()
                .filter(|h| h.serial.as_deref() == Some(id.serial.as_str()))
            {
                lines.push(format!("  removal held: {}", h.reason));
            }
            for w in &p.warnings {
                if let Warning::ContentChanged { serial, .. } = w {
                    if *serial == id.serial {
                        lines.push(format!("  warning: {w}"));
                    }
                }
            }
        }
        out.push(lines.join("\n"));
    }
    // An image the inventory could not list this scan (IMS down …): the ledger still
    // knows which serial it had, so say where it is exported and why it stays.
    if out.is_empty() {
        for (serial, rec) in &ledger.luns {
            let object_key = rec
                .key
                .as_deref()
                .and_then(|k| k.split('|').next())
                .unwrap_or("");
            let hit = rec.image_id.as_deref() == Some(q)
                || object_key == q
                || object_key.ends_with(&format!("/{q}"));
            if !hit {
                continue;
            }
            let why = r
                .desired
                .uncertainty
                .everything
                .clone()
                .or_else(|| r.desired.uncertainty.rootfs.clone())
                .unwrap_or_else(|| "not in this scan's inventory".into());
            let held = r
                .plan
                .as_ref()
                .and_then(|p| {
                    p.held
                        .iter()
                        .find(|h| h.serial.as_deref() == Some(serial.as_str()))
                })
                .map(|h| format!("; removal held: {}", h.reason))
                .unwrap_or_default();
            out.push(format!(
                "{} (backstore {}, serial {serial}, WWID {}) was exported at LUN {}; this scan could not see it: {why}{held}",
                rec.image_id.as_deref().map_or_else(|| object_key.to_string(), |id| format!("IMS image {id}")),
                rec.name,
                wwid_of_serial(serial),
                lun_of(r, serial).unwrap_or(rec.lun),
            ));
        }
    }
    // A backstore in LIO that no candidate explains (removed image in its grace period …).
    if out.is_empty() {
        if let Some(p) = &r.plan {
            for h in &p.held {
                let serial = h.serial.clone().unwrap_or_default();
                if h.at.name == q
                    || serial == q
                    || wwid_of_serial(&serial) == q.to_ascii_lowercase()
                {
                    let why = match &h.reason {
                        HoldReason::Grace { .. } => "no longer in the inventory",
                        HoldReason::Brake { .. } => "no longer in the inventory",
                        HoldReason::Unknown { .. } => "the inventory cannot see it",
                        HoldReason::NumbersFrozen { .. } => "LUN numbers cannot change now",
                    };
                    out.push(format!(
                        "backstore {} (serial {serial}) at LUN {:?}: {why}; removal held: {}",
                        h.at, h.luns, h.reason
                    ));
                }
            }
        }
    }
    out
}

/// The LUN exporting `serial` (explain asks about a handful of serials only).
fn lun_of(r: &ScanReport, serial: &str) -> Option<u64> {
    r.actual.as_ref()?.lun_by_serial().get(serial).copied()
}

fn verdict_matches(v: &Verdict, q: &str) -> bool {
    let ql = q.to_ascii_lowercase();
    let by_subject = match &v.subject {
        Subject::Image { id, name } => id == q || name == q,
        Subject::Pe { object_key } => {
            object_key == q
                || object_key.rsplit('/').next() == Some(q)
                || q.ends_with(&format!("/{object_key}"))
        }
    };
    let by_key = v.object_key.as_deref().is_some_and(|k| {
        k == q
            || q.strip_prefix("s3://")
                .and_then(|r| r.split_once('/'))
                .map(|x| x.1)
                == Some(k)
    });
    let by_identity = v
        .identity
        .as_ref()
        .is_some_and(|id: &Identity| id.name == ql || id.serial == ql || id.wwid() == ql);
    by_subject || by_key || by_identity
}

/// A duration for people: `6d 23h`, `3h 12m`, `42s`.
fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m {}s", secs % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// `5-260 (7d 0h more)`: consecutive numbers with the same time left in one range (an
/// adoption quarantines hundreds at once), the others one by one; in number order.
fn quarantine_ranges(rows: &[QuarantineRow], now: u64) -> Vec<String> {
    let mut sorted: Vec<(u64, String)> = rows
        .iter()
        .map(|q| (q.lun, span(q.until.saturating_sub(now))))
        .collect();
    sorted.sort();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let (first, left) = &sorted[i];
        let mut last = *first;
        while sorted
            .get(i + 1)
            .is_some_and(|(n, l)| *n == last + 1 && l == left)
        {
            i += 1;
            last = sorted[i].0;
        }
        out.push(match last == *first {
            true => format!("{first} ({left} more)"),
            false => format!("{first}-{last} ({left} more)"),
        });
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantined_numbers_read_as_ranges() {
        let row = |lun, until| QuarantineRow {
            lun,
            serial: None,
            until,
        };
        let day = 86_400;
        let rows = [
            row(6, 7 * day),
            row(1, 7 * day),
            row(3, 7 * day),
            row(4, 7 * day),
            row(5, 7 * day),
            row(7, 2 * day),
            row(9, 7 * day),
        ];
        assert_eq!(
            quarantine_ranges(&rows, 0),
            [
                "1 (7d 0h more)",
                "3-6 (7d 0h more)",
                "7 (2d 0h more)",
                "9 (7d 0h more)"
            ]
        );
    }
}
