//! The planner in a fleet: numbers the other workers gave, numbers frozen while the
//! ledger kept in the Kubernetes API cannot be written, and a rebuilt target that is not
//! opened empty.

use crate::support::*;
use sbps_marshal::fleet::FleetView;
use sbps_marshal::ledger::Ledger;
use sbps_marshal::lio::Op;
use sbps_marshal::plan::{plan, plan_in_fleet, HoldReason, Policy};

const NOW: u64 = 1_000_000;

/// The ledger another worker wrote after mapping `images` at the given numbers.
fn worker(images: &[(&sbps_marshal::desired::Projection, u64)]) -> Ledger {
    let mut a = empty_target(true);
    for (i, (p, lun)) in images.iter().enumerate() {
        add_exported(&mut a, p, i as u32, *lun);
    }
    let d = desired_of(images.iter().map(|(p, _)| (*p).clone()));
    let mut l = plan(&d, &a, &Ledger::new(), &policy(), NOW).ledger;
    // Not an adopted target: no gaps quarantined.
    l.quarantine.clear();
    l
}

/// The ledger of a node with a history (it converged once): no adoption margin.
fn known() -> Ledger {
    Ledger {
        last_converged: Some(NOW - 1),
        ..Ledger::new()
    }
}

fn mapped(p: &sbps_marshal::plan::Plan) -> Vec<(String, u64)> {
    p.ops
        .iter()
        .filter_map(|o| match o {
            Op::MapLun { lun, at, .. } => Some((at.name.clone(), *lun)),
            _ => None,
        })
        .collect()
}

fn frozen() -> Policy {
    Policy {
        numbers_frozen: Some("the Kubernetes API cannot be written".into()),
        ..policy()
    }
}

#[test]
fn a_new_image_takes_the_number_the_fleet_gave_it() {
    let (a, b) = (pe(1, 10, "a"), pe(2, 10, "b"));
    let other = worker(&[(&a, 7), (&b, 3)]);
    let fleet = FleetView::from_ledgers([&other]);
    let p = plan_in_fleet(
        &desired_of([a.clone(), b.clone()]),
        &empty_target(false),
        &known(),
        &policy(),
        &fleet,
        NOW,
    );
    let mut got = mapped(&p);
    got.sort();
    let mut want = vec![(a.identity.name.clone(), 7), (b.identity.name.clone(), 3)];
    want.sort();
    assert_eq!(got, want);
    // Alone, the same node would have numbered them 1 and 2.
    let alone = plan(
        &desired_of([a, b]),
        &empty_target(false),
        &known(),
        &policy(),
        NOW,
    );
    let mut alone: Vec<u64> = mapped(&alone).into_iter().map(|(_, l)| l).collect();
    alone.sort();
    assert_eq!(alone, [1, 2]);
}

#[test]
fn a_brand_new_image_takes_a_number_free_on_every_node() {
    let (a, b, c) = (pe(1, 10, "a"), pe(2, 10, "b"), pe(3, 10, "c"));
    // Another worker holds 1 and 2 for images this node does not have yet, and 3 in quarantine.
    let mut other = worker(&[(&a, 1), (&b, 2)]);
    other.quarantine.insert(
        3,
        sbps_marshal::ledger::Quarantine {
            serial: None,
            etag: None,
            size: None,
            same_serial_may_return: false,
            until: NOW + 10_000,
        },
    );
    let fleet = FleetView::from_ledgers([&other]);
    let p = plan_in_fleet(
        &desired_of([c.clone()]),
        &empty_target(false),
        &known(),
        &policy(),
        &fleet,
        NOW,
    );
    assert_eq!(mapped(&p), [(c.identity.name.clone(), 4)]);
}

#[test]
fn the_fleet_number_is_not_taken_when_it_is_not_free_here() {
    let (a, b) = (pe(1, 10, "a"), pe(2, 10, "b"));
    let other = worker(&[(&a, 5)]);
    let fleet = FleetView::from_ledgers([&other]);
    // Here, 5 already carries b (adopted from the original agent): a goes elsewhere and b
    // keeps its number. Adoption quarantines the gaps 1-4 the original may have freed and
    // the 256 numbers above 5, so the lowest number free here and on the other node is 262.
    let mut here = empty_target(true);
    add_exported(&mut here, &b, 0, 5);
    let p = plan_in_fleet(
        &desired_of([a.clone(), b.clone()]),
        &here,
        &Ledger::new(),
        &policy(),
        &fleet,
        NOW,
    );
    assert_eq!(mapped(&p), [(a.identity.name.clone(), 262)]);
    assert_eq!(p.ledger.lun_of(&b.identity.serial), Some(5));
    // A number quarantined here is not taken either, whatever the fleet says.
    let mut ledger = Ledger::new();
    ledger.quarantine.insert(
        5,
        sbps_marshal::ledger::Quarantine {
            serial: Some("someone-else".into()),
            etag: None,
            size: None,
            same_serial_may_return: true,
            until: NOW + 10,
        },
    );
    let p = plan_in_fleet(
        &desired_of([a.clone()]),
        &empty_target(false),
        &ledger,
        &policy(),
        &fleet,
        NOW,
    );
    assert_eq!(mapped(&p), [(a.identity.name.clone(), 1)]);
}

#[test]
fn frozen_numbers_keep_what_is_exported_and_new_images_wait() {
    let (a, b, gone) = (pe(1, 10, "a"), pe(2, 10, "b"), pe(3, 10, "g"));
    let mut here = empty_target(true);
    add_exported(&mut here, &a, 0, 1);
    add_exported(&mut here, &gone, 1, 2);
    let ledger = plan(
        &desired_of([a.clone(), gone.clone()]),
        &here,
        &Ledger::new(),
        &policy(),
        NOW,
    )
    .ledger;
    // `gone` has been absent for longer than the grace period; `b` is new.
    let mut old = ledger.clone();
    old.absent_since
        .insert(gone.identity.serial.clone(), NOW - 10_000);
    let p = plan(
        &desired_of([a.clone(), b.clone()]),
        &here,
        &old,
        &frozen(),
        NOW,
    );
    assert!(
        p.ops.is_empty(),
        "nothing changes while frozen: {:?}",
        p.ops
    );
    assert_eq!(p.waiting.len(), 1);
    assert_eq!(p.waiting[0].serial, b.identity.serial);
    assert!(p.waiting[0].reason.contains("cannot be written"));
    assert!(matches!(
        p.held.as_slice(),
        [h] if matches!(h.reason, HoldReason::NumbersFrozen { .. }) && h.luns == [2]
    ));
    // Unfrozen, the same scan removes `gone` and maps `b`.
    let p = plan(&desired_of([a, b]), &here, &old, &policy(), NOW);
    assert!(p
        .ops
        .iter()
        .any(|o| matches!(o, Op::UnmapLun { lun: 2, .. })));
    assert!(p.ops.iter().any(|o| matches!(o, Op::MapLun { .. })));
}

#[test]
fn frozen_numbers_still_put_remembered_images_back() {
    let (a, b) = (pe(1, 10, "a"), pe(2, 10, "b"));
    let mut before = empty_target(true);
    add_exported(&mut before, &a, 0, 4);
    add_exported(&mut before, &b, 1, 9);
    let ledger = plan(
        &desired_of([a.clone(), b.clone()]),
        &before,
        &Ledger::new(),
        &policy(),
        NOW,
    )
    .ledger;
    // Cleared target: the remembered numbers need no new decision.
    let p = plan(
        &desired_of([a.clone(), b.clone()]),
        &empty_target(true),
        &ledger,
        &frozen(),
        NOW,
    );
    let mut got: Vec<u64> = mapped(&p).into_iter().map(|(_, l)| l).collect();
    got.sort();
    assert_eq!(got, [4, 9]);
    assert!(p.waiting.is_empty());
    assert_eq!(p.ledger, ledger, "no number changed");
}

#[test]
fn a_rebuilt_target_is_closed_while_it_is_filled() {
    let (a, b) = (pe(1, 10, "a"), pe(2, 10, "b"));
    let mut before = empty_target(true);
    add_exported(&mut before, &a, 0, 4);
    add_exported(&mut before, &b, 1, 9);
    let d = desired_of([a, b]);
    let ledger = plan(&d, &before, &Ledger::new(), &policy(), NOW).ledger;

    // A normal restart: the LUNs are there; the TPG stays enabled, nothing is done.
    let p = plan(&d, &before, &ledger, &policy(), NOW + 1);
    assert!(p.ops.is_empty(), "{:?}", p.ops);

    // Rebuilt: enabled and empty. Disabled first, enabled again after the LUNs.
    let p = plan(&d, &empty_target(true), &ledger, &policy(), NOW + 1);
    assert_eq!(p.ops.first(), Some(&Op::DisableTpg));
    assert_eq!(p.ops.last(), Some(&Op::EnableTpg));
    assert_eq!(p.ops.len(), 2 + 4);

    // Rebuilt, but the ledger could not be restored: nothing can be numbered, so the
    // target is closed and stays closed.
    let p = plan(&d, &empty_target(true), &Ledger::new(), &frozen(), NOW + 1);
    assert_eq!(p.ops, [Op::DisableTpg]);
    assert_eq!(p.waiting.len(), 2);

    // An unlabelled node is only disabled.
    let p = plan(
        &d,
        &empty_target(true),
        &ledger,
        &Policy {
            labelled: Some(false),
            ..policy()
        },
        NOW + 1,
    );
    assert_eq!(p.ops.first(), Some(&Op::DisableTpg));
    assert!(!p.ops.contains(&Op::EnableTpg));
}

#[test]
fn the_fleet_number_wins_over_the_margin_a_new_worker_quarantines() {
    let (a, b) = (pe(1, 10, "a"), pe(2, 10, "b"));
    let other = worker(&[(&a, 3)]);
    let fleet = FleetView::from_ledgers([&other]);
    // A worker with no ledger and an empty target quarantines 1..=256 (it may have served
    // them before), but the number every other path shows for an image is still its own.
    let pol = Policy {
        adoption_quarantine_above: 256,
        ..policy()
    };
    let p = plan_in_fleet(
        &desired_of([a.clone(), b.clone()]),
        &empty_target(false),
        &Ledger::new(),
        &pol,
        &fleet,
        NOW,
    );
    let mut got = mapped(&p);
    got.sort();
    let mut want = vec![(a.identity.name.clone(), 3), (b.identity.name.clone(), 257)];
    want.sort();
    assert_eq!(got, want);
}
