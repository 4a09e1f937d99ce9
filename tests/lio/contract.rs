//! The contract of the LIO target backend, run against the fake configfs (always)
//! and against the kernel's when `SBPS_LIO_CONFIGFS` names its root (in the VM:
//! tests/vm/run-contract). The same assertions hold for both: the fake must behave
//! exactly as the kernel does.

mod observe;

use std::path::PathBuf;

use sbps_marshal::ledger::Ledger;
use sbps_marshal::lio::fs::{FileKind, Fs};
use sbps_marshal::lio::{self, attr, saveconfig, Actual, BackstoreRef, LioError, Op, Target};
use sbps_marshal::plan::plan;
use sbps_testkit::{ByPath, FaultMode, Faulty, Recorder};

use crate::support::*;

pub(crate) fn create_op(at: &BackstoreRef, path: PathBuf, size: u64, serial: &str) -> Op {
    Op::CreateBackstore {
        at: at.clone(),
        path,
        size,
        serial: serial.into(),
    }
}

pub(crate) fn map_op(lun: u64, at: &BackstoreRef, alias: &str) -> Op {
    Op::MapLun {
        lun,
        at: at.clone(),
        alias: alias.into(),
    }
}

/// Applies `ops` to the target and to the model; both must agree.
fn run_and_check(t: &dyn Target, ops: &[Op]) -> Actual {
    let mut model = t.observe().unwrap();
    for op in ops {
        t.execute(op).unwrap_or_else(|e| panic!("{op}: {e}"));
        model.apply(op);
    }
    let seen = norm(t.observe().unwrap());
    assert_eq!(seen, norm(model), "observed state differs from the model");
    seen
}

#[test]
fn create_observe_delete() {
    let rig = Rig::new();
    let t = rig.target();
    let before = norm(t.observe().unwrap());
    assert!(before
        .tpg
        .as_ref()
        .is_some_and(|g| g.luns.is_empty() && !g.enabled));
    let a = BackstoreRef::fileio(0, "a50dd52157e1636");
    let b = BackstoreRef::fileio(1, "de4cc04e7dacfb9");
    let pa = rig.image("PE/a.squashfs", 45056);
    let pb = rig.image("PE/b.squashfs", 65536);
    let seen = run_and_check(
        &t,
        &[
            create_op(&a, pa.clone(), 45056, "a50dd52157e1636aaaaaaaaaaaaaaaa"),
            create_op(&b, pb, 65536, "de4cc04e7dacfb9ada0a6b4ccaaaaaa"),
            map_op(1, &a, "a50dd52157"),
            map_op(2, &b, "de4cc04e7d"),
        ],
    );
    let ba = seen.backstores.iter().find(|x| x.at == a).unwrap();
    assert_eq!(ba.dev.as_deref(), Some(pa.as_path()));
    assert_eq!(ba.size, Some(45056));
    assert!(ba.enabled && !ba.write_back);
    assert_eq!(
        ba.serial.as_deref(),
        Some("a50dd52157e1636aaaaaaaaaaaaaaaa")
    );
    // The kernel exports the SO name as SCSI product.
    let alias = rig
        .fs
        .read(
            &rig.root
                .join("core/fileio_0/a50dd52157e1636/attrib/emulate_model_alias"),
        )
        .unwrap();
    assert_eq!(alias.trim(), "1");
    let after = run_and_check(
        &t,
        &[
            Op::UnmapLun {
                lun: 1,
                serial: Some("a50dd52157e1636aaaaaaaaaaaaaaaa".into()),
            },
            Op::UnmapLun {
                lun: 2,
                serial: None,
            },
            Op::DeleteBackstore { at: a },
            Op::DeleteBackstore { at: b },
        ],
    );
    assert_eq!(after, before);
    assert!(
        after.hbas.is_empty(),
        "HBA directories are removed with their last object"
    );
}

/// The batched reads answer on configfs what reads by whole path answer: on the kernel's,
/// `RealFs` reads them through a handle on the directory (`lio::fs`). An object's and the
/// TPG's attribute files (the owner's read-write ones: not `hw_block_size`), an ALUA
/// group's files, and the four files the observation reads of a new object.
#[test]
fn reads_through_a_handle_are_reads_by_path() {
    let rig = Rig::new();
    let t = rig.target();
    let a = BackstoreRef::fileio(0, "a50dd52157e1636");
    let pa = rig.image("PE/a.squashfs", 45056);
    run_and_check(
        &t,
        &[
            create_op(&a, pa, 45056, "a50dd52157e1636aaaaaaaaaaaaaaaa"),
            map_op(1, &a, "a50dd52157"),
        ],
    );
    let so = rig.root.join("core").join(a.hba_dir()).join(&a.name);
    let by_path = ByPath(&rig.fs);
    for dir in [
        so.join("attrib"),
        rig.tpg().join("attrib"),
        rig.tpg().join("param"),
    ] {
        let got = owner_rw(&rig.fs, &dir);
        assert_eq!(got, owner_rw(&by_path, &dir), "{}", dir.display());
        assert!(
            got.as_ref().is_ok_and(|v| v.iter().all(|(_, t)| t.is_ok())),
            "{got:?}"
        );
    }
    let attrib: Vec<String> = owner_rw(&rig.fs, &so.join("attrib"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        attrib.iter().any(|n| n == "emulate_write_cache"),
        "{attrib:?}"
    );
    assert!(
        !attrib.iter().any(|n| n == "hw_block_size"),
        "read-only: {attrib:?}"
    );
    let files = [
        "info",
        "udev_path",
        "wwn/vpd_unit_serial",
        "enable",
        "no_such_file",
    ];
    let group = so.join("alua/default_tg_pt_gp");
    let alua = ["alua_access_state", "tg_pt_gp_id"];
    for (dir, names) in [(&so, &files[..]), (&group, &alua[..])] {
        let got = read_each(&rig.fs, dir, names);
        assert_eq!(got, read_each(&by_path, dir, names), "{}", dir.display());
    }
    let got = read_each(&rig.fs, &so, &files).unwrap();
    assert!(
        got[2].as_ref().is_ok_and(|s| s.contains("a50dd52157e1636")),
        "{got:?}"
    );
    assert_eq!(got[4], Err(Some(libc::ENOENT)));
}

#[test]
fn delete_linked_backstore_is_busy() {
    let rig = Rig::new();
    let t = rig.target();
    let a = BackstoreRef::fileio(0, "bsy");
    run_and_check(
        &t,
        &[
            create_op(&a, rig.image("x", 4096), 4096, "serial-busy-1"),
            map_op(3, &a, "al"),
        ],
    );
    let before = t.observe().unwrap();
    let e = t
        .execute(&Op::DeleteBackstore { at: a.clone() })
        .unwrap_err();
    assert!(matches!(e, LioError::Busy { .. }), "{e}");
    assert_eq!(t.observe().unwrap(), before);
    // Unmapping a LUN that now carries another serial is refused.
    let e = t
        .execute(&Op::UnmapLun {
            lun: 3,
            serial: Some("other".into()),
        })
        .unwrap_err();
    assert!(matches!(e, LioError::Refused(_)), "{e}");
    run_and_check(
        &t,
        &[
            Op::UnmapLun {
                lun: 3,
                serial: Some("serial-busy-1".into()),
            },
            Op::DeleteBackstore { at: a },
        ],
    );
}

#[test]
fn duplicates_are_exists_and_keep_the_original() {
    let rig = Rig::new();
    let t = rig.target();
    let a = BackstoreRef::fileio(0, "dup");
    let p = rig.image("d", 4096);
    run_and_check(
        &t,
        &[
            create_op(&a, p.clone(), 4096, "serial-dup"),
            map_op(1, &a, "x"),
        ],
    );
    let before = t.observe().unwrap();
    let e = t
        .execute(&create_op(&a, p, 4096, "serial-dup"))
        .unwrap_err();
    assert!(matches!(e, LioError::Exists { .. }), "{e}");
    let e = t.execute(&map_op(1, &a, "y")).unwrap_err();
    assert!(matches!(e, LioError::Exists { .. }), "{e}");
    assert_eq!(
        t.observe().unwrap(),
        before,
        "a failed duplicate must not roll back the original"
    );
}

#[test]
fn missing_objects_are_not_found() {
    let rig = Rig::new();
    let t = rig.target();
    let before = t.observe().unwrap();
    let ghost = BackstoreRef::fileio(7, "ghost");
    for op in [
        Op::DeleteBackstore { at: ghost.clone() },
        Op::UnmapLun {
            lun: 9,
            serial: None,
        },
        map_op(4, &ghost, "g"),
        Op::RemoveEmptyHba {
            plugin: "fileio".into(),
            hba: 7,
        },
    ] {
        let e = t.execute(&op).unwrap_err();
        assert!(matches!(e, LioError::NotFound { .. }), "{op}: {e}");
    }
    assert_eq!(
        t.observe().unwrap(),
        before,
        "a failed map leaves no empty lun_N behind"
    );
}

#[test]
fn wrong_paths_never_reach_the_kernel() {
    let rig = Rig::new();
    let t = rig.target();
    let before = t.observe().unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), [0u8; 512]).unwrap();
    let good = rig.image("PE/ok.squashfs", 4096);
    let link = rig.images.path().join("PE/escape");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let alias = rig.images.path().join("PE/alias.squashfs");
    std::os::unix::fs::symlink("ok.squashfs", &alias).unwrap();
    let root = rig.images.path().display().to_string();
    let cases = [
        (rig.images.path().join("PE/typo.squashfs"), 4096), // missing file, existing dir
        (rig.images.path().join("nodir/x.squashfs"), 4096), // missing dir
        (outside.path().to_path_buf(), 512),                // outside the mount
        (link.clone(), 512),                                // symlink out of the mount
        (good.clone(), 4097),                               // size differs
        (rig.images.path().join("PE"), 4096),               // a directory
        // One key, one file: other names of PE/ok.squashfs.
        (alias.clone(), 4096),                             // a symlink inside
        (format!("{root}/PE/./ok.squashfs").into(), 4096), // a `.` segment
        (format!("{root}/PE//ok.squashfs").into(), 4096),  // an empty segment
        (format!("{root}/./PE/ok.squashfs").into(), 4096), // `.` first
    ];
    for (i, (path, size)) in cases.into_iter().enumerate() {
        let at = BackstoreRef::fileio(i as u32, "wrong");
        let e = t
            .execute(&create_op(&at, path.clone(), size, "serial-wrong"))
            .unwrap_err();
        assert!(
            matches!(e, LioError::BackingFile { .. }),
            "{}: {e}",
            path.display()
        );
    }
    assert!(
        !rig.images.path().join("PE/typo.squashfs").exists(),
        "no file may be created"
    );
    assert_eq!(
        t.observe().unwrap(),
        before,
        "half-created backstores are rolled back"
    );
    assert_eq!(
        rig.image_files(),
        vec!["PE/alias.squashfs", "PE/escape", "PE/ok.squashfs"]
    );
}

/// A failed create never goes on to map its LUN: whatever answers to that name then
/// (here another object that took it first, with another file) is not what was
/// checked. The other images of the scan are still mapped; the TPG is not enabled.
#[test]
fn a_failed_create_never_maps_its_lun() {
    let rig = Rig::new();
    let t = rig.target();
    let at = BackstoreRef::fileio(3, "a50dd52157e1636");
    let other = BackstoreRef::fileio(4, "de4cc04e7dacfb9");
    t.execute(&create_op(
        &at,
        rig.image("PE/decoy.squashfs", 4096),
        4096,
        "serial-decoy",
    ))
    .unwrap();
    let ops = [
        create_op(&at, rig.image("PE/a.squashfs", 8192), 8192, "serial-a"),
        create_op(&other, rig.image("PE/b.squashfs", 4096), 4096, "serial-b"),
        map_op(3, &at, "a50dd52157"),
        map_op(4, &other, "de4cc04e7d"),
        Op::EnableTpg,
    ];
    let results = lio::apply(&t, &ops, 2);
    let outcome: Vec<(String, Option<String>)> = results
        .iter()
        .map(|r| {
            (
                r.op.to_string(),
                r.result.as_ref().err().map(|e| e.kind().to_string()),
            )
        })
        .collect();
    assert_eq!(
        outcome
            .iter()
            .map(|(_, e)| e.as_deref())
            .collect::<Vec<_>>(),
        vec![Some("exists"), None, Some("refused"), None, Some("refused")],
        "{outcome:?}"
    );
    assert!(
        results[2]
            .result
            .as_ref()
            .is_err_and(|e| e.to_string().contains("creating its backstore failed")),
        "{:?}",
        results[2].result
    );
    let luns: Vec<u64> = t
        .observe()
        .unwrap()
        .tpg
        .unwrap()
        .luns
        .keys()
        .copied()
        .collect();
    assert_eq!(luns, vec![4], "the decoy was not exported");
}

#[test]
fn create_sequence_sets_the_serial_before_enable_and_link() {
    let rig = Rig::new();
    let rec = Recorder::new(rig.fs.clone(), &rig.root);
    let t = rig.target_with(&rec);
    let a = BackstoreRef::fileio(4, "seq");
    t.execute(&create_op(&a, rig.image("s", 8192), 8192, "serial-seq"))
        .unwrap();
    t.execute(&map_op(11, &a, "seqlink")).unwrap();
    let lun = format!("iscsi/{IQN}/tpgt_1/lun/lun_11");
    assert_eq!(
        rec.take(),
        vec![
            "mkdir core/fileio_4".to_string(),
            "mkdir core/fileio_4/seq".into(),
            "write core/fileio_4/seq/control".into(),
            "write core/fileio_4/seq/udev_path".into(),
            "write core/fileio_4/seq/wwn/vpd_unit_serial".into(),
            "write core/fileio_4/seq/attrib/emulate_model_alias".into(),
            "write core/fileio_4/seq/enable".into(),
            format!("mkdir {lun}"),
            format!("symlink {lun}/seqlink"),
        ]
    );
    // Once exported, the kernel refuses to change the serial: it had to come first.
    let serial = rig.root.join("core/fileio_4/seq/wwn/vpd_unit_serial");
    assert_eq!(errno(rig.fs.write(&serial, "changed")), libc::EINVAL);
    assert_eq!(
        attr::parse_serial(&rig.fs.read(&serial).unwrap()).as_deref(),
        Some("serial-seq")
    );
    t.execute(&Op::UnmapLun {
        lun: 11,
        serial: None,
    })
    .unwrap();
    t.execute(&Op::DeleteBackstore { at: a }).unwrap();
    assert_eq!(
        rec.take(),
        vec![
            format!("unlink {lun}/seqlink"),
            format!("rmdir {lun}"),
            "rmdir core/fileio_4/seq".into(),
            "rmdir core/fileio_4".into(),
        ]
    );
}

#[test]
fn lun_numbers_are_exactly_as_requested() {
    let rig = Rig::new();
    let t = rig.target();
    let mut ops = Vec::new();
    let luns = [0u64, 7, 255, 4242, 65535];
    for (i, lun) in luns.iter().enumerate() {
        let at = BackstoreRef::fileio(i as u32 * 3, &format!("l{lun}"));
        ops.push(create_op(
            &at,
            rig.image(&format!("l{lun}"), 4096),
            4096,
            &format!("serial-l{lun}"),
        ));
        ops.push(map_op(*lun, &at, &format!("alias{lun}")));
    }
    let seen = run_and_check(&t, &ops);
    let tpg = seen.tpg.unwrap();
    assert_eq!(tpg.luns.keys().copied().collect::<Vec<_>>(), luns);
    assert_eq!(tpg.luns[&4242].alias.as_deref(), Some("alias4242"));
    // An empty lun_N (an interrupted map) is reused; a linked one is not.
    rig.fs.mkdir(&rig.tpg().join("lun/lun_9")).unwrap();
    let at = BackstoreRef::fileio(0, "l0");
    let e = t.execute(&map_op(7, &at, "again")).unwrap_err();
    assert!(matches!(e, LioError::Exists { .. }), "{e}");
    // (the kernel allows one object behind two LUNs; the planner never asks for it)
    t.execute(&map_op(9, &at, "reuse")).unwrap();
    assert_eq!(
        t.observe().unwrap().tpg.unwrap().luns[&9]
            .backstore
            .as_ref(),
        Some(&at)
    );
    // Statistics of a LUN, which the metrics exporter reads.
    for f in ["read_mbytes", "in_cmds"] {
        let v = rig
            .fs
            .read(&rig.tpg().join("lun/lun_9/statistics/scsi_tgt_port").join(f))
            .unwrap();
        assert!(v.trim().parse::<u64>().is_ok(), "{f}: {v:?}");
    }
}

#[test]
fn tpg_enable_and_disable() {
    let rig = Rig::new();
    let t = rig.target();
    let enabled = |t: &dyn Target| t.observe().unwrap().tpg.unwrap().enabled;
    assert!(!enabled(&t));
    t.execute(&Op::DisableTpg).unwrap();
    assert!(!enabled(&t));
    t.execute(&Op::EnableTpg).unwrap();
    assert!(enabled(&t));
    t.execute(&Op::EnableTpg).unwrap();
    assert!(enabled(&t));
    t.execute(&Op::DisableTpg).unwrap();
    assert!(!enabled(&t));
}

#[test]
fn saveconfig_round_trip() {
    let rig = Rig::new();
    let t = rig.target();
    let ps = [
        rig.projection("s3://boot-images/PE/a.squashfs", 45056),
        rig.projection("s3://boot-images/PE/b.squashfs", 4096),
    ];
    let d = desired(&ps);
    let p = plan(
        &d,
        &t.observe().unwrap(),
        &Ledger::new(),
        &rig.policy(),
        NOW,
    );
    assert!(lio::apply(&t, &p.ops, 4).iter().all(|r| r.result.is_ok()));
    let seen = t.observe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saveconfig.json");
    assert!(t.save_config(&file).unwrap());
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    assert!(
        !t.save_config(&file).unwrap(),
        "a steady state rewrites nothing"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);

    // Reading it back gives the same objects, serials, LUN numbers and aliases.
    let back = saveconfig::load(&file).unwrap().to_actual(IQN, 1);
    let ident = |a: &Actual| {
        let mut v: Vec<_> = a
            .backstores
            .iter()
            .map(|b| {
                (
                    b.at.name.clone(),
                    b.dev.clone(),
                    b.size,
                    b.serial.clone(),
                    b.enabled,
                    b.write_back,
                )
            })
            .collect();
        v.sort();
        let luns: Vec<_> = a
            .tpg
            .as_ref()
            .map(|g| {
                g.luns
                    .values()
                    .map(|l| {
                        (
                            l.index,
                            l.alias.clone(),
                            l.backstore.as_ref().map(|b| b.name.clone()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        (v, luns, a.tpg.as_ref().map(|g| g.enabled))
    };
    assert_eq!(ident(&back), ident(&seen));
    // And plans to nothing: the file describes the same target.
    assert!(plan(&d, &back, &p.ledger, &rig.policy(), NOW)
        .ops
        .is_empty());

    // Its shape is rtslib's (the key sets of the sample written by targetcli on 6.1).
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let sample: serde_json::Value =
        serde_json::from_str(include_str!("../data/saveconfig-with-targetcli-lun.json")).unwrap();
    let so = &doc["storage_objects"][0];
    let sso = &sample["storage_objects"][0];
    assert_eq!(keys_of(so), keys_of(sso));
    assert_eq!(keys_of(&so["attributes"]), keys_of(&sso["attributes"]));
    assert_eq!(keys_of(&so["alua_tpgs"][0]), keys_of(&sso["alua_tpgs"][0]));
    assert_eq!(so["alua_tpgs"][0], sso["alua_tpgs"][0]);
    assert_eq!(so["attributes"]["emulate_model_alias"], 1);
    assert_eq!(so["attributes"]["emulate_write_cache"], 0);
    let target = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["wwn"] == IQN)
        .unwrap();
    let tpg = &target["tpgs"][0];
    let stpg = &sample["targets"][0]["tpgs"][0];
    assert_eq!(keys_of(tpg), keys_of(stpg));
    assert_eq!(keys_of(&tpg["attributes"]), keys_of(&stpg["attributes"]));
    assert_eq!(keys_of(&tpg["parameters"]), keys_of(&stpg["parameters"]));
    assert_eq!(tpg["portals"], stpg["portals"]);
    assert_eq!(keys_of(&tpg["luns"][0]), keys_of(&stpg["luns"][0]));
    assert_eq!(target["parameters"], sample["targets"][0]["parameters"]);
}

/// Counts the configfs changes of a clean apply, then for every k crashes the
/// agent after k changes and checks that observe → plan → apply converges, with
/// nothing left over (no empty HBA or lun_N, no stray backing file).
#[test]
fn crash_in_the_middle_of_a_create_converges() {
    let keys = [
        "s3://boot-images/PE/crash-a.squashfs",
        "s3://boot-images/PE/crash-b.squashfs",
    ];
    let total = {
        let rig = Rig::new();
        let ps: Vec<_> = keys.iter().map(|k| rig.projection(k, 4096)).collect();
        let counter = Faulty::counting(rig.fs.clone());
        let t = rig.target_with(&counter);
        let p = plan(
            &desired(&ps),
            &t.observe().unwrap(),
            &Ledger::new(),
            &rig.policy(),
            NOW,
        );
        assert!(lio::apply(&t, &p.ops, 1).iter().all(|r| r.result.is_ok()));
        counter.calls()
    };
    assert_eq!(
        total,
        2 * 9 + 1,
        "2 × (2 mkdir + 5 writes + mkdir lun + symlink) + TPG enable"
    );
    for k in 0..total {
        let rig = Rig::new();
        let ps: Vec<_> = keys.iter().map(|key| rig.projection(key, 4096)).collect();
        let d = desired(&ps);
        let crashing = Faulty::new(rig.fs.clone(), k, FaultMode::Crash);
        let t = rig.target_with(&crashing);
        let p = plan(
            &d,
            &t.observe().unwrap(),
            &Ledger::new(),
            &rig.policy(),
            NOW,
        );
        let failed = lio::apply(&t, &p.ops, 1)
            .iter()
            .filter(|r| r.result.is_err())
            .count();
        assert!(failed > 0, "k={k}: the crash must show");
        // Restart: a healthy agent with the ledger written before applying.
        let t = rig.target();
        let mut ledger = p.ledger;
        let mut rounds = 0;
        loop {
            let p = plan(&d, &t.observe().unwrap(), &ledger, &rig.policy(), NOW + 1);
            ledger = p.ledger.clone();
            if p.ops.is_empty() {
                break;
            }
            rounds += 1;
            assert!(rounds <= 2, "k={k}: no convergence: {:?}", p.ops);
            for r in lio::apply(&t, &p.ops, 4) {
                assert!(r.result.is_ok(), "k={k}: {}: {:?}", r.op, r.result);
            }
        }
        let a = t.observe().unwrap();
        assert_eq!(a.backstores.len(), 2, "k={k}");
        assert!(
            a.backstores.iter().all(|b| b.enabled && b.serial.is_some()),
            "k={k}"
        );
        let used: std::collections::BTreeSet<_> = a
            .backstores
            .iter()
            .map(|b| (b.at.plugin.clone(), b.at.hba))
            .collect();
        assert_eq!(a.hbas, used, "k={k}: empty HBA left");
        let tpg = a.tpg.unwrap();
        assert!(tpg.enabled, "k={k}");
        assert_eq!(tpg.luns.len(), 2, "k={k}");
        assert!(
            tpg.luns.values().all(|l| l.backstore.is_some()),
            "k={k}: empty lun_N left"
        );
        assert_eq!(rig.image_files().len(), 2, "k={k}: stray file");
    }
}

/// A transient failure in the middle of a create rolls the half-made object back.
#[test]
fn failed_step_rolls_back() {
    for k in 2..7 {
        let rig = Rig::new();
        let failing = Faulty::new(rig.fs.clone(), k, FaultMode::FailOnce);
        let t = rig.target_with(&failing);
        let before = t.observe().unwrap();
        let at = BackstoreRef::fileio(2, "rb");
        let e = t
            .execute(&create_op(&at, rig.image("rb", 4096), 4096, "serial-rb"))
            .unwrap_err();
        assert!(matches!(e, LioError::Io { .. }), "k={k}: {e}");
        assert_eq!(t.observe().unwrap(), before, "k={k}: not rolled back");
    }
}

/// A target the original agent built with targetcli (one HBA per object, random
/// aliases, write_back true and false, LUNs 0/1/5) is adopted without any change.
#[test]
fn adopts_a_targetcli_built_target() {
    let rig = Rig::new();
    let text = include_str!("../data/saveconfig-with-targetcli-lun.json")
        .replace(
            "/files/",
            &format!("{}/files/", rig.images.path().display()),
        )
        .replace("iqn.2023-06.csm.iscsi:testhost", IQN);
    let saved = saveconfig::parse(&text).unwrap();
    let mut ps = Vec::new();
    for o in &saved.objects {
        let dev = PathBuf::from(o.dev.clone().unwrap());
        let size = o.size.unwrap();
        let rel = dev
            .strip_prefix(rig.images.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        rig.image(&rel, size);
        ps.push(sbps_marshal::desired::Projection {
            kind: sbps_marshal::desired::Kind::Pe,
            key: format!("s3://boot-images/{rel}"),
            identity: sbps_marshal::identity::Identity {
                name: o.name.clone(),
                serial: o.wwn.clone().unwrap(),
            },
            object_key: rel,
            path: dev,
            size,
            etag: "e".into(),
            image_id: None,
            image_name: None,
        });
    }
    let d = desired(&ps);
    // From the file alone (what the targetcli backend observes)…
    let p = plan(
        &d,
        &saved.to_actual(IQN, 1),
        &Ledger::new(),
        &rig.policy(),
        NOW,
    );
    assert!(p.ops.is_empty() && p.unmanaged.is_empty(), "{:?}", p.ops);
    // …and from configfs after restoring it there.
    sbps_testkit::materialize(&*rig.fs, &rig.root, &saved).unwrap();
    let t = rig.target();
    let a = t.observe().unwrap();
    assert!(
        a.backstores.iter().any(|b| b.write_back),
        "tc2 was made write_back by targetcli"
    );
    let p = plan(&d, &a, &Ledger::new(), &rig.policy(), NOW);
    assert!(
        p.ops.is_empty(),
        "adoption must not touch anything: {:?}",
        p.ops
    );
    let luns: Vec<_> = p
        .ledger
        .luns
        .values()
        .map(|r| (r.name.clone(), r.lun))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(
        luns,
        vec![("img1".into(), 0), ("tc2".into(), 1), ("tc3".into(), 5)]
    );
}

/// The raw kernel semantics the backend relies on (errno by errno).
#[test]
fn kernel_semantics() {
    let rig = Rig::new();
    let fs = &rig.fs;
    let core = rig.root.join("core");
    let hba = core.join("fileio_9");
    let so = hba.join("raw");
    assert_eq!(errno(fs.mkdir(&so)), libc::ENOENT, "SO without HBA");
    assert_eq!(errno(fs.mkdir(&core.join("fileio"))), libc::EINVAL);
    assert_eq!(errno(fs.mkdir(&core.join("foo_0"))), libc::EINVAL);
    fs.mkdir(&hba).unwrap();
    fs.mkdir(&so).unwrap();
    assert_eq!(errno(fs.mkdir(&so)), libc::EEXIST);
    assert_eq!(errno(fs.read(&so.join("control"))), libc::EACCES);
    assert_eq!(
        attr::parse_serial(&fs.read(&so.join("wwn/vpd_unit_serial")).unwrap()),
        None
    );
    assert_eq!(
        attr::parse_flag(&fs.read(&so.join("enable")).unwrap()),
        Some(false)
    );
    assert_eq!(
        attr::parse_info(&fs.read(&so.join("info")).unwrap()).file,
        None
    );
    assert_eq!(fs.read(&so.join("udev_path")).unwrap().trim(), "");
    assert_eq!(
        fs.read(&so.join("wwn/vendor_id")).unwrap().trim(),
        "LIO-ORG"
    );
    assert_eq!(
        errno(fs.write(&so.join("enable"), "1")),
        libc::EINVAL,
        "no fd_dev_name"
    );
    assert_eq!(
        errno(fs.write(&so.join("control"), "fd_dev_size=abc")),
        libc::EINVAL
    );
    let missing_dir = rig.images.path().join("nodir/x.img");
    fs.write(
        &so.join("control"),
        &format!("fd_dev_name={},fd_dev_size=4096", missing_dir.display()),
    )
    .unwrap();
    assert_eq!(errno(fs.write(&so.join("enable"), "1")), libc::ENOENT);
    // The reason for the agent's check: a missing file in an existing dir is created.
    let created = rig.images.path().join("created-by-lio.img");
    fs.write(
        &so.join("control"),
        &format!("fd_dev_name={},fd_dev_size=4096,foo=bar", created.display()),
    )
    .unwrap();
    fs.write(&so.join("wwn/vpd_unit_serial"), "serial-raw-1\n")
        .unwrap();
    assert_eq!(errno(fs.write(&so.join("enable"), "0")), libc::EINVAL);
    fs.write(&so.join("enable"), "1").unwrap();
    assert!(created.is_file() && std::fs::metadata(&created).unwrap().len() == 0);
    assert_eq!(errno(fs.write(&so.join("enable"), "1")), libc::EEXIST);
    let info = attr::parse_info(&fs.read(&so.join("info")).unwrap());
    assert_eq!(
        (
            info.file.as_deref(),
            info.size,
            info.buffered,
            info.exported
        ),
        (created.to_str(), Some(4096), false, false)
    );
    assert_eq!(
        fs.read(&so.join("attrib/block_size")).unwrap().trim(),
        "512"
    );
    assert_eq!(
        fs.read(&so.join("attrib/queue_depth")).unwrap().trim(),
        "128"
    );

    let so2 = hba.join("raw2");
    fs.mkdir(&so2).unwrap();
    fs.write(
        &so2.join("control"),
        &format!("fd_dev_name={},fd_dev_size=4096", created.display()),
    )
    .unwrap();
    let lun = rig.tpg().join("lun");
    assert_eq!(errno(fs.mkdir(&lun.join("lun0"))), libc::EINVAL);
    fs.mkdir(&lun.join("lun_3")).unwrap();
    assert_eq!(
        errno(fs.symlink(&so2, &lun.join("lun_3/x"))),
        libc::ENODEV,
        "not enabled"
    );
    assert_eq!(
        errno(fs.symlink(&hba, &lun.join("lun_3/x"))),
        libc::EFAULT,
        "not a backstore"
    );
    fs.symlink(&so, &lun.join("lun_3/link")).unwrap();
    assert_eq!(
        fs.read_dir(&lun.join("lun_3"))
            .unwrap()
            .iter()
            .filter(|e| e.kind == FileKind::Symlink)
            .count(),
        1
    );
    assert_eq!(
        attr::parse_link_target(&fs.readlink(&lun.join("lun_3/link")).unwrap()),
        Some(BackstoreRef::fileio(9, "raw"))
    );
    fs.write(&so2.join("enable"), "1").unwrap();
    assert_eq!(
        errno(fs.symlink(&so2, &lun.join("lun_3/second"))),
        libc::EEXIST
    );
    assert!(attr::parse_info(&fs.read(&so.join("info")).unwrap()).exported);
    assert_eq!(
        errno(fs.write(&so.join("wwn/vpd_unit_serial"), "other")),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.write(&so.join("attrib/emulate_model_alias"), "1")),
        libc::EINVAL
    );
    assert_eq!(errno(fs.rmdir(&so)), libc::EBUSY);
    assert_eq!(errno(fs.rmdir(&lun.join("lun_3"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs.rmdir(&hba)), libc::ENOTEMPTY);
    assert_eq!(errno(fs.rmdir(&rig.tpg())), libc::ENOTEMPTY);
    assert_eq!(
        errno(fs.write(&rig.tpg().join("attrib/generate_node_acls"), "2")),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.mkdir(&rig.p_tpg_other())),
        libc::EINVAL,
        "tpg_1 is not tpgt_N"
    );
    fs.unlink(&lun.join("lun_3/link")).unwrap();
    fs.rmdir(&lun.join("lun_3")).unwrap();
    fs.rmdir(&so).unwrap();
    fs.rmdir(&so2).unwrap();
    fs.rmdir(&hba).unwrap();
}

trait OtherTpg {
    fn p_tpg_other(&self) -> PathBuf;
}
impl OtherTpg for Rig {
    fn p_tpg_other(&self) -> PathBuf {
        self.root.join("iscsi").join(IQN).join("tpg_1")
    }
}
