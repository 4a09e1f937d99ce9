//! Crash consistency of one apply: 100 seeded scenes, each crashed at a random
//! point (after k configfs changes, between the write-ahead ledger and the first
//! change, inside the ledger's or saveconfig.json's atomic write), then restarted.
//! The files must be the old or the new version, never torn, and the next rounds
//! must converge with no orphan, no duplicate, no empty lun_N/HBA, and no LUN
//! number changed for an image that stayed desired.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use sbps_marshal::agent::{Job, JobDone, Mode};
use sbps_marshal::desired::{Desired, Projection};
use sbps_marshal::ledger::{self, Ledger, Loaded};
use sbps_marshal::lio::{saveconfig, Actual, ConfigfsTarget, LioError, LockGuard, Op, Target};
use sbps_marshal::plan::{self, Policy};
use sbps_testkit::{FaultMode, Faulty};

use crate::support::{desired, DynFs, Rig, NOW};

/// A tiny deterministic generator (xorshift64*), so a failing seed replays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How the process dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// After `k` configfs changes (k = 0: right after the write-ahead ledger).
    AfterChanges(usize),
    /// Inside the ledger's atomic write: a torn temp file, nothing applied.
    InLedgerWrite,
    /// Inside saveconfig.json's atomic write: everything applied, a torn temp file.
    InSaveconfigWrite,
}

/// The configfs backend through [`Faulty`]; once the fault fired the process is
/// dead, so saveconfig.json is not written either. In `InSaveconfigWrite` mode it
/// leaves a torn temp file and dies.
struct Dying {
    inner: ConfigfsTarget<Faulty<DynFs>>,
    budget: usize,
    torn_save: bool,
}

impl Target for Dying {
    fn observe(&self) -> Result<Actual, LioError> {
        self.inner.observe()
    }
    fn execute(&self, op: &Op) -> Result<(), LioError> {
        self.inner.execute(op)
    }
    fn lock(&self) -> Result<LockGuard, LioError> {
        Target::lock(&self.inner)
    }
    fn save_config(&self, path: &Path) -> Result<bool, LioError> {
        if self.inner.fs().calls() > self.budget {
            return Err(LioError::Refused("process died".into()));
        }
        if self.torn_save {
            let doc = saveconfig::dump(self.inner.fs(), &self.inner.settings().root)?;
            let text = saveconfig::to_text(&doc);
            torn_temp(path, text.as_bytes());
            return Err(LioError::Refused("process died in write_atomic".into()));
        }
        self.inner.save_config(path)
    }
}

/// What `write_atomic` leaves when the process dies in the middle of the write: a
/// temp file (another pid's) with a prefix of the bytes; the target untouched.
fn torn_temp(path: &Path, bytes: &[u8]) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp-999999");
    std::fs::write(PathBuf::from(tmp), &bytes[..bytes.len() / 2]).unwrap();
}

struct Files {
    ledger: PathBuf,
    save: PathBuf,
    _dir: tempfile::TempDir,
}

fn policy(rig: &Rig) -> Policy {
    Policy {
        // The scene removes a large share on purpose; the brake has its own tests.
        brake_ratio: 1.0,
        ..rig.policy()
    }
}

fn job(
    target: Arc<dyn Target>,
    d: &Desired,
    ledger: Ledger,
    pol: &Policy,
    f: &Files,
    now: u64,
) -> Job {
    Job {
        target,
        desired: Arc::new(d.clone()),
        ledger,
        policy: pol.clone(),
        now,
        mode: Mode::Apply,
        parallelism: 4,
        ledger_file: f.ledger.clone(),
        save_file: f.save.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        saved_state: None,
        fleet: Default::default(),
        remote: None,
        progress: Arc::default(),
        deadlines: Default::default(),
    }
}

fn load(f: &Files) -> Ledger {
    match ledger::load(&f.ledger, NOW).unwrap() {
        Loaded::Existing(l) => l,
        other => panic!("ledger not intact: {other:?}"),
    }
}

pub(crate) fn lun_map(a: &Actual) -> BTreeMap<String, u64> {
    let serial_of: BTreeMap<_, _> = a
        .backstores
        .iter()
        .map(|b| (b.at.clone(), b.serial.clone().unwrap_or_default()))
        .collect();
    a.tpg
        .as_ref()
        .map(|t| {
            t.luns
                .values()
                .filter_map(|l| Some((serial_of.get(l.backstore.as_ref()?)?.clone(), l.index)))
                .collect()
        })
        .unwrap_or_default()
}

struct Scene {
    rig: Rig,
    before: Desired,
    after: Desired,
    kept: Vec<String>,
}

/// Desired before: keep × 2..=4, gone × 1..=2, one PE object that will be rewritten.
/// After: the kept ones, 1..=3 new ones, the rewritten one (new size and ETag).
fn scene(rng: &mut Rng) -> Scene {
    let rig = Rig::new();
    let n_keep = 2 + rng.below(3) as usize;
    let n_gone = 1 + rng.below(2) as usize;
    let n_new = 1 + rng.below(3) as usize;
    let mk = |rig: &Rig, tag: &str, i: usize| -> Projection {
        rig.projection(&format!("s3://boot-images/PE/{tag}-{i}.squashfs"), 4096)
    };
    let keep: Vec<_> = (0..n_keep).map(|i| mk(&rig, "keep", i)).collect();
    let gone: Vec<_> = (0..n_gone).map(|i| mk(&rig, "gone", i)).collect();
    let replaced_old = mk(&rig, "replaced", 0);
    let before: Vec<_> = keep
        .iter()
        .chain(&gone)
        .chain([&replaced_old])
        .cloned()
        .collect();
    let new: Vec<_> = (0..n_new).map(|i| mk(&rig, "new", i)).collect();
    let mut replaced_new = replaced_old.clone();
    replaced_new.size = 8192;
    replaced_new.etag = "etag-2".into();
    let after: Vec<_> = keep
        .iter()
        .chain(&new)
        .chain([&replaced_new])
        .cloned()
        .collect();
    Scene {
        kept: keep.iter().map(|p| p.identity.serial.clone()).collect(),
        before: desired(&before),
        after: desired(&after),
        rig,
    }
}

fn files() -> Files {
    // tmpfs when there is one: the logic is under test, not the disk's fsync latency
    // (a thousand fsyncs on a busy shared disk take tens of seconds).
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    Files {
        ledger: dir.path().join("ledger.json"),
        save: dir.path().join("saveconfig.json"),
        _dir: dir,
    }
}

/// Applies `before` cleanly, then rewrites the replaced image file.
fn converge_before(s: &Scene, f: &Files) -> Actual {
    let t: Arc<dyn Target> = Arc::new(s.rig.target());
    let done = job(t, &s.before, Ledger::new(), &policy(&s.rig), f, NOW).run();
    assert!(done.failure.is_none() && done.outcomes.iter().all(|o| o.error.is_none()));
    let replaced = s
        .after
        .projections
        .values()
        .find(|p| p.size == 8192)
        .unwrap();
    s.rig.image(&replaced.object_key, replaced.size);
    done.actual.unwrap()
}

fn check_converged(seed: u64, s: &Scene, f: &Files, lun_before: &BTreeMap<String, u64>) {
    let t: Arc<dyn Target> = Arc::new(s.rig.target());
    let pol = policy(&s.rig);
    let mut rounds = 0;
    let a = loop {
        let ledger = load(f);
        let done: JobDone = job(t.clone(), &s.after, ledger, &pol, f, NOW + 10 + rounds).run();
        assert!(done.failure.is_none(), "seed {seed}: {:?}", done.failure);
        for o in &done.outcomes {
            assert!(o.error.is_none(), "seed {seed}: {}: {:?}", o.op, o.error);
        }
        if done.outcomes.is_empty() {
            break done.actual.unwrap();
        }
        rounds += 1;
        assert!(rounds <= 2, "seed {seed}: no convergence");
    };
    assert_whole(&a, &format!("seed {seed}"));
    assert_eq!(a.backstores.len(), s.after.projections.len(), "seed {seed}");
    let lun_after = lun_map(&a);
    for serial in &s.kept {
        assert_eq!(
            lun_after.get(serial),
            lun_before.get(serial),
            "seed {seed}: LUN of a kept image changed"
        );
    }
    assert!(
        !lun_after.values().any(|l| *l == 0),
        "seed {seed}: LUN 0 handed out"
    );
    // The files mirror the converged state.
    let text = std::fs::read_to_string(&f.save).unwrap();
    saveconfig::parse(&text).unwrap();
    let live = saveconfig::to_text(&saveconfig::dump(&*s.rig.fs, &s.rig.root).unwrap());
    assert_eq!(
        text, live,
        "seed {seed}: saveconfig.json is not the kernel's state"
    );
    assert_no_litter(f.ledger.parent().unwrap(), &format!("seed {seed}"));
    for p in [&f.ledger, &f.save] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "seed {seed}: {}", p.display());
    }
}

/// What every converged LIO state looks like: the TPG enabled, no empty `lun_N`,
/// no empty HBA, no backstore on two LUNs, none without one (an orphan).
pub(crate) fn assert_whole(a: &Actual, what: &str) {
    let tpg = a.tpg.as_ref().expect("the TPG");
    assert!(tpg.enabled, "{what}: TPG not enabled");
    assert!(
        tpg.luns.values().all(|l| l.backstore.is_some()),
        "{what}: empty lun_N left"
    );
    let used: BTreeSet<_> = a
        .backstores
        .iter()
        .map(|b| (b.at.plugin.clone(), b.at.hba))
        .collect();
    assert_eq!(a.hbas, used, "{what}: empty HBA left");
    let mapped: Vec<_> = tpg
        .luns
        .values()
        .filter_map(|l| l.backstore.clone())
        .collect();
    let distinct: BTreeSet<_> = mapped.iter().collect();
    assert_eq!(distinct.len(), mapped.len(), "{what}: duplicate LUN");
    assert_eq!(mapped.len(), a.backstores.len(), "{what}: orphan backstore");
}

/// No `<file>.tmp-<pid>` left in `dir` by a crashed atomic write.
pub(crate) fn assert_no_litter(dir: &Path, what: &str) {
    let litter: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(litter.is_empty(), "{what}: temp files left: {litter:?}");
}

/// Counts the configfs changes the crash-free apply of `after` makes for this seed.
fn changes(seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let s = scene(&mut rng);
    let f = files();
    converge_before(&s, &f);
    let counting = Faulty::counting(s.rig.fs.clone());
    let t = s.rig.target_with(counting);
    let ledger = load(&f);
    let p = plan::plan(
        &s.after,
        &t.observe().unwrap(),
        &ledger,
        &policy(&s.rig),
        NOW + 5,
    );
    sbps_marshal::lio::apply(&t, &p.ops, 1);
    t.fs().calls()
}

fn run_seed(seed: u64) -> Crash {
    let total = changes(seed);
    assert!(
        total > 10,
        "seed {seed}: the scene changes too little ({total})"
    );
    let mut rng = Rng::new(seed);
    let s = scene(&mut rng);
    let crash = match rng.below(10) {
        0 | 1 => Crash::InLedgerWrite,
        2 | 3 => Crash::InSaveconfigWrite,
        4 => Crash::AfterChanges(0),
        _ => Crash::AfterChanges(rng.below(total as u64) as usize),
    };
    let f = files();
    let before_actual = converge_before(&s, &f);
    let lun_before = lun_map(&before_actual);
    let old_ledger = load(&f);
    let old_save = std::fs::read(&f.save).unwrap();
    let pol = policy(&s.rig);

    let new_ledger = match crash {
        Crash::InLedgerWrite => {
            let t = s.rig.target();
            let p = plan::plan(&s.after, &t.observe().unwrap(), &old_ledger, &pol, NOW + 5);
            assert_ne!(p.ledger, old_ledger);
            let mut bytes = serde_json::to_vec_pretty(&p.ledger).unwrap();
            bytes.push(b'\n');
            torn_temp(&f.ledger, &bytes);
            p.ledger
        }
        Crash::AfterChanges(_) | Crash::InSaveconfigWrite => {
            let (budget, torn_save) = match crash {
                Crash::AfterChanges(k) => (k, false),
                _ => (usize::MAX, true),
            };
            let dying = Dying {
                inner: s
                    .rig
                    .target_with(Faulty::new(s.rig.fs.clone(), budget, FaultMode::Crash)),
                budget,
                torn_save,
            };
            let done = job(
                Arc::new(dying),
                &s.after,
                old_ledger.clone(),
                &pol,
                &f,
                NOW + 5,
            )
            .run();
            assert!(done.ledger_written, "seed {seed}: the ledger goes first");
            assert!(!done.saveconfig_written, "seed {seed}");
            done.ledger.unwrap()
        }
    };
    // After the "restart": both files intact, each the old or the new version.
    let on_disk = load(&f);
    assert!(
        on_disk == old_ledger || on_disk == new_ledger,
        "seed {seed} {crash:?}: ledger is neither old nor new"
    );
    if crash == Crash::InLedgerWrite {
        assert_eq!(on_disk, old_ledger, "seed {seed}");
    }
    let save_now = std::fs::read(&f.save).unwrap();
    assert_eq!(
        save_now, old_save,
        "seed {seed} {crash:?}: saveconfig.json changed by a dead process"
    );
    saveconfig::parse(std::str::from_utf8(&save_now).unwrap()).unwrap();

    check_converged(seed, &s, &f, &lun_before);
    crash
}

#[test]
fn hundred_seeded_crashes_converge() {
    let mut kinds = BTreeMap::new();
    for seed in 0..100u64 {
        let c = run_seed(seed);
        let name = match c {
            Crash::AfterChanges(0) => "after-ledger-before-apply",
            Crash::AfterChanges(_) => "after-k-changes",
            Crash::InLedgerWrite => "torn-ledger-write",
            Crash::InSaveconfigWrite => "torn-saveconfig-write",
        };
        *kinds.entry(name).or_insert(0) += 1;
    }
    // Every kind of crash was exercised.
    assert_eq!(kinds.len(), 4, "{kinds:?}");
}

/// The child of [`sigkill_during_atomic_writes`]: rewrites a large ledger and a large
/// saveconfig.json forever, each version `n` internally consistent.
#[test]
#[ignore = "child process of sigkill_during_atomic_writes"]
fn sigkill_child() {
    let Some(dir) = std::env::var_os("SBPS_SIGKILL_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    // Go on from the version the last child left, so versions grow across kills.
    let start = ledger::load(&dir.join("ledger.json"), NOW)
        .ok()
        .and_then(|l| l.into_ledger().last_converged)
        .map_or(0, |n| n + 1);
    for n in start.. {
        let mut l = Ledger::new();
        for i in 0..1000u64 {
            l.luns.insert(
                format!("serial-{i:05}"),
                std::sync::Arc::new(sbps_marshal::ledger::LunRecord {
                    lun: i + 1,
                    name: format!("name-{i}"),
                    kind: None,
                    key: Some(format!("s3://boot-images/PE/{i}")),
                    image_id: None,
                    etag: Some(format!("{n}")),
                    size: Some(4096),
                    since: n,
                }),
            );
        }
        l.last_converged = Some(n);
        ledger::save(&l, &dir.join("ledger.json")).unwrap();
        let objects: Vec<_> = (0..500)
            .map(|i| serde_json::json!({"plugin": "fileio", "name": format!("n{i}"), "dev": format!("/m/{n}/{i}")}))
            .collect();
        let doc =
            serde_json::json!({"fabric_modules": [], "storage_objects": objects, "targets": []});
        saveconfig::write(&dir.join("saveconfig.json"), &doc, 2).unwrap();
    }
}

/// A real process killed with SIGKILL at random moments while it rewrites the
/// ledger and saveconfig.json: each file always loads, whole and self-consistent.
#[test]
fn sigkill_during_atomic_writes() {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(7);
    let mut versions = BTreeSet::new();
    for _ in 0..12 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash::sigkill_child", "--ignored"])
            .env("SBPS_SIGKILL_CHILD", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150 + rng.below(600)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lp = dir.path().join("ledger.json");
        if !lp.exists() {
            continue;
        }
        let l = match ledger::load(&lp, NOW).unwrap() {
            Loaded::Existing(l) => l,
            other => panic!("ledger torn by SIGKILL: {other:?}"),
        };
        let n = l.last_converged.unwrap();
        assert_eq!(l.luns.len(), 1000);
        assert!(l.luns.values().all(|r| r.since == n), "mixed versions");
        versions.insert(n);
        let sp = dir.path().join("saveconfig.json");
        if sp.exists() {
            let text = std::fs::read_to_string(&sp).unwrap();
            let saved = saveconfig::parse(&text).expect("saveconfig.json torn by SIGKILL");
            assert_eq!(saved.objects.len(), 500);
            let first = saved.objects[0].dev.clone().unwrap();
            let gen = first.split('/').nth(2).unwrap().to_string();
            assert!(
                saved
                    .objects
                    .iter()
                    .all(|o| o.dev.as_deref().unwrap().split('/').nth(2) == Some(gen.as_str())),
                "mixed versions in saveconfig.json"
            );
        }
    }
    assert!(versions.len() > 1, "the child never got far: {versions:?}");
}
