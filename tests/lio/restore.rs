//! Compatibility with the real rtslib: a saveconfig.json written by our code is
//! accepted by `targetctl restore` (or `targetcli restoreconfig`), and the LUN
//! numbers, serials, backing files and sizes survive; the restored target is
//! adopted with no changes; and a file rtslib writes back loads with our reader.
//!
//! Runs only when `SBPS_TARGETCTL` names the `targetctl` (or `targetcli`) binary,
//! which needs the kernel's configfs (`SBPS_LIO_CONFIGFS`) and root. It CLEARS THE
//! WHOLE LIO CONFIGURATION: run it only in the test VM (tests/vm/run-restore).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sbps_marshal::ledger::Ledger;
use sbps_marshal::lio::{self, saveconfig, Actual, BackstoreRef, Op, Target};
use sbps_marshal::plan::{alias_for, plan};

use crate::support::*;

/// The rtslib command-line tool under test.
struct Tool {
    bin: OsString,
    /// `targetcli` (one-shot commands) rather than `targetctl`.
    targetcli: bool,
}

impl Tool {
    fn from_env() -> Option<Tool> {
        let bin = std::env::var_os("SBPS_TARGETCTL")?;
        let targetcli = Path::new(&bin)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("targetcli"));
        Some(Tool { bin, targetcli })
    }

    /// Runs the tool; panics on a non-zero exit or on any error rtslib reports
    /// (`targetctl restore` exits 0 even when it skipped objects: it prints
    /// `..., skipped` lines to stderr).
    fn run(&self, args: &[&str]) -> String {
        let t0 = Instant::now();
        let out = std::process::Command::new(&self.bin)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.bin));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "[{:.1}s] {} {} -> {}\n  stdout: {}\n  stderr: {}",
            t0.elapsed().as_secs_f64(),
            self.bin.to_string_lossy(),
            args.join(" "),
            out.status,
            stdout.trim(),
            stderr.trim()
        );
        assert!(out.status.success(), "{args:?} failed: {}", out.status);
        let text = format!("{stdout}\n{stderr}");
        for bad in ["skipped", "Traceback", "Error", "No saved config file"] {
            assert!(!text.contains(bad), "{args:?} reported {bad:?}:\n{text}");
        }
        text
    }

    fn clear(&self) {
        if self.targetcli {
            self.run(&["clearconfig", "confirm=True"]);
        } else {
            self.run(&["clear"]);
        }
    }

    fn restore(&self, file: &Path) {
        let f = file.to_str().unwrap();
        if self.targetcli {
            self.run(&["restoreconfig", f, "clear_existing=True"]);
        } else {
            self.run(&["restore", f]);
        }
    }

    fn save(&self, file: &Path) {
        let f = file.to_str().unwrap();
        if self.targetcli {
            self.run(&["saveconfig", f]);
        } else {
            self.run(&["save", f]);
        }
    }
}

/// What must survive a restore: per LUN number, the backstore's name, serial,
/// file, size, enabled and write_back (HBA numbers may change: rtslib renumbers
/// them), plus the LUN alias and the TPG's enable.
type Ident = (
    Vec<(
        u64,
        Option<String>,
        Option<(
            String,
            Option<String>,
            Option<PathBuf>,
            Option<u64>,
            bool,
            bool,
        )>,
    )>,
    Option<bool>,
);

fn ident(a: &Actual) -> Ident {
    let luns =
        a.tpg
            .as_ref()
            .map(|g| {
                g.luns
                    .values()
                    .map(|l| {
                        let b =
                            l.backstore.as_ref().map(|at| {
                                let b = a.backstores.iter().find(|b| &b.at == at).unwrap_or_else(
                                    || panic!("LUN {} links a missing {at:?}", l.index),
                                );
                                (
                                    b.at.name.clone(),
                                    b.serial.clone(),
                                    b.dev.clone(),
                                    b.size,
                                    b.enabled,
                                    b.write_back,
                                )
                            });
                        (l.index, l.alias.clone(), b)
                    })
                    .collect()
            })
            .unwrap_or_default();
    (luns, a.tpg.as_ref().map(|g| g.enabled))
}

#[test]
fn rtslib_restores_our_saveconfig() {
    let Some(tool) = Tool::from_env() else {
        eprintln!("rtslib_restores_our_saveconfig: skipped: SBPS_TARGETCTL is not set (run tests/vm/run-restore)");
        return;
    };
    let rig = Rig::new();
    assert!(
        rig.real,
        "SBPS_TARGETCTL is set but SBPS_LIO_CONFIGFS is not: this test needs the kernel's configfs"
    );
    let t = rig.target();

    // 1. Build the target with the agent's own code path: three backstores of
    //    different sizes behind LUNs 0, 3 and 7 (deliberately not 0, 1, 2).
    let ps = [
        rig.projection("s3://boot-images/PE/restore-a.squashfs", 4096),
        rig.projection("s3://boot-images/PE/restore-b.squashfs", 45056),
        rig.projection("s3://boot-images/PE/restore-c.squashfs", 65536),
    ];
    let luns = [0u64, 3, 7];
    let mut ops = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        let at = BackstoreRef::fileio(i as u32, &p.identity.name);
        ops.push(Op::CreateBackstore {
            at: at.clone(),
            path: p.path.clone(),
            size: p.size,
            serial: p.identity.serial.clone(),
        });
        ops.push(Op::MapLun {
            lun: luns[i],
            at,
            alias: alias_for(&p.identity.serial),
        });
    }
    ops.push(Op::EnableTpg);
    // The first two (and the TPG) are saved whole; the third is patched into that file,
    // as a scan after one new image does: rtslib must restore the patched file.
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("saveconfig.json");
    let (first, third): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|op| match op {
        Op::CreateBackstore { at, .. } | Op::MapLun { at, .. } => at.hba != 2,
        _ => true,
    });
    for op in &first {
        t.execute(op).unwrap_or_else(|e| panic!("{op}: {e}"));
    }
    t.observe().unwrap();
    assert!(t.save_config(&ours).unwrap());
    let earlier = t.observe().unwrap();
    let applied = lio::apply(&t, &third, 1);
    assert!(applied.iter().all(|r| r.result.is_ok()), "{applied:?}");
    let before = t.observe_after(earlier, &applied).unwrap();
    assert_eq!(before, t.observe().unwrap(), "read back after applying");
    let want = ident(&before);
    assert_eq!(
        want.0.iter().map(|l| l.0).collect::<Vec<_>>(),
        luns,
        "LUNs as built"
    );
    assert_eq!(want.1, Some(true));
    let d = desired(&ps);
    let adopted = plan(&d, &before, &Ledger::new(), &rig.policy(), NOW);
    assert!(adopted.ops.is_empty(), "as built: {:?}", adopted.ops);

    // 2. Our saveconfig.json, patched: byte for byte the whole dump.
    assert!(t.save_config(&ours).unwrap());
    let whole = saveconfig::to_text(&saveconfig::dump(&*rig.fs, &rig.root).unwrap());
    assert_eq!(
        std::fs::read_to_string(&ours).unwrap(),
        whole,
        "patched file"
    );
    eprintln!(
        "our saveconfig.json (patched): {} bytes",
        std::fs::metadata(&ours).unwrap().len()
    );

    // 3. Clear everything with rtslib; none of our objects may remain.
    tool.clear();
    let cleared = t.observe().unwrap();
    assert!(
        cleared.tpg.is_none() && cleared.backstores.is_empty() && cleared.hbas.is_empty(),
        "after clear: {cleared:?}"
    );
    assert!(
        !rig.root.join("iscsi").join(IQN).exists(),
        "the target survived the clear"
    );

    // 4. rtslib restores our file; the same LUN numbers carry the same objects.
    tool.restore(&ours);
    let restored = t.observe().unwrap();
    eprintln!(
        "HBAs before: {:?}, after restore: {:?}",
        before.hbas, restored.hbas
    );
    assert_eq!(ident(&restored), want, "restored target differs");
    for b in &restored.backstores {
        let so = rig.root.join("core").join(b.at.hba_dir()).join(&b.at.name);
        let alias = rig.fs.read(&so.join("attrib/emulate_model_alias")).unwrap();
        assert_eq!(alias.trim(), "1", "{}: emulate_model_alias", b.at.name);
        let wc = rig.fs.read(&so.join("attrib/emulate_write_cache")).unwrap();
        assert_eq!(wc.trim(), "0", "{}: emulate_write_cache", b.at.name);
    }
    // The portal and the TPG attributes came back too.
    assert!(rig.tpg().join("np").join(PORTAL).exists(), "portal");
    for (a, v) in [
        ("authentication", "0"),
        ("generate_node_acls", "1"),
        ("demo_mode_write_protect", "1"),
        ("cache_dynamic_acls", "1"),
    ] {
        let got = rig.fs.read(&rig.tpg().join("attrib").join(a)).unwrap();
        assert_eq!(got.trim(), v, "TPG attribute {a}");
    }

    // 5. The agent adopts the restored target: nothing to do, same LUN numbers.
    let p = plan(&d, &restored, &Ledger::new(), &rig.policy(), NOW);
    assert!(
        p.ops.is_empty(),
        "adoption must not touch anything: {:?}",
        p.ops
    );
    assert!(p.unmanaged.is_empty(), "unmanaged: {:?}", p.unmanaged);
    let adopted_luns: Vec<_> = ps
        .iter()
        .map(|x| p.ledger.luns.get(&x.identity.serial).map(|r| r.lun))
        .collect();
    assert_eq!(adopted_luns, vec![Some(0), Some(3), Some(7)]);
    // And with the ledger of the original build, too.
    let p = plan(&d, &restored, &adopted.ledger, &rig.policy(), NOW);
    assert!(p.ops.is_empty(), "with the ledger: {:?}", p.ops);

    // 6. Reverse: rtslib's own dump of the restored target loads with our reader
    //    and describes the same target.
    let theirs = dir.path().join("rtslib-saveconfig.json");
    tool.save(&theirs);
    let back = saveconfig::load(&theirs).unwrap().to_actual(IQN, 1);
    assert_eq!(ident(&back), want, "rtslib's file read back differs");
    let p = plan(&d, &back, &Ledger::new(), &rig.policy(), NOW);
    assert!(p.ops.is_empty(), "from rtslib's file: {:?}", p.ops);
    // Our dump of the same configfs equals rtslib's, up to the order of the
    // storage objects and LUNs (rtslib lists them in configfs directory order).
    let their_doc =
        sorted(serde_json::from_str(&std::fs::read_to_string(&theirs).unwrap()).unwrap());
    let our_doc = sorted(saveconfig::dump(&*rig.fs, &rig.root).unwrap());
    let mut diffs = Vec::new();
    diff("", &our_doc, &their_doc, &mut diffs);
    assert!(
        diffs.is_empty(),
        "our dump vs rtslib's saveconfig of the same configfs:\n  {}",
        diffs.join("\n  ")
    );
    eprintln!("our dump of the restored configfs equals rtslib's saveconfig (up to order)");
}

/// Storage objects by name, LUNs by index.
fn sorted(mut doc: serde_json::Value) -> serde_json::Value {
    let key = |v: &serde_json::Value, k: &str| v[k].to_string();
    if let Some(a) = doc["storage_objects"].as_array_mut() {
        a.sort_by_key(|o| key(o, "name"));
    }
    for t in doc["targets"].as_array_mut().into_iter().flatten() {
        for g in t["tpgs"].as_array_mut().into_iter().flatten() {
            if let Some(l) = g["luns"].as_array_mut() {
                l.sort_by_key(|x| x["index"].as_u64());
            }
        }
    }
    doc
}

/// JSON paths where `a` and `b` differ (arrays by position).
fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(&p, u, v, out),
                    (u, v) => out.push(format!("{p}: ours {u:?}, rtslib {v:?}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), u, v, out);
            }
        }
        _ if a != b => out.push(format!("{path}: ours {a}, rtslib {b}")),
        _ => {}
    }
}
