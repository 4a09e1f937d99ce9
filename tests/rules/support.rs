//! Builders shared by the pure-core tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use sbps_marshal::desired::{Desired, Kind, Projection};
use sbps_marshal::identity::{self, Identity};
use sbps_marshal::lio::{Actual, Backstore, BackstoreRef, Lun, Tpg};
use sbps_marshal::plan::Policy;

pub const MOUNT: &str = "/var/lib/cps-local/boot-images";
pub const IQN: &str = "iqn.2023-06.csm.iscsi:ncn-w001";

/// The PE projection of `PE/img-<i>.squashfs` with the given size and etag.
pub fn pe(i: usize, size: u64, etag: &str) -> Projection {
    let object_key = format!("PE/img-{i}.squashfs");
    let key = identity::pe_key("boot-images", &object_key);
    Projection {
        kind: Kind::Pe,
        identity: Identity::of_key(&key),
        key,
        path: PathBuf::from(MOUNT).join(&object_key),
        object_key,
        size,
        etag: etag.to_string(),
        image_id: None,
        image_name: None,
    }
}

/// A rootfs projection of image `i`.
pub fn rootfs(i: usize, size: u64) -> Projection {
    let object_key = format!("{i:08x}-0000-0000-0000-000000000000/rootfs");
    let etag = format!("{i:032x}");
    let path = format!("s3://boot-images/{object_key}");
    let key = identity::rootfs_key(&path, &etag);
    Projection {
        kind: Kind::Rootfs,
        identity: Identity::of_key(&key),
        key,
        path: PathBuf::from(MOUNT).join(&object_key),
        object_key,
        size,
        etag,
        image_id: Some(format!("{i:08x}-0000-0000-0000-000000000000")),
        image_name: Some(format!("image-{i}")),
    }
}

pub fn desired_of(ps: impl IntoIterator<Item = Projection>) -> Desired {
    Desired {
        projections: ps
            .into_iter()
            .map(|p| (p.identity.serial.clone(), p))
            .collect(),
        ..Desired::default()
    }
}

/// An empty target with an enabled TPG.
pub fn empty_target(enabled: bool) -> Actual {
    Actual {
        backstores: vec![],
        hbas: Default::default(),
        tpg: Some(Tpg {
            iqn: IQN.into(),
            tag: 1,
            enabled,
            luns: BTreeMap::new(),
        }),
    }
}

/// Adds `p` as the original agent's targetcli would have: its own HBA, a random alias,
/// at LUN `lun`.
pub fn add_exported(a: &mut Actual, p: &Projection, hba: u32, lun: u64) {
    let at = BackstoreRef::fileio(hba, &p.identity.name);
    a.hbas.insert(("fileio".into(), hba));
    a.backstores.push(Backstore {
        at: at.clone(),
        dev: Some(p.path.clone()),
        size: Some(p.size),
        serial: Some(p.identity.serial.clone()),
        enabled: true,
        write_back: hba.is_multiple_of(2),
    });
    let t = a.tpg.as_mut().expect("tpg");
    t.luns.insert(
        lun,
        Lun {
            index: lun,
            alias: Some(format!("{:010x}", 0x74f4a25edbu64 + lun)),
            backstore: Some(at),
        },
    );
}

/// Adds a backstore the agent does not own (file outside the mount).
pub fn add_foreign(a: &mut Actual, name: &str, hba: u32, lun: Option<u64>) {
    let at = BackstoreRef::fileio(hba, name);
    a.hbas.insert(("fileio".into(), hba));
    a.backstores.push(Backstore {
        at: at.clone(),
        dev: Some(PathBuf::from(format!("/srv/admin/{name}.img"))),
        size: Some(4096),
        serial: Some(format!("admin-{name}")),
        enabled: true,
        write_back: true,
    });
    if let Some(lun) = lun {
        a.tpg.as_mut().expect("tpg").luns.insert(
            lun,
            Lun {
                index: lun,
                alias: Some("adminlink".into()),
                backstore: Some(at),
            },
        );
    }
}

/// A ledger with a history of the target (a scan converged, nothing recorded): planning
/// with it is not an adoption, so no number is quarantined for want of a history.
pub fn known_ledger() -> sbps_marshal::ledger::Ledger {
    sbps_marshal::ledger::Ledger {
        last_converged: Some(1),
        ..sbps_marshal::ledger::Ledger::new()
    }
}

pub fn policy() -> Policy {
    Policy {
        mount: PathBuf::from(MOUNT),
        grace_secs: 600,
        quarantine_secs: 3600,
        adoption_quarantine_above: 256,
        brake_ratio: 0.5,
        brake_min: 2,
        brake_released: false,
        labelled: Some(true),
        numbers_frozen: None,
    }
}

/// The LUN number `a` exports `serial` at.
pub fn lun_of(a: &Actual, serial: &str) -> Option<u64> {
    a.lun_by_serial().get(serial).copied()
}

pub fn apply_all(a: &mut Actual, ops: &[sbps_marshal::lio::Op]) {
    for op in ops {
        a.apply(op);
    }
}
