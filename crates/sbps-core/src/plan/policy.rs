//! What the operator set (the [`Policy`]) and the removal rules it drives: rule 5,
//! removal is conservative (the grace period, and the deletion brake judged per kind).

use super::*;

/// What the policy says; all durations in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub mount: PathBuf,
    /// How long an image must be known absent before its LUN is removed.
    pub grace_secs: u64,
    /// How long a freed LUN number stays unused.
    pub quarantine_secs: u64,
    /// Adopting a target without a ledger: how many numbers above the highest LUN seen
    /// are quarantined besides the gaps below it (the original may have freed them).
    pub adoption_quarantine_above: u64,
    /// A scan removing more than this share of the managed projections of one kind
    /// removes nothing of that kind.
    pub brake_ratio: f64,
    /// …unless it removes at most this many.
    pub brake_min: usize,
    /// Release the brake for this scan (operator override).
    pub brake_released: bool,
    /// The node label: `Some(true)` labelled, `Some(false)` not, `None` unknown.
    pub labelled: Option<bool>,
    /// Why no LUN number may be taken or freed this scan, when none may: the ledger
    /// kept in the Kubernetes API cannot be read or written, so a change of number
    /// could not be made durable off the node before it reaches the kernel. New
    /// images then wait and nothing exported is removed; what is exported is kept.
    #[serde(default)]
    pub numbers_frozen: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mount: PathBuf::from("/var/lib/cps-local/boot-images"),
            grace_secs: 600,
            quarantine_secs: 7 * 24 * 3600,
            adoption_quarantine_above: 256,
            brake_ratio: 0.5,
            brake_min: 2,
            brake_released: false,
            labelled: Some(true),
            numbers_frozen: None,
        }
    }
}

/// Projections (managed, or to be removed) counted per kind, for the brake.
#[derive(Default)]
pub(super) struct PerKind {
    pub(super) pe: usize,
    pub(super) rootfs: usize,
}

impl PerKind {
    pub(super) fn of(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Pe => &mut self.pe,
            Kind::Rootfs => &mut self.rootfs,
        }
    }
}

/// Rule 5: does removing `removals` of `managed` projections (of one kind) engage the brake?
pub fn brake_engages(removals: usize, managed: usize, policy: &Policy) -> bool {
    removals > policy.brake_min && (removals as f64) > policy.brake_ratio * (managed as f64)
}

impl<'a> Planner<'a> {
    pub(super) fn removals(&mut self, candidates: Vec<(&Backstore, &[u64])>, mut managed: PerKind) {
        let mut due = Vec::new();
        for (b, luns) in candidates {
            let serial = b.serial.clone();
            if let Some(detail) = self.policy.numbers_frozen.clone() {
                self.held.push(Held {
                    at: b.at.clone(),
                    serial,
                    luns: luns.to_vec(),
                    reason: HoldReason::NumbersFrozen { detail },
                });
                continue;
            }
            if let Some(detail) = self.uncertain_why(serial.as_deref()) {
                self.held.push(Held {
                    at: b.at.clone(),
                    serial,
                    luns: luns.to_vec(),
                    reason: HoldReason::Unknown { detail },
                });
                continue;
            }
            let key = serial.clone().unwrap_or_else(|| b.at.to_string());
            let since = *self.ledger.absent_since.entry(key).or_insert(self.now);
            let remove_at = since.saturating_add(self.policy.grace_secs);
            if self.now < remove_at {
                self.held.push(Held {
                    at: b.at.clone(),
                    serial,
                    luns: luns.to_vec(),
                    reason: HoldReason::Grace { since, remove_at },
                });
                continue;
            }
            due.push((b, luns));
        }
        // The brake is judged per kind: PE projections (many, stable) must not dilute
        // a mass removal of rootfs images, nor the other way round.
        let mut removals = PerKind::default();
        for (b, _) in &due {
            *removals.of(self.kind_of(b)) += 1;
        }
        let braked: Vec<Kind> = [Kind::Pe, Kind::Rootfs]
            .into_iter()
            .filter(|k| {
                !self.policy.brake_released
                    && brake_engages(*removals.of(*k), *managed.of(*k), self.policy)
            })
            .collect();
        let (held, due): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|(b, _)| braked.contains(&self.kind_of(b)));
        for (b, luns) in held {
            let kind = self.kind_of(b);
            self.held.push(Held {
                at: b.at.clone(),
                serial: b.serial.clone(),
                luns: luns.to_vec(),
                reason: HoldReason::Brake {
                    kind,
                    removals: *removals.of(kind),
                    managed: *managed.of(kind),
                },
            });
        }
        for (b, luns) in due {
            for l in luns {
                self.unmap(*l, b, true);
            }
            self.ops.push(Op::DeleteBackstore { at: b.at.clone() });
            let key = b.serial.clone().unwrap_or_else(|| b.at.to_string());
            self.ledger.luns.remove(&key);
            self.ledger.absent_since.remove(&key);
        }
    }
}
