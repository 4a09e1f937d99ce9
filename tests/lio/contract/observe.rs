//! What an observation may reuse from the one before: an object's inode names the object,
//! not its name (see `sbps_marshal::lio::seen`), and whatever is changed behind the
//! backend's back shows in its next observation exactly as a fresh backend sees it.

use std::path::Path;

use sbps_marshal::lio::fs::{Entry, FileKind, Fs};
use sbps_marshal::lio::{BackstoreRef, Target};

use super::{create_op, map_op};
use crate::support::*;

fn entry(fs: &dyn Fs, dir: &Path, name: &str) -> Entry {
    fs.read_dir(dir)
        .unwrap()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} not in {}", dir.display()))
}

/// configfs numbers a directory or link once, keeps the number while it exists, and
/// gives one made again under the same name another.
#[test]
fn inodes_name_objects_not_names() {
    let rig = Rig::new();
    let t = rig.target();
    let fs = rig.fs.as_ref();
    let at = BackstoreRef::fileio(40, "aa0dd52157e1636");
    let path = rig.image("PE/ino.squashfs", 4096);
    let serial = "aa0dd52157e1636aaaaaaaaaaaaaaaa";
    t.execute(&create_op(&at, path.clone(), 4096, serial))
        .unwrap();
    t.execute(&map_op(40, &at, "aa0dd52157")).unwrap();
    let hba = rig.root.join("core/fileio_40");
    let lun = rig.tpg().join("lun/lun_40");
    let so = entry(fs, &hba, &at.name);
    let link = entry(fs, &lun, "aa0dd52157");
    let dir = entry(fs, &rig.tpg().join("lun"), "lun_40");
    assert_eq!(
        (so.kind, link.kind, dir.kind),
        (FileKind::Dir, FileKind::Symlink, FileKind::Dir)
    );
    assert!(so.ino != 0 && link.ino != 0 && dir.ino != 0);
    assert_eq!(entry(fs, &hba, &at.name).ino, so.ino, "listed again");
    assert_eq!(entry(fs, &lun, "aa0dd52157").ino, link.ino);

    // The link made again in the same lun_40: the directory keeps its number.
    fs.unlink(&lun.join("aa0dd52157")).unwrap();
    fs.symlink(&hba.join(&at.name), &lun.join("aa0dd52157"))
        .unwrap();
    assert_ne!(entry(fs, &lun, "aa0dd52157").ino, link.ino);
    assert_eq!(entry(fs, &rig.tpg().join("lun"), "lun_40").ino, dir.ino);

    // The backstore made again under its name.
    t.execute(&sbps_marshal::lio::Op::UnmapLun {
        lun: 40,
        serial: None,
    })
    .unwrap();
    t.execute(&sbps_marshal::lio::Op::DeleteBackstore { at: at.clone() })
        .unwrap();
    t.execute(&create_op(&at, path, 4096, serial)).unwrap();
    assert_ne!(entry(fs, &hba, &at.name).ino, so.ino);
}

/// Each change an administrator can make to what the plan reads, made behind the
/// backend's back between two observations, is in the second one.
#[test]
fn an_observation_sees_what_changed_behind_its_back() {
    let rig = Rig::new();
    let t = rig.target();
    let fs = rig.fs.as_ref();
    let fresh = || norm(rig.target().observe().unwrap());
    let a = BackstoreRef::fileio(41, "ab0dd52157e1636");
    let b = BackstoreRef::fileio(42, "ac0dd52157e1636");
    let pa = rig.image("PE/a41.squashfs", 4096);
    let pb = rig.image("PE/b42.squashfs", 8192);
    for op in [
        create_op(&a, pa.clone(), 4096, "ab0dd52157e1636aaaaaaaaaaaaaaaa"),
        create_op(&b, pb.clone(), 8192, "ac0dd52157e1636aaaaaaaaaaaaaaaa"),
        map_op(41, &a, "ab0dd52157"),
    ] {
        t.execute(&op).unwrap();
    }
    assert_eq!(norm(t.observe().unwrap()), fresh());
    let so_a = rig.root.join("core/fileio_41").join(&a.name);
    let so_b = rig.root.join("core/fileio_42").join(&b.name);
    let lun = rig.tpg().join("lun/lun_41");
    let serial_of = |at: &BackstoreRef| {
        let seen = t.observe().unwrap();
        assert_eq!(norm(seen.clone()), fresh());
        seen.backstores
            .iter()
            .find(|x| &x.at == at)
            .and_then(|x| x.serial.clone())
    };

    // A backstore no LUN exports may change its serial in place.
    fs.write(&so_b.join("wwn/vpd_unit_serial"), "changed-b")
        .unwrap();
    assert_eq!(serial_of(&b).as_deref(), Some("changed-b"));

    // An exported one only after its link is gone; linked again in the same lun_41.
    fs.unlink(&lun.join("ab0dd52157")).unwrap();
    fs.write(&so_a.join("wwn/vpd_unit_serial"), "changed-a1")
        .unwrap();
    fs.symlink(&so_a, &lun.join("ab0dd52157")).unwrap();
    assert_eq!(serial_of(&a).as_deref(), Some("changed-a1"));

    // Or with its LUN removed and made again under the same number.
    fs.unlink(&lun.join("ab0dd52157")).unwrap();
    fs.rmdir(&lun).unwrap();
    fs.write(&so_a.join("wwn/vpd_unit_serial"), "changed-a2")
        .unwrap();
    fs.mkdir(&lun).unwrap();
    fs.symlink(&so_a, &lun.join("ab0dd52157")).unwrap();
    assert_eq!(serial_of(&a).as_deref(), Some("changed-a2"));

    // The LUN now links the other backstore, under the same alias.
    fs.unlink(&lun.join("ab0dd52157")).unwrap();
    fs.symlink(&so_b, &lun.join("ab0dd52157")).unwrap();
    let seen = t.observe().unwrap();
    assert_eq!(norm(seen.clone()), fresh());
    let tpg = seen.tpg.unwrap();
    assert_eq!(tpg.luns[&41].backstore.as_ref(), Some(&b));

    // A backstore removed and made again under its name, on another file.
    fs.unlink(&lun.join("ab0dd52157")).unwrap();
    fs.rmdir(&so_a).unwrap();
    fs.mkdir(&so_a).unwrap();
    fs.write(
        &so_a.join("control"),
        &format!("fd_dev_name={},fd_dev_size=8192", pb.display()),
    )
    .unwrap();
    fs.write(&so_a.join("wwn/vpd_unit_serial"), "changed-a3")
        .unwrap();
    fs.write(&so_a.join("enable"), "1").unwrap();
    fs.symlink(&so_a, &lun.join("ab0dd52157")).unwrap();
    let seen = t.observe().unwrap();
    assert_eq!(norm(seen.clone()), fresh());
    let now = seen.backstores.iter().find(|x| x.at == a).unwrap();
    assert_eq!(now.dev.as_deref(), Some(pb.as_path()));
    assert_eq!(
        (now.size, now.serial.as_deref()),
        (Some(8192), Some("changed-a3"))
    );

    // Gone.
    fs.unlink(&lun.join("ab0dd52157")).unwrap();
    fs.rmdir(&lun).unwrap();
    fs.rmdir(&so_a).unwrap();
    let seen = t.observe().unwrap();
    assert_eq!(norm(seen.clone()), fresh());
    assert!(seen.backstores.iter().all(|x| x.at != a));
}

/// After a plan's ops the backend reads back only what they made, and says exactly what
/// a whole observation says (in the same order); with a failed op it observes it all.
#[test]
fn the_state_after_applying_is_what_an_observation_sees() {
    use sbps_marshal::lio::{self, Op};
    let rig = Rig::new();
    let t = rig.target();
    let fresh = || rig.target().observe().unwrap();
    let refs: Vec<BackstoreRef> = (0..4)
        .map(|i| BackstoreRef::fileio(43 + i, &format!("a{i}0dd52157e1636")))
        .collect();
    let create = |i: usize| {
        let path = rig.image(&format!("PE/after{i}.squashfs"), 4096);
        create_op(
            &refs[i],
            path,
            4096,
            &format!("a{i}0dd52157e1636aaaaaaaaaaaaaaaa"),
        )
    };
    let map = |i: usize| map_op(43 + i as u64, &refs[i], &format!("a{i}0dd52157"));
    let batches = [
        vec![
            create(0),
            create(1),
            create(2),
            map(0),
            map(1),
            map(2),
            Op::EnableTpg,
        ],
        vec![
            Op::UnmapLun {
                lun: 44,
                serial: None,
            },
            Op::DeleteBackstore {
                at: refs[1].clone(),
            },
            create(3),
            map(3),
        ],
        // A failing op: the create of an existing backstore.
        vec![create(0), Op::DisableTpg],
        vec![
            Op::UnmapLun {
                lun: 43,
                serial: None,
            },
            Op::DeleteBackstore {
                at: refs[0].clone(),
            },
            Op::RemoveEmptyHba {
                plugin: "fileio".into(),
                hba: 99,
            },
        ],
    ];
    for (i, ops) in batches.iter().enumerate() {
        let before = t.observe().unwrap();
        let results = lio::apply(&t, ops, 2);
        let after = t.observe_after(before, &results).unwrap();
        assert_eq!(after, fresh(), "batch {i}: {results:?}");
        // And the memory it leaves is the kernel's: the next observation agrees too.
        assert_eq!(t.observe().unwrap(), fresh(), "batch {i}");
    }
}
