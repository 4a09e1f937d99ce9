//! Properties of `plan()` over generated histories: many scans in a row, each with a
//! random desired set, random unknowns, random clock steps, and now and then a
//! cleared target or a re-uploaded image. Every scan's plan is applied to the model
//! of the kernel (`Actual::apply`) and the invariants are checked on the way.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use sbps_marshal::desired::{Desired, Projection};
use sbps_marshal::ledger::Ledger;
use sbps_marshal::lio::{Actual, Op};
use sbps_marshal::plan::{brake_engages, plan, under_root, Policy};

const UNIVERSE: usize = 14;

/// One scan of a history.
#[derive(Debug, Clone)]
struct Step {
    /// Which images are wanted (bit i = image i).
    wanted: u16,
    /// Which images are unknown this scan.
    unknown: u16,
    /// Seconds since the previous scan.
    dt: u64,
    /// Clear the whole target before this scan (targetctl clear, node rebuild).
    clear: bool,
    /// Re-upload image `i` with another size before this scan.
    resize: Option<usize>,
    /// IMS failed this scan.
    ims_down: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        any::<u16>(),
        prop_oneof![3 => Just(0u16), 1 => any::<u16>()],
        prop_oneof![Just(0u64), 1..120u64, 500..4000u64],
        prop::bool::weighted(0.05),
        prop::option::weighted(0.1, 0..UNIVERSE),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(wanted, unknown, dt, clear, resize, ims_down)| Step {
            wanted,
            unknown,
            dt,
            clear,
            resize,
            ims_down,
        })
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (
        0..1000u64,
        0..5000u64,
        prop_oneof![Just(0.5f64), Just(0.25), Just(1.0)],
        0..4usize,
    )
        .prop_map(|(g, q, r, m)| Policy {
            grace_secs: g,
            quarantine_secs: q,
            brake_ratio: r,
            brake_min: m,
            ..policy()
        })
}

/// Image i: even ones are PE objects, odd ones IMS rootfs images.
fn image(i: usize, size: u64) -> Projection {
    if i.is_multiple_of(2) {
        pe(i, size, &format!("etag-{size}"))
    } else {
        rootfs(i, size)
    }
}

fn desired_for(s: &Step, sizes: &[u64]) -> Desired {
    let mut d = Desired::default();
    for (i, size) in sizes.iter().enumerate().take(UNIVERSE) {
        let p = image(i, *size);
        let unknown = s.unknown & (1 << i) != 0 || (s.ims_down && i % 2 == 1);
        if unknown {
            d.uncertainty.serials.insert(p.identity.serial.clone());
        } else if s.wanted & (1 << i) != 0 {
            d.projections.insert(p.identity.serial.clone(), p);
        }
    }
    if s.ims_down {
        d.uncertainty.rootfs = Some("IMS unavailable".into());
    }
    d
}

/// The target CSM provisions plus an administrator's own backstore we must not touch.
fn initial() -> Actual {
    let mut a = empty_target(true);
    add_foreign(&mut a, "admin", 0, Some(5));
    a
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_histories(pol in policy_strategy(), steps in prop::collection::vec(step(), 1..25)) {
        let mut actual = initial();
        let mut ledger = Ledger::new();
        let mut now = 1_000_000u64;
        let mut sizes: Vec<u64> = (0..UNIVERSE as u64).map(|i| 1000 + i).collect();
        // LUN number -> (time freed, serial that held it)
        let mut freed: BTreeMap<u64, (u64, Option<String>)> = BTreeMap::new();
        let mut prev_lun: BTreeMap<String, (u64, u64)> = BTreeMap::new(); // serial -> (lun, size)

        for s in &steps {
            now += s.dt;
            if s.clear {
                actual = initial();
            }
            if let Some(i) = s.resize {
                sizes[i] += 7;
            }
            let desired = desired_for(s, &sizes);
            let p = plan(&desired, &actual, &ledger, &pol, now);

            let managed_serials: BTreeSet<String> = actual
                .backstores
                .iter()
                .filter(|b| b.dev.as_deref().is_some_and(|d| under_root(d, &pol.mount_root)))
                .filter_map(|b| b.serial.clone())
                .collect();
            let serial_at: BTreeMap<u64, Option<String>> = actual
                .tpg
                .iter()
                .flat_map(|t| t.luns.values())
                .map(|l| {
                    let s = l.backstore.as_ref().and_then(|b| actual.backstores.iter().find(|x| &x.at == b)).and_then(|b| b.serial.clone());
                    (l.index, s)
                })
                .collect();

            for op in &p.ops {
                match op {
                    // Only owned objects are ever removed.
                    Op::DeleteBackstore { at } => {
                        let b = actual.backstores.iter().find(|b| &b.at == at).expect("deletes an existing backstore");
                        prop_assert!(b.dev.as_deref().is_some_and(|d| under_root(d, &pol.mount_root)), "deleted unowned {at}");
                        // Unknown images are never removed.
                        if let Some(serial) = &b.serial {
                            prop_assert!(!desired.uncertainty.serials.contains(serial) || desired.projections.contains_key(serial), "removed unknown {serial}");
                        }
                    }
                    Op::UnmapLun { lun, serial: Some(serial) } => {
                        prop_assert!(managed_serials.contains(serial), "unmapped LUN {lun} of unowned {serial}");
                        prop_assert!(!desired.uncertainty.serials.contains(serial), "unmapped unknown {serial}");
                        freed.insert(*lun, (now, Some(serial.clone())));
                    }
                    Op::MapLun { lun, at, .. } => {
                        let serial = desired.projections.values().find(|p| p.identity.name == at.name).map(|p| p.identity.serial.clone());
                        // 0 is never handed out (no history starts with anything of ours at 0).
                        prop_assert_ne!(*lun, 0);
                        prop_assert!(serial_at.get(lun).is_none_or(|s| s.is_none()), "mapped over a live LUN {lun}");
                        // No number carries other content inside its quarantine.
                        if let Some((t, who)) = freed.get(lun) {
                            if who != &serial {
                                prop_assert!(now >= t + pol.quarantine_secs, "LUN {lun} reused at {now}, freed at {t} by {who:?}");
                            }
                        }
                    }
                    _ => {}
                }
            }
            // The brake holds every removal of an absent image.
            if p.brake {
                for op in &p.ops {
                    if let Op::DeleteBackstore { at } = op {
                        prop_assert!(desired.projections.values().any(|d| d.identity.name == at.name), "brake engaged but {at} removed");
                    }
                }
            }
            let removed_absent = p.ops.iter().filter(|o| matches!(o, Op::DeleteBackstore { at } if !desired.projections.values().any(|d| d.identity.name == at.name))).count();
            if removed_absent > 0 && !pol.brake_released {
                let mut involved: BTreeSet<String> = desired.projections.keys().cloned().collect();
                involved.extend(actual.backstores.iter().filter(|b| b.enabled && b.dev.as_deref().is_some_and(|d| under_root(d, &pol.mount_root))).filter_map(|b| b.serial.clone()));
                let managed = involved.len();
                prop_assert!(!brake_engages(removed_absent, managed, &pol), "{removed_absent} of {managed} removed past the brake");
            }

            for op in &p.ops {
                actual.apply(op);
            }
            ledger = p.ledger.clone();

            // Idempotence: planning again against the result changes nothing.
            let again = plan(&desired, &actual, &ledger, &pol, now);
            prop_assert!(again.ops.is_empty(), "not idempotent: {:?}", again.ops);

            // Forget images that are no longer exported: a later return may take a new number.
            prev_lun.retain(|serial, _| lun_of(&actual, serial).is_some());
            // Every desired image is exported, and keeps its number while it stays desired.
            for (serial, proj) in &desired.projections {
                let lun = lun_of(&actual, serial);
                prop_assert!(lun.is_some(), "{serial} not exported");
                let lun = lun.unwrap_or_default();
                if let Some((was, size)) = prev_lun.get(serial) {
                    if *size == proj.size {
                        prop_assert_eq!(*was, lun, "{} moved from LUN {} to {}", serial, was, lun);
                    }
                }
                prev_lun.insert(serial.clone(), (lun, proj.size));
            }
            // The administrator's object is still there at its number.
            prop_assert!(actual.backstores.iter().any(|b| b.at.name == "admin"));
            prop_assert!(actual.tpg.as_ref().is_some_and(|t| t.luns.contains_key(&5)));
            // No backstore is exported twice.
            let mut seen = BTreeSet::new();
            for l in actual.tpg.iter().flat_map(|t| t.luns.values()) {
                if let Some(b) = &l.backstore {
                    prop_assert!(seen.insert(b.clone()), "{b} exported twice");
                }
            }
        }
    }

    /// Adopting any target the original could have left (LUNs with gaps, empty `lun_N`
    /// directories, a stray high number), with no ledger: a new image never takes a free
    /// number at or below the margin above the highest one seen, the quarantine holds only
    /// free non-zero numbers and stays bounded, and every new image still gets a number.
    #[test]
    fn adoption_quarantines_what_the_original_may_have_freed(
        used in prop::collection::btree_set(prop_oneof![9 => 0..64u64, 1 => 0..65_536u64], 0..12),
        empty in prop::collection::btree_set(0..80u64, 0..3),
        above in prop_oneof![Just(0u64), 0..300u64, Just(256)],
        new in 1..4usize,
    ) {
        let mut actual = empty_target(true);
        for (i, lun) in used.iter().enumerate() {
            add_exported(&mut actual, &image(i, 1000), i as u32, *lun);
        }
        let tpg = actual.tpg.as_mut().expect("tpg");
        for n in empty.iter().filter(|n| !used.contains(n)) {
            tpg.luns.insert(*n, sbps_marshal::lio::Lun { index: *n, alias: None, backstore: None });
        }
        let highest = tpg.luns.keys().next_back().copied();
        let mut d = Desired::default();
        for i in 0..used.len() + new {
            let p = image(i, 1000);
            d.projections.insert(p.identity.serial.clone(), p);
        }
        let pol = Policy { adoption_quarantine_above: above, ..policy() };
        let p = plan(&d, &actual, &Ledger::new(), &pol, 1_000_000);

        let top = highest.unwrap_or(0).saturating_add(above).min(sbps_marshal::plan::MAX_LUN);
        let bounded = top <= sbps_marshal::plan::MAX_ADOPTION_QUARANTINE;
        let quarantined: BTreeSet<u64> = p.ledger.quarantine.keys().copied().collect();
        prop_assert!(quarantined.len() as u64 <= sbps_marshal::plan::MAX_ADOPTION_QUARANTINE);
        for n in &quarantined {
            prop_assert!(*n != 0 && !used.contains(n), "quarantined {n}, which is 0 or in use");
        }
        if bounded {
            let want: BTreeSet<u64> = (1..=top).filter(|n| !used.contains(n)).collect();
            prop_assert_eq!(&quarantined, &want);
        }
        let mapped: Vec<u64> = p.ops.iter().filter_map(|o| match o { Op::MapLun { lun, .. } => Some(*lun), _ => None }).collect();
        prop_assert_eq!(mapped.len(), new, "every new image gets a number: {:?}", p.warnings);
        for lun in &mapped {
            prop_assert!(!quarantined.contains(lun) && !used.contains(lun), "new image at {lun}");
            if bounded {
                prop_assert!(*lun > top, "new image at {lun}, at or below {top}");
            }
        }
        // The next scan has a history: it quarantines nothing more.
        let mut after = actual.clone();
        for op in &p.ops {
            after.apply(op);
        }
        let again = plan(&d, &after, &p.ledger, &pol, 1_000_001);
        prop_assert!(again.ops.is_empty(), "{:?}", again.ops);
        prop_assert_eq!(&again.ledger.quarantine, &p.ledger.quarantine);
    }

    #[test]
    fn brake_rule_is_monotone(removals in 0..200usize, managed in 0..200usize, min in 0..5usize) {
        let pol = Policy { brake_min: min, ..policy() };
        if brake_engages(removals, managed, &pol) {
            prop_assert!(brake_engages(removals + 1, managed, &pol));
            prop_assert!(removals > min);
        }
    }
}
