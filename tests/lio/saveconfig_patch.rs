//! saveconfig.json patched after each change is byte for byte the full dump: whatever
//! sequence of creates, removals, replacements and changes made behind the backend's
//! back (on the fake configfs, or the kernel's when `SBPS_LIO_CONFIGFS` names it). Not
//! among them: a value written in place on an unchanged object (an attribute,
//! `udev_path`), which no observation vouches for (see `sbps_marshal::lio::saved`).

use std::path::Path;

use proptest::prelude::*;
use sbps_marshal::lio::fs::Fs;
use sbps_marshal::lio::{saveconfig, Actual, BackstoreRef, ConfigfsTarget, Op, OpResult, Target};

use crate::support::*;

const SLOTS: u64 = 6;

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Backstore `slot` on file `file`, exported at LUN `slot` (if absent).
    Create { slot: u64, file: u8 },
    /// Its LUN and itself gone.
    Remove { slot: u64 },
    /// Removed and made again under its name, on another file and serial.
    Replace { slot: u64, file: u8 },
    /// LUN `slot` made to link backstore `other` instead, under the same alias.
    Relink { slot: u64, other: u64 },
    /// Unmapped only (the backstore stays, no LUN exports it).
    Unmap { slot: u64 },
    /// Behind the back: a new serial on an object no LUN exports.
    Serial { slot: u64, n: u8 },
    /// The TPG enabled or not, a TPG attribute changed.
    Tpg { on: bool, timeout: u8 },
    /// An observation in between, or none (the save then observes itself).
    Observe,
    /// Someone else writes the file.
    Clobber,
}

fn step() -> impl Strategy<Value = Step> {
    let slot = 0..SLOTS;
    prop_oneof![
        4 => (slot.clone(), 0..3u8).prop_map(|(slot, file)| Step::Create { slot, file }),
        2 => slot.clone().prop_map(|slot| Step::Remove { slot }),
        2 => (slot.clone(), 0..3u8).prop_map(|(slot, file)| Step::Replace { slot, file }),
        1 => (slot.clone(), 0..SLOTS).prop_map(|(slot, other)| Step::Relink { slot, other }),
        1 => slot.clone().prop_map(|slot| Step::Unmap { slot }),
        1 => (slot.clone(), 0..3u8).prop_map(|(slot, n)| Step::Serial { slot, n }),
        1 => (any::<bool>(), 10..20u8).prop_map(|(on, timeout)| Step::Tpg { on, timeout }),
        1 => Just(Step::Observe),
        1 => Just(Step::Clobber),
    ]
}

fn at(slot: u64) -> BackstoreRef {
    BackstoreRef::fileio(50 + slot as u32, &format!("bb{slot}dd52157e1636"))
}

struct World<'a> {
    rig: &'a Rig,
    t: ConfigfsTarget<DynFs>,
    generation: u64,
    /// The last observation, and the ops run since (what the agent hands
    /// `observe_after`); None when unknown.
    before: Option<Actual>,
    applied: Vec<OpResult>,
}

impl World<'_> {
    fn so(&self, slot: u64) -> std::path::PathBuf {
        self.rig
            .root
            .join("core")
            .join(at(slot).hba_dir())
            .join(&at(slot).name)
    }
    fn lun(&self, slot: u64) -> std::path::PathBuf {
        self.rig.tpg().join(format!("lun/lun_{}", 50 + slot))
    }
    fn exists(&self, slot: u64) -> bool {
        self.rig.fs.exists(&self.so(slot))
    }
    fn linked(&self, slot: u64) -> bool {
        self.rig.fs.exists(&self.lun(slot).join(format!("a{slot}")))
    }
    /// Ops are allowed to fail (a step that does not apply to the state): the file
    /// must mirror the kernel whatever happened.
    fn op(&mut self, op: Op) {
        let result = self.t.execute(&op);
        self.applied.push(OpResult {
            op,
            result,
            elapsed: Default::default(),
        });
    }
    /// Observes, from the ops since the last observation when `after` (as the agent does
    /// right after applying), in full otherwise.
    fn observe(&mut self, after: bool) {
        let applied = std::mem::take(&mut self.applied);
        let seen = match self.before.take() {
            Some(before) if after => self.t.observe_after(before, &applied),
            _ => self.t.observe(),
        };
        self.before = Some(seen.unwrap());
    }
    fn create(&mut self, slot: u64, file: u8) {
        self.generation += 1;
        let size = 4096 * (1 + u64::from(file));
        let path = self.rig.image(&format!("PE/f{file}.squashfs"), size);
        let serial = format!("bb{slot}dd52157e1636{:015x}", self.generation);
        self.op(Op::CreateBackstore {
            at: at(slot),
            path,
            size,
            serial,
        });
        self.op(Op::MapLun {
            lun: 50 + slot,
            at: at(slot),
            alias: format!("a{slot}"),
        });
    }
    fn unmap(&mut self, slot: u64) {
        if self.rig.fs.exists(&self.lun(slot)) {
            self.op(Op::UnmapLun {
                lun: 50 + slot,
                serial: None,
            });
        }
    }
    fn remove(&mut self, slot: u64) {
        self.unmap(slot);
        for other in 0..SLOTS {
            // A relinked LUN may export it too.
            let link = self.lun(other).join(format!("a{other}"));
            if self
                .rig
                .fs
                .readlink(&link)
                .is_ok_and(|t| t.ends_with(&at(slot).name))
            {
                self.unmap(other);
            }
        }
        self.op(Op::DeleteBackstore { at: at(slot) });
    }

    /// Runs `s`; true when it changed LIO behind the backend's back.
    fn run(&mut self, s: Step, file: &Path) -> bool {
        let fs = self.rig.fs.clone();
        let behind = matches!(s, Step::Relink { .. } | Step::Serial { .. });
        match s {
            Step::Create { slot, file } if !self.exists(slot) => self.create(slot, file),
            Step::Remove { slot } => self.remove(slot),
            Step::Replace { slot, file } => {
                self.remove(slot);
                self.create(slot, file);
            }
            Step::Relink { slot, other } if self.linked(slot) && self.exists(other) => {
                let link = self.lun(slot).join(format!("a{slot}"));
                let _ = fs.unlink(&link);
                let _ = fs.symlink(&self.so(other), &link);
            }
            Step::Unmap { slot } => self.unmap(slot),
            Step::Serial { slot, n } if self.exists(slot) => {
                let _ = fs.write(&self.so(slot).join("wwn/vpd_unit_serial"), &format!("s{n}"));
            }
            Step::Tpg { on, timeout } => {
                self.op(if on { Op::EnableTpg } else { Op::DisableTpg });
                let attr = self.rig.tpg().join("attrib/login_timeout");
                let _ = fs.write(&attr, &timeout.to_string());
            }
            Step::Observe => self.observe(false),
            Step::Clobber => std::fs::write(file, "{}\n").unwrap(),
            _ => {}
        }
        behind
    }
}

fn check(rig: &Rig, steps: &[Step]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saveconfig.json");
    let mut w = World {
        rig,
        t: rig.target(),
        generation: 0,
        before: None,
        applied: Vec::new(),
    };
    for (i, s) in steps.iter().enumerate() {
        let behind = w.run(*s, &file);
        // The agent saves what it observed (a save after the backend's own changes
        // observes by itself): a change behind its back reaches the file once observed.
        match i % 3 {
            _ if behind => w.observe(false),
            0 => w.observe(true),
            1 => w.observe(false),
            _ => w.before = None,
        }
        if let Some(seen) = &w.before {
            let fresh = rig.target().observe().unwrap();
            prop_assert_eq!(seen, &fresh, "after step {} {:?}", i, s);
        }
        w.t.save_config(&file).unwrap();
        let full = saveconfig::to_text(&saveconfig::dump(rig.fs.as_ref(), &rig.root).unwrap());
        let patched = std::fs::read_to_string(&file).unwrap();
        prop_assert!(
            patched == full,
            "after step {i} {s:?}:\n{}",
            diff(&full, &patched)
        );
    }
    Ok(())
}

/// The first line that differs, with its neighbours.
fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let i = w
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(g.len()));
    let lo = i.saturating_sub(3);
    format!(
        "line {i}\n--- full dump\n{}\n--- patched\n{}",
        w[lo..(i + 3).min(w.len())].join("\n"),
        g[lo..(i + 3).min(g.len())].join("\n")
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn a_patched_saveconfig_is_the_full_dump(steps in prop::collection::vec(step(), 1..24)) {
        let rig = Rig::new();
        check(&rig, &steps)?;
    }
}

/// The same on a long fixed sequence that touches every kind of step.
#[test]
fn every_kind_of_change_in_turn() {
    let rig = Rig::new();
    let mut steps = Vec::new();
    for slot in 0..SLOTS {
        steps.push(Step::Create {
            slot,
            file: (slot % 3) as u8,
        });
    }
    steps.extend([
        Step::Tpg {
            on: true,
            timeout: 12,
        },
        Step::Replace { slot: 1, file: 2 },
        Step::Unmap { slot: 2 },
        Step::Serial { slot: 2, n: 1 },
        Step::Relink { slot: 3, other: 2 },
        Step::Observe,
        Step::Remove { slot: 0 },
        Step::Clobber,
        Step::Create { slot: 0, file: 1 },
        Step::Remove { slot: 5 },
        Step::Tpg {
            on: false,
            timeout: 15,
        },
        Step::Replace { slot: 3, file: 0 },
    ]);
    check(&rig, &steps).unwrap();
}

/// Counts the attribute files read through it.
struct Counting {
    inner: DynFs,
    attributes: std::sync::atomic::AtomicUsize,
}

impl Fs for Counting {
    fn mkdir(&self, p: &Path) -> std::io::Result<()> {
        self.inner.mkdir(p)
    }
    fn rmdir(&self, p: &Path) -> std::io::Result<()> {
        self.inner.rmdir(p)
    }
    fn read(&self, p: &Path) -> std::io::Result<String> {
        if p.parent().is_some_and(|d| d.ends_with("attrib")) {
            self.attributes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.read(p)
    }
    fn write(&self, p: &Path, d: &str) -> std::io::Result<()> {
        self.inner.write(p, d)
    }
    fn symlink(&self, t: &Path, l: &Path) -> std::io::Result<()> {
        self.inner.symlink(t, l)
    }
    fn readlink(&self, p: &Path) -> std::io::Result<std::path::PathBuf> {
        self.inner.readlink(p)
    }
    fn unlink(&self, p: &Path) -> std::io::Result<()> {
        self.inner.unlink(p)
    }
    fn read_dir(&self, p: &Path) -> std::io::Result<Vec<sbps_marshal::lio::fs::Entry>> {
        self.inner.read_dir(p)
    }
    fn metadata(&self, p: &Path) -> std::io::Result<sbps_marshal::lio::fs::Meta> {
        self.inner.metadata(p)
    }
}

/// After one new image the file is patched: the attributes read are the new object's
/// (and the TPG's), not every object's again.
#[test]
fn one_change_reads_the_attributes_of_what_changed() {
    let rig = Rig::new();
    let fs = std::sync::Arc::new(Counting {
        inner: rig.fs.clone(),
        attributes: Default::default(),
    });
    let t = rig.target_with(fs.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saveconfig.json");
    let path = rig.image("PE/one.squashfs", 4096);
    let create = |slot: u64| {
        for op in [
            Op::CreateBackstore {
                at: at(slot),
                path: path.clone(),
                size: 4096,
                serial: format!("bb{slot}dd52157e1636aaaaaaaaaaaaaaaa"),
            },
            Op::MapLun {
                lun: 50 + slot,
                at: at(slot),
                alias: format!("a{slot}"),
            },
        ] {
            t.execute(&op).unwrap();
        }
    };
    let reads = || fs.attributes.swap(0, std::sync::atomic::Ordering::SeqCst);
    for slot in 0..SLOTS - 1 {
        create(slot);
    }
    t.observe().unwrap();
    reads();
    assert!(t.save_config(&file).unwrap());
    let whole = reads();
    create(SLOTS - 1);
    t.observe().unwrap();
    reads();
    assert!(t.save_config(&file).unwrap());
    let patched = reads();
    let per_object = whole / (SLOTS as usize - 1);
    assert!(
        patched < 2 * per_object,
        "{patched} attributes read for one new object ({whole} for {})",
        SLOTS - 1
    );
    let full = saveconfig::to_text(&saveconfig::dump(rig.fs.as_ref(), &rig.root).unwrap());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), full);
}

/// A value written in place on an unchanged object (here an attribute) is not vouched
/// for by any observation: it reaches the file at the first save of a process, or once
/// someone else wrote the file (targetcli saves it after such a change).
#[test]
fn an_attribute_changed_in_place_reaches_the_file_with_the_next_whole_dump() {
    let rig = Rig::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saveconfig.json");
    let mut w = World {
        rig: &rig,
        t: rig.target(),
        generation: 0,
        before: None,
        applied: Vec::new(),
    };
    w.create(0, 0);
    w.create(1, 1);
    w.t.save_config(&file).unwrap();
    let full = || saveconfig::to_text(&saveconfig::dump(rig.fs.as_ref(), &rig.root).unwrap());
    let tpu = w.so(0).join("attrib/emulate_tpu");
    rig.fs.write(&tpu, "1").unwrap();
    // A new process: its first save dumps everything.
    let next = rig.target();
    next.save_config(&file).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), full());
    rig.fs.write(&tpu, "0").unwrap();
    // targetcli's own save of the change: the file is no longer the one written.
    std::fs::write(&file, full()).unwrap();
    w.create(2, 2);
    w.observe(false);
    w.t.save_config(&file).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), full());
}
