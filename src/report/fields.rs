//! The structured fields of a log event about one LIO operation, so the journal can
//! be searched by them (`journalctl OP=map-lun LUN=5`, `journalctl IMAGE_ID=…`)
//! instead of parsing messages. Pure: an operation and the desired state in,
//! fields out.

use crate::desired::Desired;
use crate::lio::model::Op;

/// What a log event about one operation carries besides its message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct OpFields<'a> {
    /// The operation, as the `op` label of `sbps_marshal_operations_total`.
    pub(crate) op: &'static str,
    pub(crate) lun: Option<u64>,
    /// The unit serial (the initiator's WWID is derived from it).
    pub(crate) serial: Option<&'a str>,
    pub(crate) backstore: Option<&'a str>,
    /// The IMS image id, for a rootfs image that is desired.
    pub(crate) image_id: Option<&'a str>,
}

/// The operation's name, the same word as in `plan --json` and the metrics.
pub(crate) fn op_name(op: &Op) -> &'static str {
    match op {
        Op::DisableTpg => "disable-tpg",
        Op::UnmapLun { .. } => "unmap-lun",
        Op::DeleteBackstore { .. } => "delete-backstore",
        Op::RemoveEmptyHba { .. } => "remove-empty-hba",
        Op::CreateBackstore { .. } => "create-backstore",
        Op::MapLun { .. } => "map-lun",
        Op::EnableTpg => "enable-tpg",
    }
}

/// The fields of `op`. The serial and image id of an operation that names only a
/// backstore are looked up among the desired projections (a removed image is no
/// longer desired, so its removal carries the serial only when the op has it).
pub(crate) fn op_fields<'a>(op: &'a Op, desired: &'a Desired) -> OpFields<'a> {
    let by_serial = |serial: &str| desired.projections.get(serial);
    let by_name = |name: &str| {
        desired
            .projections
            .values()
            .find(|p| p.identity.name == name)
    };
    let mut f = OpFields {
        op: op_name(op),
        ..OpFields::default()
    };
    let projection = match op {
        Op::DisableTpg | Op::EnableTpg | Op::RemoveEmptyHba { .. } => None,
        Op::UnmapLun { lun, serial } => {
            f.lun = Some(*lun);
            f.serial = serial.as_deref();
            serial.as_deref().and_then(by_serial)
        }
        Op::DeleteBackstore { at } => {
            f.backstore = Some(&at.name);
            by_name(&at.name)
        }
        Op::CreateBackstore { at, serial, .. } => {
            f.backstore = Some(&at.name);
            f.serial = Some(serial);
            by_serial(serial)
        }
        Op::MapLun { lun, at, .. } => {
            f.lun = Some(*lun);
            f.backstore = Some(&at.name);
            by_name(&at.name)
        }
    };
    if let Some(p) = projection {
        f.serial = f.serial.or(Some(&p.identity.serial));
        f.backstore = f.backstore.or(Some(&p.identity.name));
        f.image_id = p.image_id.as_deref();
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Kind, Projection};
    use crate::identity::Identity;
    use crate::lio::model::BackstoreRef;

    fn desired() -> Desired {
        let key = "img/rootfs|etag1".to_string();
        let identity = Identity::of_key(&key);
        let p = Projection {
            kind: Kind::Rootfs,
            key,
            identity: identity.clone(),
            object_key: "img/rootfs".into(),
            path: "/mnt/img/rootfs".into(),
            size: 4096,
            etag: "etag1".into(),
            image_id: Some("4fab0408".into()),
            image_name: Some("compute".into()),
        };
        let mut d = Desired::default();
        d.projections.insert(identity.serial.clone(), p);
        d
    }

    #[test]
    fn a_map_names_lun_backstore_serial_and_image() {
        let d = desired();
        let p = d.projections.values().next().unwrap();
        let op = Op::MapLun {
            lun: 5,
            at: BackstoreRef::fileio(0, &p.identity.name),
            alias: "x".into(),
        };
        let f = op_fields(&op, &d);
        assert_eq!(f.op, "map-lun");
        assert_eq!(f.lun, Some(5));
        assert_eq!(f.backstore, Some(p.identity.name.as_str()));
        assert_eq!(f.serial, Some(p.identity.serial.as_str()));
        assert_eq!(f.image_id, Some("4fab0408"));
    }

    #[test]
    fn a_removal_of_an_image_no_longer_desired_keeps_what_the_op_knows() {
        let d = Desired::default();
        let op = Op::UnmapLun {
            lun: 3,
            serial: Some("abc".into()),
        };
        let f = op_fields(&op, &d);
        assert_eq!(
            (f.op, f.lun, f.serial, f.image_id),
            ("unmap-lun", Some(3), Some("abc"), None)
        );
        let f = op_fields(&Op::EnableTpg, &d);
        assert_eq!(
            f,
            OpFields {
                op: "enable-tpg",
                ..OpFields::default()
            }
        );
    }

    #[test]
    fn names_match_the_serialized_op() {
        let ops = [
            Op::DisableTpg,
            Op::EnableTpg,
            Op::UnmapLun {
                lun: 1,
                serial: None,
            },
            Op::DeleteBackstore {
                at: BackstoreRef::fileio(0, "n"),
            },
            Op::RemoveEmptyHba {
                plugin: "fileio".into(),
                hba: 0,
            },
            Op::CreateBackstore {
                at: BackstoreRef::fileio(0, "n"),
                path: "/p".into(),
                size: 1,
                serial: "s".into(),
            },
            Op::MapLun {
                lun: 1,
                at: BackstoreRef::fileio(0, "n"),
                alias: "a".into(),
            },
        ];
        for op in ops {
            let v = serde_json::to_value(&op).unwrap();
            assert_eq!(v["op"], op_name(&op), "{op:?}");
        }
    }
}
