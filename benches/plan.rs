//! plan() for 10,000 desired projections against 10,000 existing backstores: the
//! steady state (nothing to do) and the same with 100 new images and 100 gone.
//!
//! `cargo bench --bench plan`

use std::collections::BTreeMap;
use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sbps_marshal::desired::{Desired, Kind, Projection};
use sbps_marshal::identity::{self, Identity};
use sbps_marshal::ledger::Ledger;
use sbps_marshal::lio::{Actual, Backstore, BackstoreRef, Lun, Tpg};
use sbps_marshal::plan::{plan, Policy};

const MOUNT: &str = "/var/lib/cps-local/boot-images";

fn projection(i: usize) -> Projection {
    let object_key = format!("{i:08x}-aaaa-bbbb-cccc-dddddddddddd/rootfs");
    let etag = format!("{i:032x}-12");
    let key = identity::rootfs_key(&format!("s3://boot-images/{object_key}"), &etag);
    Projection {
        kind: Kind::Rootfs,
        identity: Identity::of_key(&key),
        key,
        path: PathBuf::from(MOUNT).join(&object_key),
        object_key,
        size: 1 << 30,
        etag,
        image_id: Some(format!("{i:08x}")),
        image_name: Some(format!("image-{i}")),
    }
}

fn world(n: usize, offset: usize) -> (Desired, Actual) {
    let desired = Desired {
        projections: (offset..n + offset)
            .map(projection)
            .map(|p| (p.identity.serial.clone(), p))
            .collect(),
        ..Desired::default()
    };
    let mut actual = Actual {
        tpg: Some(Tpg {
            iqn: "iqn.2023-06.csm.iscsi:w001".into(),
            tag: 1,
            enabled: true,
            luns: BTreeMap::new(),
        }),
        ..Actual::default()
    };
    for i in 0..n {
        let p = projection(i);
        let at = BackstoreRef::fileio(i as u32, &p.identity.name);
        actual.hbas.insert(("fileio".into(), i as u32));
        actual.backstores.push(Backstore {
            at: at.clone(),
            dev: Some(p.path.clone()),
            size: Some(p.size),
            serial: Some(p.identity.serial.clone()),
            enabled: true,
            write_back: false,
        });
        let lun = i as u64 + 1;
        if let Some(t) = actual.tpg.as_mut() {
            t.luns.insert(
                lun,
                Lun {
                    index: lun,
                    alias: Some(format!("{lun:010x}")),
                    backstore: Some(at),
                },
            );
        }
    }
    (desired, actual)
}

fn bench(c: &mut Criterion) {
    let policy = Policy {
        mount: PathBuf::from(MOUNT),
        grace_secs: 0,
        ..Policy::default()
    };
    let (desired, actual) = world(10_000, 0);
    let ledger = plan(&desired, &actual, &Ledger::new(), &policy, 1).ledger;
    let steady = plan(&desired, &actual, &ledger, &policy, 2);
    assert!(steady.ops.is_empty());
    c.bench_function("plan 10k desired x 10k existing (steady)", |b| {
        b.iter(|| {
            plan(
                black_box(&desired),
                black_box(&actual),
                black_box(&ledger),
                &policy,
                2,
            )
        })
    });
    let (churn, _) = world(10_000, 100);
    let p = plan(&churn, &actual, &ledger, &policy, 2);
    println!("churn plan: {} ops", p.ops.len());
    c.bench_function("plan 10k desired x 10k existing (100 new, 100 gone)", |b| {
        b.iter(|| {
            plan(
                black_box(&churn),
                black_box(&actual),
                black_box(&ledger),
                &policy,
                2,
            )
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
