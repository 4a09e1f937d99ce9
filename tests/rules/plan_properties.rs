//! Properties of `plan()` over generated histories: many scans in a row, each with a
//! random desired set, random unknowns, random clock steps, and now and then a
//! cleared target or a re-uploaded image. Every scan's plan is applied to the model
//! of the kernel (`Actual::apply`) and the invariants are checked on the way.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;
use proptest::prelude::*;
use sbps_marshal::desired::{Desired, Kind, Projection};
use sbps_marshal::ledger::Ledger;
use sbps_marshal::lio::{Actual, Op};
use sbps_marshal::plan::{brake_engages, plan, under_root, HoldReason, Policy};

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
                .filter(|b| b.dev.as_deref().is_some_and(|d| under_root(d, &pol.mount)))
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
                        prop_assert!(b.dev.as_deref().is_some_and(|d| under_root(d, &pol.mount)), "deleted unowned {at}");
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
            // The brake, judged per kind, holds every removal of an absent image of its kind.
            let braked: BTreeSet<Kind> = p
                .held
                .iter()
                .filter_map(|h| match h.reason {
                    HoldReason::Brake { kind, .. } => Some(kind),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(p.brake, !braked.is_empty());
            let kind_of = |name: &str| {
                let pe = actual.backstores.iter().any(|b| {
                    b.at.name == name && b.dev.as_deref().is_some_and(|d| d.starts_with(format!("{MOUNT}/PE/")))
                });
                if pe { Kind::Pe } else { Kind::Rootfs }
            };
            let mut removed_absent: BTreeMap<Kind, usize> = BTreeMap::new();
            for op in &p.ops {
                if let Op::DeleteBackstore { at } = op {
                    if !desired.projections.values().any(|d| d.identity.name == at.name) {
                        let kind = kind_of(&at.name);
                        prop_assert!(!braked.contains(&kind), "{kind} brake engaged but {at} removed");
                        *removed_absent.entry(kind).or_default() += 1;
                    }
                }
            }
            for (kind, removed) in removed_absent {
                if pol.brake_released {
                    break;
                }
                let mut involved: BTreeSet<String> = desired.projections.values().filter(|p| p.kind == kind).map(|p| p.identity.serial.clone()).collect();
                involved.extend(actual.backstores.iter().filter(|b| b.enabled && b.dev.as_deref().is_some_and(|d| under_root(d, &pol.mount)) && kind_of(&b.at.name) == kind).filter_map(|b| b.serial.clone()));
                let managed = involved.len();
                prop_assert!(!brake_engages(removed, managed, &pol), "{removed} of {managed} {kind} removed past the brake");
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

    /// A worker rebuild wipes the kernel's state and the local ledger; the ledger kept in
    /// the Kubernetes API is restored before the first plan. Every image exported before
    /// comes back at exactly its number.
    #[test]
    fn a_rebuild_restores_every_number(pol in policy_strategy(), steps in prop::collection::vec(step(), 1..20)) {
        let mut actual = initial();
        let mut ledger = Ledger::new();
        let mut now = 1_000_000u64;
        let mut sizes: Vec<u64> = (0..UNIVERSE as u64).map(|i| 1000 + i).collect();
        let mut last = Desired::default();
        for s in &steps {
            now += s.dt;
            if s.clear {
                actual = initial();
            }
            if let Some(i) = s.resize {
                sizes[i] += 7;
            }
            last = desired_for(s, &sizes);
            let p = plan(&last, &actual, &ledger, &pol, now);
            apply_all(&mut actual, &p.ops);
            ledger = p.ledger;
        }
        let before: BTreeMap<String, u64> = last
            .projections
            .keys()
            .filter_map(|serial| Some((serial.clone(), lun_of(&actual, serial)?)))
            .collect();
        // The rebuild: a new disk (no local ledger, no saveconfig.json), the target
        // recreated by CSM's provisioning, enabled and empty; the API's copy restored.
        let restored: Ledger = serde_json::from_slice(&serde_json::to_vec(&ledger).unwrap()).unwrap();
        let mut rebuilt = empty_target(true);
        let wanted = Desired { projections: last.projections.clone(), ..Desired::default() };
        let p = plan(&wanted, &rebuilt, &restored, &pol, now + 60);
        // Closed while it is filled, opened again by the same scan.
        if !before.is_empty() {
            prop_assert_eq!(p.ops.first(), Some(&Op::DisableTpg));
            prop_assert_eq!(p.ops.last(), Some(&Op::EnableTpg));
        }
        apply_all(&mut rebuilt, &p.ops);
        for (serial, lun) in &before {
            prop_assert_eq!(lun_of(&rebuilt, serial), Some(*lun), "{} moved after the rebuild", serial);
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

// ---------------------------------------------------------------------------------------------
// An unreadable input never removes a projection: the whole pure pipeline (IMS answer parsed
// from JSON, `desired`, `protect_served`, `plan`) over generated faults of the inventory.

/// What is wrong with one served rootfs image's inputs in the second scan.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Readable and untagged: a known absence (the control: this one may go).
    Untagged,
    NumericId,
    NoId,
    LinkWrongType,
    NameWrongType,
    NotAnObject,
    MetadataNull,
    MetadataArray,
    TagNull,
    EtagMissing,
    RootfsWithoutLink,
    SeveralRootfs,
    ManifestUnreadable,
}

fn fault() -> impl Strategy<Value = Fault> {
    use Fault::*;
    prop_oneof![
        3 => Just(None),
        2 => Just(Untagged),
        1 => prop::sample::select(vec![
            NumericId, NoId, LinkWrongType, NameWrongType, NotAnObject, MetadataNull,
            MetadataArray, TagNull, EtagMissing, RootfsWithoutLink, SeveralRootfs,
            ManifestUnreadable,
        ]),
    ]
}

const ROOTFS: usize = 5;

fn image_id(i: usize) -> String {
    format!("{i:08x}-0000-0000-0000-000000000000")
}

fn record_json(i: usize, f: Fault) -> serde_json::Value {
    use serde_json::json;
    let id = image_id(i);
    let link =
        json!({"path": format!("s3://boot-images/{id}/manifest.json"), "etag": "m", "type": "s3"});
    let mut r = json!({"id": id, "name": format!("image-{i}"), "link": link, "metadata": {"sbps-project": "true"}});
    match f {
        Fault::Untagged => r["metadata"] = json!({"sbps-project": "false"}),
        Fault::NumericId => r["id"] = json!(i),
        Fault::NoId => {
            r.as_object_mut().map(|o| o.remove("id"));
        }
        Fault::LinkWrongType => r["link"] = json!(format!("s3://boot-images/{id}/manifest.json")),
        Fault::NameWrongType => r["name"] = json!(["image"]),
        Fault::NotAnObject => r = json!([id]),
        Fault::MetadataNull => r["metadata"] = json!(null),
        Fault::MetadataArray => r["metadata"] = json!([{"key": "sbps-project", "value": "true"}]),
        Fault::TagNull => r["metadata"] = json!({"sbps-project": null}),
        _ => {}
    }
    r
}

fn manifest_of(i: usize, f: Fault) -> Result<sbps_marshal::inventory::Manifest, String> {
    use sbps_marshal::inventory::{manifest::parse_manifest, ROOTFS_ARTIFACT_TYPE};
    let id = image_id(i);
    let artifact = serde_json::json!({"type": ROOTFS_ARTIFACT_TYPE,
        "link": {"path": format!("s3://boot-images/{id}/rootfs"), "etag": format!("{i:032x}"), "type": "s3"}});
    let artifacts = match f {
        Fault::EtagMissing => {
            serde_json::json!([{"type": ROOTFS_ARTIFACT_TYPE, "link": {"path": format!("s3://boot-images/{id}/rootfs")}}])
        }
        Fault::RootfsWithoutLink => {
            serde_json::json!([{"type": ROOTFS_ARTIFACT_TYPE, "link": null}])
        }
        Fault::SeveralRootfs => serde_json::json!([artifact.clone(), artifact]),
        Fault::ManifestUnreadable => return Err("unparsable manifest: not JSON".into()),
        _ => serde_json::json!([artifact]),
    };
    parse_manifest(
        serde_json::json!({"version": "1.0", "artifacts": artifacts})
            .to_string()
            .as_bytes(),
    )
}

/// The inventory of 2 PE objects and `ROOTFS` rootfs images (all in S3 and the mount), with
/// `faults` applied to the rootfs images' records and manifests; `empty`: IMS answers `[]`.
fn inventory(faults: &[Fault], empty: bool) -> sbps_marshal::inventory::Inventory {
    use sbps_marshal::inventory::{ims::parse_listing, Inventory, MountEntry, S3Object};
    let mut s3 = Vec::new();
    let mut mount = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    let mut file = |key: String, etag: String, size: u64| {
        mount.insert(key.clone(), MountEntry::File { size });
        s3.push(S3Object { key, etag, size });
    };
    for i in [0, 2] {
        let p = pe(i, 1000, "pe");
        file(p.object_key, p.etag, p.size);
    }
    let mut records = Vec::new();
    for (n, f) in faults.iter().enumerate() {
        let i = 2 * n + 1;
        let p = rootfs(i, 4096);
        file(p.object_key, p.etag, p.size);
        file(format!("{}/manifest.json", image_id(i)), "m".into(), 10);
        manifests.insert(
            format!("s3://boot-images/{}/manifest.json", image_id(i)),
            manifest_of(i, *f).map(std::sync::Arc::new),
        );
        records.push(record_json(i, *f));
    }
    let body = if empty {
        serde_json::json!([])
    } else {
        serde_json::Value::Array(records)
    };
    let listing = parse_listing(body.to_string().as_bytes()).expect("an array");
    Inventory {
        s3: Ok(s3),
        ims: Ok(listing.records),
        ims_unreadable: listing.skipped,
        manifests,
        mount,
    }
}

fn judge(inv: &sbps_marshal::inventory::Inventory, ledger: &Ledger) -> Desired {
    let s = sbps_marshal::desired::Settings {
        bucket: "boot-images".into(),
        mount: MOUNT.into(),
        ims_tagging: true,
        backend: Default::default(),
    };
    let mut d = sbps_marshal::desired::desired(inv, &s);
    sbps_marshal::desired::protect_served(&mut d, ledger, false);
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn an_unreadable_input_never_removes_a_projection(
        faults in prop::collection::vec(fault(), ROOTFS),
        empty in prop::bool::weighted(0.15),
        scans in 1..4usize,
    ) {
        // Grace 0 and a brake that never engages: only the rule under test protects.
        let pol = Policy { grace_secs: 0, brake_ratio: 1.0, ..policy() };
        let mut actual = empty_target(true);
        let clean = inventory(&[Fault::None; ROOTFS], false);
        let d = judge(&clean, &Ledger::new());
        prop_assert_eq!(d.projections.len(), 2 + ROOTFS);
        let p = plan(&d, &actual, &Ledger::new(), &pol, 1_000);
        apply_all(&mut actual, &p.ops);
        let mut ledger = p.ledger;

        let inv = inventory(&faults, empty);
        let mut now = 1_000;
        for _ in 0..scans {
            now += 1_000;
            let d = judge(&inv, &ledger);
            let p = plan(&d, &actual, &ledger, &pol, now);
            let unmapped: BTreeSet<&str> = p.ops.iter().filter_map(|o| match o {
                Op::UnmapLun { serial: Some(s), .. } => Some(s.as_str()),
                _ => None,
            }).collect();
            for (n, f) in faults.iter().enumerate() {
                let serial = rootfs(2 * n + 1, 4096).identity.serial;
                if *f != Fault::Untagged {
                    prop_assert!(!unmapped.contains(serial.as_str()), "{:?} removed image {} ({:?})", f, n, p.ops);
                }
            }
            for op in &p.ops {
                actual.apply(op);
            }
            ledger = p.ledger;
        }
        // Not vacuous: a known absence goes (grace 0), unless the answer as a whole is
        // held because it names none of the served images.
        let readable_named = !empty && faults.iter().any(|f| matches!(f, Fault::None | Fault::Untagged));
        for (n, f) in faults.iter().enumerate() {
            let exported = lun_of(&actual, &rootfs(2 * n + 1, 4096).identity.serial).is_some();
            let expected = *f != Fault::Untagged || !readable_named;
            prop_assert_eq!(exported, expected, "image {} ({:?})", n, f);
        }
    }
}
