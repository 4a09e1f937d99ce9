//! LUN numbers are identities (rule 4): the number a new projection takes (the one the
//! fleet gave its serial, else the lowest free one that is not reserved, not
//! quarantined and not 0), the quarantine of freed and unexplained numbers, what an
//! adoption quarantines, and the HBA index of a new backstore.

use super::*;

/// Highest LUN number handed out (rtslib's MAX_TARGET_LUN).
pub const MAX_LUN: u64 = 65535;

/// The most numbers one adoption quarantines (the lowest ones), whatever the highest LUN
/// seen: a stray high number (an administrator's `lun=60000`) must neither fill the ledger
/// nor leave new images without a number. 61,439 numbers stay free.
pub const MAX_ADOPTION_QUARANTINE: u64 = 4096;

/// Rule 4 at adoption: the numbers to quarantine when this agent has no history of the
/// target (no ledger: the original agent's target, a corrupt ledger, a rebuilt worker).
///
/// The original allocated the lowest free number and reused freed numbers at once, so
/// every free number below the highest LUN it mapped was in use when that one was
/// mapped, and may have been freed a moment ago with initiators still holding it. Above
/// the highest LUN, a number was used only if the map was once bigger: by as many LUNs
/// as images were retired since, or lost at once (the original removed an image on any
/// error about it). `above` numbers past the highest LUN seen (past 0 when the target has
/// none, as after a rebuild) cover that. Taken numbers and 0 (never given to a new image
/// anyway) are left out, and at most [`MAX_ADOPTION_QUARANTINE`] numbers are returned,
/// the lowest first.
pub fn adoption_quarantine(
    highest: Option<u64>,
    taken: impl Fn(u64) -> bool,
    above: u64,
) -> Vec<u64> {
    let top = highest.unwrap_or(0).saturating_add(above).min(MAX_LUN);
    (1..=top)
        .filter(|n| !taken(*n))
        .take(MAX_ADOPTION_QUARANTINE as usize)
        .collect()
}

impl<'a> Planner<'a> {
    /// Unmaps `lun` of `b` and quarantines the number.
    pub(super) fn unmap(&mut self, lun: u64, b: &Backstore, same_serial_may_return: bool) {
        self.ops.push(Op::UnmapLun {
            lun,
            serial: b.serial.clone(),
        });
        self.luns_taken.remove(&lun);
        let rec = b.serial.as_ref().and_then(|s| self.old.luns.get(s));
        self.quarantine(
            lun,
            b.serial.clone(),
            rec.and_then(|r| r.etag.clone()),
            b.size,
            same_serial_may_return,
        );
    }

    /// Rule 4 for numbers no record explains; see [`adoption_quarantine`].
    ///
    /// An empty `lun_N` directory is what an interrupted create or unmap leaves. When
    /// the ledger neither reserves its number for an image (this agent's own create)
    /// nor quarantines it already (this agent's own unmap), another tool was unmapping
    /// it (targetcli, the original agent): an initiator may still hold the number.
    pub(super) fn quarantine_unexplained(&mut self, tpg: &Tpg) {
        for l in tpg.luns.values().filter(|l| l.backstore.is_none()) {
            let n = l.index;
            let explained = self.ledger.quarantine.contains_key(&n)
                || self.old.luns.values().any(|r| r.lun == n);
            if n != 0 && !explained {
                self.quarantine(n, None, None, None, false);
            }
        }
        let fresh = self.old.luns.is_empty()
            && self.old.quarantine.is_empty()
            && self.old.last_converged.is_none();
        if !fresh {
            return;
        }
        let highest = tpg.luns.keys().next_back().copied();
        let taken = &self.luns_taken;
        let numbers = adoption_quarantine(
            highest,
            |n| taken.contains(&n),
            self.policy.adoption_quarantine_above,
        );
        for n in numbers {
            self.quarantine(n, None, None, None, false);
        }
    }

    pub(super) fn quarantine(
        &mut self,
        lun: u64,
        serial: Option<String>,
        etag: Option<String>,
        size: Option<u64>,
        same: bool,
    ) {
        self.ledger.quarantine.insert(
            lun,
            Quarantine {
                serial,
                etag,
                size,
                same_serial_may_return: same,
                until: self.now.saturating_add(self.policy.quarantine_secs),
            },
        );
    }

    /// Rule 4: the remembered number if it is still this image's to take, else a
    /// number quarantined for this very image and content, else the lowest number
    /// that is not 0, not taken, not reserved and not quarantined.
    pub(super) fn allocate(&mut self, p: &Projection) -> Option<u64> {
        let serial = p.identity.serial.as_str();
        let remembered = self.ledger.lun_of(serial);
        let candidates: Vec<u64> = remembered
            .into_iter()
            .chain(
                self.quarantined_for
                    .get(serial)
                    .cloned()
                    .unwrap_or_default(),
            )
            .collect();
        for n in candidates {
            if self.may_take(n, p, remembered == Some(n), false) {
                return Some(self.take(n));
            }
        }
        if let Some(reason) = &self.policy.numbers_frozen {
            self.waiting.push(Waiting {
                serial: serial.to_string(),
                name: p.identity.name.clone(),
                reason: format!("waits for a LUN number: {reason}"),
            });
            return None;
        }
        // The number the other nodes gave this image, so every worker presents it alike.
        if let Some(n) = self.fleet.hint(serial) {
            if self.may_take(n, p, false, true) {
                return Some(self.take(n));
            }
        }
        // Else the lowest number free here and on every other node. Nothing is freed while
        // creating, so neither search ever needs to look back.
        if !self.fleet.is_empty() {
            while self.fleet_cursor <= MAX_LUN {
                let n = self.fleet_cursor;
                self.fleet_cursor += 1;
                if !self.fleet.busy(n) && self.may_take(n, p, false, false) {
                    return Some(self.take(n));
                }
            }
        }
        while self.cursor <= MAX_LUN {
            let n = self.cursor;
            self.cursor += 1;
            if self.may_take(n, p, false, false) {
                return Some(self.take(n));
            }
        }
        self.warnings.push(Warning::LunSpaceExhausted);
        None
    }

    /// `fleet_hint`: `n` is the number the other workers gave this image. It then wins over
    /// a quarantine of an unknown holder (adoption's margin, an unexplained empty LUN): an
    /// initiator that held `n` on this worker held it for this image if the worker
    /// followed the fleet, and the fleet's number is what every other path shows for it.
    pub(super) fn may_take(
        &self,
        n: u64,
        p: &Projection,
        remembered: bool,
        fleet_hint: bool,
    ) -> bool {
        let serial = p.identity.serial.as_str();
        // 0 only back to the image that already had it: an unmapped LUN 0 silently
        // serves zeros, so no new image starts there.
        if (n == 0 && !remembered) || self.luns_taken.contains(&n) {
            return false;
        }
        let reserved = self.reserved.get_or_init(|| {
            let remembered = self.old.luns.iter();
            remembered.map(|(s, r)| (r.lun, s.as_str())).collect()
        });
        if reserved.get(&n).is_some_and(|s| *s != serial) {
            return false;
        }
        match self.ledger.quarantine.get(&n) {
            None => true,
            Some(q) if fleet_hint && q.serial.is_none() => true,
            Some(q) => {
                q.same_serial_may_return
                    && q.serial.as_deref() == Some(serial)
                    && q.size == Some(p.size)
                    && q.etag.as_deref().is_none_or(|e| e == p.etag)
            }
        }
    }

    pub(super) fn take(&mut self, n: u64) -> u64 {
        self.ledger.quarantine.remove(&n);
        self.luns_taken.insert(n);
        n
    }

    /// rtslib's rule: the first index unused by any HBA of any plugin.
    /// HBAs are only ever added while planning, so the search goes on where it stopped.
    pub(super) fn allocate_hba(&mut self) -> u32 {
        let actual = self.actual;
        let taken = self.hbas_taken.get_or_insert_with(|| {
            let dirs = actual.hbas.iter().map(|(_, i)| *i);
            dirs.chain(actual.backstores.iter().map(|b| b.at.hba))
                .collect()
        });
        while taken.contains(&self.hba_cursor) {
            self.hba_cursor += 1;
        }
        taken.insert(self.hba_cursor);
        self.hba_cursor
    }
}
