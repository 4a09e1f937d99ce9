//! The ledger kept in the Kubernetes API: how big one node's ConfigMap is at 1,000 and
//! 5,000 images (the API refuses more than 1 MiB), what encoding and decoding it costs,
//! and what numbering new images against a fleet of ten workers costs in the planner.
//!
//! `cargo bench --bench ledger`

use std::path::PathBuf;
use std::time::Instant;

use sbps_marshal::desired::{Desired, Kind, Projection};
use sbps_marshal::fleet::FleetView;
use sbps_marshal::identity::{self, Identity};
use sbps_marshal::ledger::remote::{decode, encode, MAX_BYTES};
use sbps_marshal::ledger::{Ledger, LunRecord, Quarantine};
use sbps_marshal::lio::{Actual, Tpg};
use sbps_marshal::plan::{plan_in_fleet, Policy};
use sha2::{Digest, Sha256};

/// Image `i` as IMS names them: a UUID, an md5 ETag (random-looking, as real ones are).
fn projection(i: usize) -> Projection {
    let h = hex::encode(Sha256::digest(i.to_le_bytes()));
    let id = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    let object_key = format!("{id}/rootfs");
    let etag = format!("{}-{}", &h[32..64], i % 97);
    let key = identity::rootfs_key(&format!("s3://boot-images/{object_key}"), &etag);
    Projection {
        kind: Kind::Rootfs,
        identity: Identity::of_key(&key),
        key,
        path: PathBuf::from("/var/lib/cps-local/boot-images").join(&object_key),
        object_key,
        size: 1_500_000_000 + i as u64,
        etag,
        image_id: Some(id),
        image_name: Some(format!("compute-cos-{i}")),
    }
}

/// A ledger of `n` images at LUNs 1..=n, with a quarantined number for every tenth.
fn ledger(n: usize) -> Ledger {
    let mut l = Ledger::new();
    for i in 0..n {
        let p = projection(i);
        l.luns.insert(
            p.identity.serial.clone(),
            std::sync::Arc::new(LunRecord {
                lun: i as u64 + 1,
                name: p.identity.name.clone(),
                kind: Some(p.kind),
                key: Some(p.key.clone()),
                image_id: p.image_id.clone(),
                etag: Some(p.etag.clone()),
                size: Some(p.size),
                since: 1_780_000_000 + i as u64,
            }),
        );
        if i % 10 == 0 {
            l.quarantine.insert(
                (n + i) as u64 + 1,
                Quarantine {
                    serial: Some(p.identity.serial.clone()),
                    etag: Some(p.etag.clone()),
                    size: Some(p.size),
                    same_serial_may_return: true,
                    until: 1_790_000_000,
                },
            );
        }
    }
    l.generation = 1234;
    l
}

fn main() {
    println!(
        "{:>6}  {:>10}  {:>10}  {:>8}  {:>9}  {:>9}",
        "images", "JSON B", "ConfigMap B", "of 1 MiB", "encode", "decode"
    );
    for n in [1_000, 5_000] {
        let l = ledger(n);
        let json = serde_json::to_vec(&l).expect("json").len();
        let t = Instant::now();
        let doc = encode("ncn-w001", &l, None).expect("fits");
        let enc = t.elapsed();
        let t = Instant::now();
        let back = decode("sbps-marshal-ledger-ncn-w001", &doc).expect("decodes");
        let dec = t.elapsed();
        assert_eq!(back.ledger, l);
        println!(
            "{n:>6}  {json:>10}  {:>10}  {:>7.1}%  {:>7.1}ms  {:>7.1}ms",
            doc.size(),
            100.0 * doc.size() as f64 / MAX_BYTES as f64,
            enc.as_secs_f64() * 1e3,
            dec.as_secs_f64() * 1e3
        );
    }

    // A new worker joins a fleet of ten that serve 5,000 images: every image takes the
    // fleet's number.
    let others: Vec<Ledger> = (0..10).map(|_| ledger(5_000)).collect();
    let t = Instant::now();
    let fleet = FleetView::from_ledgers(&others);
    let view = t.elapsed();
    let desired = Desired {
        projections: (0..5_000)
            .map(projection)
            .map(|p| (p.identity.serial.clone(), p))
            .collect(),
        ..Desired::default()
    };
    let empty = Actual {
        backstores: vec![],
        hbas: Default::default(),
        tpg: Some(Tpg {
            iqn: "iqn.2023-06.csm.iscsi:ncn-w011".into(),
            tag: 1,
            enabled: false,
            luns: Default::default(),
        }),
    };
    let t = Instant::now();
    let p = plan_in_fleet(
        &desired,
        &empty,
        &Ledger::new(),
        &Policy::default(),
        &fleet,
        0,
    );
    let planned = t.elapsed();
    let same = p
        .ledger
        .luns
        .iter()
        .filter(|(s, r)| others[0].lun_of(s) == Some(r.lun))
        .count();
    println!(
        "fleet of 10 x 5,000: view {:.1} ms, plan of a new worker {:.1} ms, {same}/5000 at the fleet's number",
        view.as_secs_f64() * 1e3,
        planned.as_secs_f64() * 1e3
    );
}
