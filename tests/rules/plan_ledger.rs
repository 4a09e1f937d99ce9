//! The ledger a plan returns shares the previous ledger's records until a record changes:
//! every scan plans from a copy, and most scans change no record.

use crate::support::*;
use sbps_marshal::ledger::{Ledger, Shared};
use sbps_marshal::plan::plan;

const NOW: u64 = 1_000_000;

#[test]
fn a_plan_that_changes_no_record_shares_them() {
    let ps = [pe(1, 100, "a"), rootfs(2, 200)];
    let mut actual = empty_target(true);
    for (i, p) in ps.iter().enumerate() {
        add_exported(&mut actual, p, i as u32 + 1, i as u64 + 1);
    }
    let d = desired_of(ps.clone());
    let first = plan(&d, &actual, &Ledger::new(), &policy(), NOW);
    assert!(first.ops.is_empty());
    assert_eq!(first.ledger.luns.len(), 2);

    let steady = plan(&d, &actual, &first.ledger, &policy(), NOW + 10);
    assert!(steady.ops.is_empty());
    assert!(Shared::same(&steady.ledger.luns, &first.ledger.luns));
    assert_eq!(steady.ledger, first.ledger);

    // One image more: its record is added to a copy; the ledger planned from is unchanged.
    let more = desired_of([ps[0].clone(), ps[1].clone(), pe(3, 300, "c")]);
    let before = first.ledger.clone();
    let grown = plan(&more, &actual, &first.ledger, &policy(), NOW + 20);
    assert!(!Shared::same(&grown.ledger.luns, &first.ledger.luns));
    assert_eq!(grown.ledger.luns.len(), 3);
    assert_eq!(first.ledger, before);
    assert_eq!(first.ledger.luns.len(), 2);
}
