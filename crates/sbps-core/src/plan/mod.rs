//! The plan: the smallest safe set of LIO changes that makes Actual match Desired.
//!
//! Pure: `plan(desired, actual, ledger, policy, now)` decides, the agent applies.
//! Every safety rule of the design lives here, where it is property-tested:
//!
//! 1. unknown is not absent: a projection the inventory could not see is held;
//! 3. own only what is ours: only fileio backstores whose file lies under the mount
//!    root are managed; anything else is reported and never touched;
//! 4. LUN numbers are identities: a projection keeps its number while desired (and
//!    gets its old number back after the target was cleared); a new projection gets
//!    the lowest number that is free, not reserved, not quarantined, and not 0;
//!    a freed number is quarantined; when adopting a target without a ledger (the
//!    original agent's, or after a corrupt ledger), every free number up to a margin
//!    above the highest LUN is quarantined too, since nothing says it was not freed a
//!    moment ago, and so is the number of an empty `lun_N` directory nobody explains;
//! 5. removal is conservative: only after the grace period, and a scan that would
//!    remove more than the brake ratio of the managed projections of one kind (PE or
//!    rootfs, judged apart) removes nothing of that kind;
//! 7. the TPG follows the node label, and is enabled only by a scan that leaves no
//!    image unknown unless it is already exported (so the map it opens is the whole
//!    map) and whose other operations all succeed (the apply phase order guarantees
//!    that).
//!
//! The rooms: this file walks the projections and the kernel's objects and builds the
//! plan; `policy.rs` holds the operator's settings and the removal rules (rule 5,
//! [`Policy`], [`brake_engages`]); `allocate.rs` the LUN numbers (rule 4):
//! allocation, quarantine, adoption ([`adoption_quarantine`]). Both rooms are private:
//! what other crates use of them is re-exported here.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};

use crate::desired::{Desired, Kind, Projection};
use crate::fleet::FleetView;
use crate::identity;
use crate::ledger::{Ledger, LunRecord, Quarantine};
use crate::lio::{Actual, Backstore, BackstoreRef, Op, Tpg};

pub(crate) mod allocate;
pub(crate) mod policy;

pub use allocate::{adoption_quarantine, MAX_ADOPTION_QUARANTINE, MAX_LUN};
use policy::PerKind;
pub use policy::{brake_engages, Policy};

/// Why a removal did not happen this scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum HoldReason {
    /// The inventory could not see this image.
    Unknown { detail: String },
    /// Known absent since `since`; removable at `remove_at`.
    Grace { since: u64, remove_at: u64 },
    /// The deletion brake: this scan would remove `removals` of the `managed`
    /// projections of this kind involved (exported or wanted).
    Brake {
        kind: Kind,
        removals: usize,
        managed: usize,
    },
    /// LUN numbers are frozen this scan ([`Policy::numbers_frozen`]).
    NumbersFrozen { detail: String },
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldReason::Unknown { detail } => write!(f, "state unknown: {detail}"),
            HoldReason::Grace { since, remove_at } => {
                write!(f, "absent since {since}, grace period until {remove_at}")
            }
            HoldReason::Brake {
                kind,
                removals,
                managed,
            } => write!(
                f,
                "deletion brake: this scan would remove {removals} of {managed} {kind} projections"
            ),
            HoldReason::NumbersFrozen { detail } => {
                write!(f, "LUN numbers cannot change now: {detail}")
            }
        }
    }
}

/// A projection that is no longer desired but stays for now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub at: BackstoreRef,
    pub serial: Option<String>,
    pub luns: Vec<u64>,
    pub reason: HoldReason,
}

/// A desired projection that gets no LUN this scan, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub serial: String,
    pub(crate) name: String,
    pub reason: String,
}

/// Something an operator should know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "warning", rename_all = "kebab-case")]
pub enum Warning {
    /// The configured target or its TPG does not exist: no LUN can be mapped.
    NoTarget,
    /// A PE object's content changed under the same key (same serial, new ETag).
    ContentChanged {
        serial: String,
        object_key: String,
        was: String,
        now: String,
    },
    /// A backstore is exported under more than one LUN; the extras are removed.
    DuplicateLun { serial: String, luns: Vec<u64> },
    /// Two desired projections share a backstore name (a 60-bit prefix collision).
    NameCollision { name: String },
    /// No LUN number is left.
    LunSpaceExhausted,
    /// The node is labelled and the TPG disabled, but it is not enabled this scan: these
    /// images are unknown and not exported, so the LUN map is not known to be whole.
    EnableHeld { unknown: Vec<String> },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::NoTarget => write!(f, "the configured iSCSI target/TPG does not exist; LUNs cannot be mapped"),
            Warning::ContentChanged { serial, object_key, was, now } => write!(
                f,
                "content of {object_key} changed under the same key (serial {serial}, ETag {was} -> {now}); initiators may read inconsistent data: publish new content under a new name"
            ),
            Warning::DuplicateLun { serial, luns } => {
                write!(f, "serial {serial} is exported at several LUNs {luns:?}")
            }
            Warning::NameCollision { name } => write!(f, "two images map to backstore name {name}"),
            Warning::LunSpaceExhausted => write!(f, "no free LUN number left"),
            Warning::EnableHeld { unknown } => write!(
                f,
                "TPG left disabled until nothing unknown is missing from the LUN map: {}",
                unknown.join("; ")
            ),
        }
    }
}

/// The result of planning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// In phase order.
    pub ops: Vec<Op>,
    pub held: Vec<Held>,
    /// Desired projections that wait for a LUN number.
    #[serde(default)]
    pub waiting: Vec<Waiting>,
    pub warnings: Vec<Warning>,
    /// Backstores LIO holds that the agent does not own.
    pub unmanaged: Vec<BackstoreRef>,
    /// The brake engaged this scan.
    pub brake: bool,
    /// The ledger to persist (before applying: quarantines are written ahead).
    pub ledger: Ledger,
}

/// Computes the plan for a node alone (no other node's ledger is known).
pub fn plan(
    desired: &Desired,
    actual: &Actual,
    ledger: &Ledger,
    policy: &Policy,
    now: u64,
) -> Plan {
    plan_in_fleet(desired, actual, ledger, policy, &FleetView::default(), now)
}

/// Computes the plan; a new image takes the number `fleet` (the other nodes' ledgers)
/// gave it, or one free on every node.
pub fn plan_in_fleet(
    desired: &Desired,
    actual: &Actual,
    ledger: &Ledger,
    policy: &Policy,
    fleet: &FleetView,
    now: u64,
) -> Plan {
    Planner::new(desired, actual, ledger, policy, fleet, now).run()
}

/// True when `path` lies strictly under `root`, compared lexically after removing
/// `.` components and trailing slashes (the kernel reports the path it was given).
pub fn under_root(path: &Path, root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // Fast path for the common, already-clean form `<root>/<relative path>`.
    let (p, r) = (path.as_os_str().as_bytes(), root.as_os_str().as_bytes());
    if let Some(rest) = p.strip_prefix(r).and_then(|rest| rest.strip_prefix(b"/")) {
        let clean = !rest.is_empty()
            && !r.ends_with(b"/")
            && rest
                .split(|b| *b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b"..");
        if clean {
            return true;
        }
    }
    fn parts(p: &Path) -> impl Iterator<Item = Option<&std::ffi::OsStr>> {
        p.components().filter_map(|c| match c {
            Component::Normal(s) => Some(Some(s)),
            Component::RootDir | Component::CurDir => None,
            Component::ParentDir | Component::Prefix(_) => Some(None),
        })
    }
    let mut p = parts(path);
    for r in parts(root) {
        match (r, p.next()) {
            (Some(r), Some(Some(c))) if r == c => {}
            _ => return false,
        }
    }
    // At least one more component, and no `..` anywhere after the root.
    let mut rest = p.peekable();
    rest.peek().is_some() && rest.all(|c| c.is_some())
}

// ---------------------------------------------------------------------------------------------
// Details.
//
// A scan plans for every image at once (10,000 and more), so the planner looks each thing up
// at most once and keys its tables by borrowed strings or positions: the desired projections
// and the ledger are both ordered by unit serial and are paired in one walk, each backstore's
// LUN numbers are collected in one pass over the TPG, and the tables only allocating a number
// needs are built when a number is allocated (never in the steady state). The ledger a plan
// returns shares the previous one's records until one of them changes (`ledger::Shared`).

/// One desired projection, with what the previous ledger remembers of it.
struct Want<'a> {
    /// Its key in `Desired::projections`: its unit serial.
    serial: &'a str,
    p: &'a Projection,
    /// The previous ledger's record of this serial.
    old: Option<&'a LunRecord>,
    /// A backstore that serves it exactly is kept this scan.
    kept: bool,
}

/// Pairs every desired projection with its record in the previous ledger. Both maps are
/// ordered by unit serial (`desired()` files each projection under its own serial), so one
/// walk over both replaces a tree search per projection. Also returns the serials the ledger
/// remembers that are not desired, in order.
fn pair_with_ledger<'a>(desired: &'a Desired, old: &'a Ledger) -> (Vec<Want<'a>>, Vec<&'a str>) {
    let mut records = old.luns.iter().peekable();
    let mut wants = Vec::with_capacity(desired.projections.len());
    let mut undesired = Vec::new();
    for (serial, p) in &desired.projections {
        let record = loop {
            let Some(&(s, r)) = records.peek() else {
                break None;
            };
            match s.cmp(serial) {
                Ordering::Less => undesired.push(s.as_str()),
                Ordering::Equal => {
                    records.next();
                    break Some(r);
                }
                Ordering::Greater => break None,
            }
            records.next();
        };
        // A projection filed under another key than its serial is looked up by its serial.
        let old_record = if p.identity.serial == *serial {
            record
        } else {
            old.luns.get(&p.identity.serial)
        };
        wants.push(Want {
            serial,
            p,
            old: old_record.map(|r| &**r),
            kept: false,
        });
    }
    undesired.extend(records.map(|(s, _)| s.as_str()));
    (wants, undesired)
}

/// The LUN numbers linking each backstore, in ascending order, gathered in one pass over the
/// TPG into one buffer (no vector per backstore).
struct LunsOf<'a> {
    /// Backstore → its number here, in order of first appearance.
    index: HashMap<&'a BackstoreRef, usize>,
    /// The LUNs of backstore number `b` are `luns[starts[b]..starts[b + 1]]`.
    starts: Vec<usize>,
    luns: Vec<u64>,
}

impl<'a> LunsOf<'a> {
    fn new(tpg: &'a Tpg) -> LunsOf<'a> {
        let mut index: HashMap<&BackstoreRef, usize> =
            HashMap::with_capacity_and_hasher(tpg.luns.len(), Default::default());
        let links: Vec<(usize, u64)> = tpg
            .luns
            .values()
            .filter_map(|l| {
                let next = index.len();
                Some((*index.entry(l.backstore.as_ref()?).or_insert(next), l.index))
            })
            .collect();
        // A counting sort by backstore, which keeps the ascending LUN order of each.
        let mut starts = vec![0; index.len() + 1];
        for (b, _) in &links {
            starts[b + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut next = starts.clone();
        let mut luns = vec![0; links.len()];
        for (b, lun) in links {
            luns[next[b]] = lun;
            next[b] += 1;
        }
        LunsOf {
            index,
            starts,
            luns,
        }
    }

    /// The LUN numbers linking the backstore at `at`.
    fn of(&self, at: &BackstoreRef) -> &[u64] {
        match self.index.get(at) {
            Some(&b) => &self.luns[self.starts[b]..self.starts[b + 1]],
            None => &[],
        }
    }
}

struct Planner<'a> {
    desired: &'a Desired,
    actual: &'a Actual,
    old: &'a Ledger,
    policy: &'a Policy,
    fleet: &'a FleetView,
    now: u64,
    ops: Vec<Op>,
    held: Vec<Held>,
    waiting: Vec<Waiting>,
    warnings: Vec<Warning>,
    unmanaged: Vec<BackstoreRef>,
    /// The previous ledger, patched where this scan changes it.
    ledger: Ledger,
    /// LUN numbers that exist (linked) and are not being unmapped.
    luns_taken: HashSet<u64>,
    /// HBA indexes in use or allocated (rtslib allocates across all plugins); built at the
    /// first backstore created.
    hbas_taken: Option<HashSet<u32>>,
    /// LUN numbers the ledger remembers, by number: not for other images. Built at the
    /// first number allocated.
    reserved: OnceCell<HashMap<u64, &'a str>>,
    /// Quarantined numbers by the serial that held them.
    quarantined_for: HashMap<&'a str, Vec<u64>>,
    /// Where the search for the lowest free number goes on.
    cursor: u64,
    /// Where the search for the lowest number free on every node goes on.
    fleet_cursor: u64,
    /// Where the search for a free HBA index goes on.
    hba_cursor: u32,
}

impl<'a> Planner<'a> {
    fn new(
        desired: &'a Desired,
        actual: &'a Actual,
        old: &'a Ledger,
        policy: &'a Policy,
        fleet: &'a FleetView,
        now: u64,
    ) -> Self {
        let mut ledger = old.clone();
        ledger.version = crate::ledger::VERSION;
        ledger.quarantine.retain(|_, q| q.until > now);
        let mut quarantined_for: HashMap<&str, Vec<u64>> = HashMap::default();
        for (n, q) in &old.quarantine {
            if let (Some(s), true, true) = (&q.serial, q.same_serial_may_return, q.until > now) {
                quarantined_for.entry(s.as_str()).or_default().push(*n);
            }
        }
        let luns = actual.tpg.as_ref().map_or(0, |t| t.luns.len());
        Planner {
            desired,
            actual,
            old,
            policy,
            fleet,
            now,
            ops: Vec::new(),
            held: Vec::new(),
            waiting: Vec::new(),
            warnings: Vec::new(),
            unmanaged: Vec::new(),
            ledger,
            reserved: OnceCell::new(),
            quarantined_for,
            cursor: 1,
            fleet_cursor: 1,
            hba_cursor: 0,
            luns_taken: HashSet::with_capacity_and_hasher(luns, Default::default()),
            hbas_taken: None,
        }
    }

    fn run(mut self) -> Plan {
        let Some(tpg) = &self.actual.tpg else {
            self.warnings.push(Warning::NoTarget);
            return self.finish(false, false);
        };
        // Empty LUN directories (interrupted creates) are cleaned up; their numbers are free.
        for l in tpg.luns.values() {
            if l.backstore.is_some() {
                self.luns_taken.insert(l.index);
            } else {
                self.ops.push(Op::UnmapLun {
                    lun: l.index,
                    serial: None,
                });
            }
        }
        self.quarantine_unexplained(tpg);
        let luns_of = LunsOf::new(tpg);
        let (mut wants, undesired) = pair_with_ledger(self.desired, self.old);

        // Which desired projection each managed backstore serves, by name.
        let mut wanted: HashMap<&str, usize> =
            HashMap::with_capacity_and_hasher(wants.len(), Default::default());
        for (i, w) in wants.iter().enumerate() {
            if wanted.insert(w.p.identity.name.as_str(), i).is_some() {
                self.warnings.push(Warning::NameCollision {
                    name: w.p.identity.name.clone(),
                });
            }
        }

        let mut removals: Vec<(&Backstore, &[u64])> = Vec::new();
        let mut garbage: Vec<(&Backstore, &[u64])> = Vec::new();
        let mut replaced: Vec<(&Backstore, &[u64])> = Vec::new();
        // The brake's base: every projection involved, exported or wanted, so that the
        // decision does not change once this scan's creations exist (idempotence). These
        // are the exported ones that are not desired, with their kind.
        let mut exported_only: HashMap<&str, Kind> = HashMap::default();
        // Serials LIO holds that no desired projection has: their ledger records stay and
        // their absences are timed.
        let mut present_undesired: HashSet<&str> = HashSet::default();

        for b in &self.actual.backstores {
            let luns = luns_of.of(&b.at);
            let want = wanted.get(b.at.name.as_str()).copied();
            // What the backstore is known by, and whether a desired projection has that
            // serial: usually the one wanted under its name, so no search is needed.
            let id = b.serial.as_deref().unwrap_or(b.at.name.as_str());
            let desired = want.is_some_and(|w| wants[w].serial == id)
                || self.desired.projections.contains_key(id);
            if b.serial.is_some() && !desired {
                present_undesired.insert(id);
            }
            if !self.is_managed(b, want.is_some()) {
                self.unmanaged.push(b.at.clone());
                continue;
            }
            if b.enabled && !desired {
                exported_only.insert(id, self.kind_of(b));
            }
            match want {
                Some(w) if !wants[w].kept && matches(b, wants[w].p) => {
                    wants[w].kept = true;
                    self.keep(b, &wants[w], luns);
                }
                // Same name, other content (or a second copy): replace, never rewrite in place.
                Some(_) => replaced.push((b, luns)),
                None if luns.is_empty() && !b.enabled => garbage.push((b, luns)),
                None => removals.push((b, luns)),
            }
        }

        // Replacements and garbage go now; their numbers are quarantined for good. While
        // numbers are frozen, an exported backstore being replaced stays as it is.
        if let Some(detail) = self.policy.numbers_frozen.clone() {
            replaced.retain(|(b, luns)| {
                let exported = !luns.is_empty();
                if exported {
                    self.held.push(Held {
                        at: b.at.clone(),
                        serial: b.serial.clone(),
                        luns: luns.to_vec(),
                        reason: HoldReason::NumbersFrozen {
                            detail: detail.clone(),
                        },
                    });
                }
                !exported
            });
        }
        for (b, luns) in replaced.into_iter().chain(garbage) {
            for lun in luns {
                self.unmap(*lun, b, false);
            }
            self.ops.push(Op::DeleteBackstore { at: b.at.clone() });
            if let Some(s) = &b.serial {
                // `wants` is ordered by serial.
                let kept = wants
                    .binary_search_by(|w| w.serial.cmp(s))
                    .is_ok_and(|i| wants[i].kept);
                if !kept {
                    self.ledger.luns.remove(s);
                }
            }
        }

        let mut managed = PerKind::default();
        for kind in wants
            .iter()
            .map(|w| w.p.kind)
            .chain(exported_only.into_values())
        {
            *managed.of(kind) += 1;
        }
        self.removals(removals, managed);

        // New projections: those the ledger remembers first, then by serial.
        let mut creates: Vec<&Want> = wants.iter().filter(|w| !w.kept).collect();
        creates.sort_by(|a, b| {
            (a.old.is_none(), &a.p.identity.serial).cmp(&(b.old.is_none(), &b.p.identity.serial))
        });
        for w in creates {
            self.create(w.p, w.old);
        }

        // Ledger records of images that are neither desired nor in LIO (the target was
        // cleared while they were absent): free their numbers through quarantine.
        for s in undesired {
            if present_undesired.contains(s)
                || self.uncertain_why(Some(s)).is_some()
                || self.policy.numbers_frozen.is_some()
            {
                continue;
            }
            if let Some(r) = self.ledger.luns.remove(s) {
                self.quarantine(r.lun, Some(s.to_string()), r.etag.clone(), r.size, true);
            }
        }
        // Absences are timed only for what LIO still holds and nobody wants.
        self.ledger
            .absent_since
            .retain(|s, _| present_undesired.contains(s.as_str()));

        // Empty HBA directories left by interrupted creates.
        let mut used: Vec<u32> = self
            .actual
            .backstores
            .iter()
            .filter(|b| b.at.plugin == "fileio")
            .map(|b| b.at.hba)
            .collect();
        used.sort_unstable();
        for (plugin, hba) in &self.actual.hbas {
            if plugin == "fileio" && used.binary_search(hba).is_err() {
                self.ops.push(Op::RemoveEmptyHba {
                    plugin: plugin.clone(),
                    hba: *hba,
                });
            }
        }

        // A target that is enabled but maps nothing while this node has images to serve was
        // rebuilt or cleared (CSM's provisioning recreates it enabled and empty): initiators
        // must not flood an empty LUN map while it is filled again, nor log in to half of it.
        let maps_any = tpg.luns.values().any(|l| l.backstore.is_some());
        let has_work = !self.desired.projections.is_empty() || !self.old.luns.is_empty();
        let opened_empty = tpg.enabled && !maps_any && has_work;
        let enabled = tpg.enabled;
        self.finish(enabled, opened_empty)
    }

    fn finish(mut self, tpg_enabled: bool, opened_empty: bool) -> Plan {
        let has_tpg = self.actual.tpg.is_some();
        // Rule 7: enabled only by a scan after which the LUN map is whole, so initiators
        // never log in to a half-built one. `apply` further skips it when any earlier
        // op of the scan failed.
        match self.policy.labelled {
            Some(false) if has_tpg && tpg_enabled => self.ops.push(Op::DisableTpg),
            // A rebuilt target: disabled first, enabled again in the same scan only when
            // this scan puts every image back (apply skips the enable when an op failed).
            _ if opened_empty => {
                self.ops.push(Op::DisableTpg);
                let unknown = self.unknown_and_not_exported();
                if !unknown.is_empty() {
                    self.warnings.push(Warning::EnableHeld { unknown });
                } else if self.waiting.is_empty() {
                    self.ops.push(Op::EnableTpg)
                }
            }
            // Images waiting for a number are missing from the map as well.
            Some(true) if has_tpg && !tpg_enabled => {
                let unknown = self.unknown_and_not_exported();
                if !unknown.is_empty() {
                    self.warnings.push(Warning::EnableHeld { unknown });
                } else if self.waiting.is_empty() {
                    self.ops.push(Op::EnableTpg)
                }
            }
            _ => {}
        }
        self.ops.sort_by_key(|o| o.phase());
        // Kept through the apply and in the report: not in a vector grown to twice its
        // length (a cold plan at thousands of images has two ops per image).
        self.ops.shrink_to_fit();
        let brake = self
            .held
            .iter()
            .any(|h| matches!(h.reason, HoldReason::Brake { .. }));
        Plan {
            ops: self.ops,
            held: self.held,
            waiting: self.waiting,
            warnings: self.warnings,
            unmanaged: self.unmanaged,
            brake,
            ledger: self.ledger,
        }
    }

    /// Rule 7: what this scan could not see that may belong in the LUN map: a source
    /// that did not answer, or an image (served by the ledger or wanted by the
    /// inventory) that is unknown and not already exported. Empty: the map is whole.
    fn unknown_and_not_exported(&self) -> Vec<String> {
        const SHOWN: usize = 5;
        let u = &self.desired.uncertainty;
        let mut out: Vec<String> = u.everything.iter().chain(&u.rootfs).cloned().collect();
        let exported = self.actual.lun_by_serial();
        let serials = u
            .serials
            .iter()
            .filter(|s| !exported.contains_key(s.as_str()));
        out.extend(serials.map(|s| format!("serial {s}")));
        if !u.images.is_empty() {
            let exported_ids: HashSet<&str> = self
                .old
                .luns
                .iter()
                .filter(|(s, _)| exported.contains_key(s.as_str()))
                .filter_map(|(_, r)| r.image_id.as_deref())
                .collect();
            let images = u
                .images
                .iter()
                .filter(|i| !exported_ids.contains(i.as_str()));
            out.extend(images.map(|i| format!("IMS image {i}")));
        }
        if u.unattributed > 0 {
            out.push(format!("{} unreadable IMS record(s)", u.unattributed));
        }
        if out.len() > SHOWN {
            let more = out.len() - SHOWN;
            out.truncate(SHOWN);
            out.push(format!("{more} more"));
        }
        out
    }

    /// Rule 3: fileio, file under the mount root; or (an interrupted create with no
    /// file recorded yet) a derived name that the agent wants or remembers.
    fn is_managed(&self, b: &Backstore, name_wanted: bool) -> bool {
        if b.at.plugin != "fileio" {
            return false;
        }
        match &b.dev {
            Some(dev) => under_root(dev, &self.policy.mount),
            None => {
                identity::is_derived_name(&b.at.name)
                    && (name_wanted || self.old.luns.values().any(|r| r.name == b.at.name))
            }
        }
    }

    fn keep(&mut self, b: &Backstore, w: &Want<'a>, luns: &[u64]) {
        let (p, old) = (w.p, w.old);
        let serial = &p.identity.serial;
        self.ledger.absent_since.remove(serial);
        let remembered = old.map(|r| r.lun);
        let keep_lun = match (luns, remembered) {
            ([], _) => None,
            (ls, Some(r)) if ls.contains(&r) => Some(r),
            (ls, _) => ls.iter().copied().min(),
        };
        if luns.len() > 1 {
            self.warnings.push(Warning::DuplicateLun {
                serial: serial.clone(),
                luns: luns.to_vec(),
            });
            // The extras are freed through quarantine: not while numbers are frozen.
            let extras = if self.policy.numbers_frozen.is_some() {
                &[][..]
            } else {
                luns
            };
            for l in extras.iter().filter(|l| Some(**l) != keep_lun) {
                self.unmap(*l, b, true);
            }
        }
        if p.kind == Kind::Pe {
            if let Some(was) = old.and_then(|r| r.etag.as_ref()) {
                if *was != p.etag {
                    self.warnings.push(Warning::ContentChanged {
                        serial: serial.clone(),
                        object_key: p.object_key.clone(),
                        was: was.clone(),
                        now: p.etag.clone(),
                    });
                }
            }
        }
        let lun = match keep_lun {
            Some(l) => l,
            None => match self.allocate(p) {
                Some(l) => {
                    self.ops.push(Op::MapLun {
                        lun: l,
                        at: b.at.clone(),
                        alias: alias_for(serial),
                    });
                    l
                }
                None => return,
            },
        };
        self.record(p, lun, old);
    }

    /// Creates `p`'s backstore and maps it; `old` is the previous ledger's record of it.
    /// The number comes first: a backstore that could get no LUN would only be garbage.
    fn create(&mut self, p: &Projection, old: Option<&LunRecord>) {
        self.ledger.absent_since.remove(&p.identity.serial);
        let Some(lun) = self.allocate(p) else {
            return;
        };
        let hba = self.allocate_hba();
        let at = BackstoreRef::fileio(hba, &p.identity.name);
        self.ops.push(Op::CreateBackstore {
            at: at.clone(),
            path: p.path.clone(),
            size: p.size,
            serial: p.identity.serial.clone(),
        });
        self.ops.push(Op::MapLun {
            lun,
            at,
            alias: alias_for(&p.identity.serial),
        });
        self.record(p, lun, old.filter(|r| r.lun == lun));
    }

    fn record(&mut self, p: &Projection, lun: u64, old: Option<&LunRecord>) {
        self.luns_taken.insert(lun);
        if let Some(o) = old {
            // Steady state: nothing to write (and nothing to allocate).
            if o.lun == lun
                && o.size == Some(p.size)
                && o.image_id == p.image_id
                && o.kind == Some(p.kind)
                && o.key.as_deref() == Some(p.key.as_str())
                && o.etag.is_some()
            {
                return;
            }
        }
        let rec = LunRecord {
            lun,
            name: p.identity.name.clone(),
            kind: Some(p.kind),
            key: Some(p.key.clone()),
            image_id: p.image_id.clone(),
            etag: old
                .and_then(|r| r.etag.clone())
                .or_else(|| Some(p.etag.clone())),
            size: Some(p.size),
            since: old.map(|r| r.since).unwrap_or(self.now),
        };
        self.ledger
            .luns
            .insert(p.identity.serial.clone(), Arc::new(rec));
    }

    /// The kind of a managed backstore: what the ledger recorded, else what its file says
    /// (PE images are the objects under `PE/`).
    fn kind_of(&self, b: &Backstore) -> Kind {
        let recorded = b.serial.as_deref().and_then(|s| self.old.luns.get(s)?.kind);
        recorded.unwrap_or_else(|| {
            let pe = b.dev.as_deref().is_some_and(|d| {
                d.strip_prefix(&self.policy.mount)
                    .is_ok_and(|rel| rel.starts_with(crate::desired::PE_PREFIX))
            });
            if pe {
                Kind::Pe
            } else {
                Kind::Rootfs
            }
        })
    }

    /// Rule 1: why this serial's absence cannot be trusted, if it cannot.
    fn uncertain_why(&self, serial: Option<&str>) -> Option<String> {
        let u = &self.desired.uncertainty;
        if let Some(e) = &u.everything {
            return Some(e.clone());
        }
        if serial.is_some_and(|s| u.serials.contains(s)) {
            return Some("the inventory could not tell whether this image is still wanted".into());
        }
        let rec = serial.and_then(|s| self.old.luns.get(s));
        if let Some(e) = &u.rootfs {
            if rec.and_then(|r| r.kind) != Some(Kind::Pe) {
                return Some(e.clone());
            }
        }
        if !u.images.is_empty() {
            match rec.and_then(|r| r.image_id.as_ref()) {
                Some(id) if u.images.contains(id) => {
                    return Some(format!("manifest of IMS image {id} unavailable"))
                }
                Some(_) => {}
                None if rec.and_then(|r| r.kind) == Some(Kind::Pe) => {}
                None => return Some(format!("{} IMS image(s) could not be evaluated and this backstore cannot be attributed", u.images.len())),
            }
        }
        None
    }
}

/// A backstore serves a projection exactly when name, serial, file and size agree
/// and the kernel has it open.
fn matches(b: &Backstore, p: &Projection) -> bool {
    b.enabled
        && b.serial.as_deref() == Some(p.identity.serial.as_str())
        && b.size == Some(p.size)
        && b.dev.as_deref().is_some_and(|d| same_path(d, &p.path))
}

fn same_path(a: &Path, b: &Path) -> bool {
    a.as_os_str() == b.as_os_str() || a.components().eq(b.components())
}

/// The LUN symlink name: stable, derived from the serial (rtslib uses 10 random hex).
pub fn alias_for(serial: &str) -> String {
    serial.chars().take(10).collect()
}
