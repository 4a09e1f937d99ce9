//! SIGKILL of the real agent process in the middle of its apply, on the kernel's
//! LIO (the host-side crash suite in `crash.rs` covers the same ground on the fake
//! configfs, at 100 seeded points).
//!
//! Each round changes the inventory (some PE images go, others come), starts
//! `sbps-marshal scan --once`, waits until its write-ahead ledger is on disk (the
//! apply starts right after), sleeps a random share of the apply's measured length
//! and kills the process with SIGKILL. Then:
//! * the ledger and saveconfig.json each load, and each is the old file or a whole
//!   new one (never torn);
//! * a clean `scan --once` converges, and after it no backstore lacks its LUN, no
//!   backstore has two, no `lun_N` is empty, no image that stayed desired changed
//!   its LUN number, no new image got 0, and `plan` has nothing left to do.
//!
//! It runs until at least [`KILLS`] kills landed mid-apply (the kernel held neither
//! the old nor the new state), within [`MAX_ROUNDS`]. It needs the kernel's LIO and
//! root: `tests/vm/run-kill` runs it in the test VM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sbps_marshal::identity::Identity;
use sbps_marshal::ledger::{self, Loaded};
use sbps_marshal::lio::{saveconfig, Actual, Target};

use crate::crash::{assert_no_litter, assert_whole, lun_map, Rng};
use crate::support::{cred_file, ims_router, Object, Rig, Served, IQN, NOW, S3};

/// Kills that must land mid-apply (half of them with the kernel half-way).
const KILLS: usize = 20;
/// Rounds before giving up on reaching [`KILLS`].
const MAX_ROUNDS: usize = 60;
/// Images in the pool; each round wants a random ~60 % of them.
const POOL: usize = 40;

#[test]
#[ignore = "needs the kernel's LIO configfs and root: tests/vm/run-kill"]
fn sigkill_mid_apply_on_the_kernel() {
    let rig = Rig::new();
    assert!(
        rig.real,
        "SBPS_LIO_CONFIGFS must name the kernel's configfs"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let w = World::new(&rig, rt.handle());
    let mut rng = Rng::new(0x5eed);

    // Round 0: a clean start, which also measures how long an apply takes.
    let mut wanted = pick(&mut rng, &BTreeSet::new());
    let mut s3 = w.serve(&rt, &wanted);
    let t0 = Instant::now();
    let out = w.agent(&s3, &["scan", "--once"]).output().unwrap();
    assert!(out.status.success(), "first scan: {}", text(&out));
    let apply_len = t0.elapsed();
    eprintln!(
        "round 0: {} images, first scan {:.2}s",
        wanted.len(),
        apply_len.as_secs_f64()
    );
    let mut actual = w.check_converged(&rig, &s3, &wanted, &BTreeMap::new(), 0);

    let mut window = apply_len / 2;
    let (mut mid_apply, mut half_way, mut round) = (0, 0, 0);
    while mid_apply < KILLS || half_way < KILLS / 2 {
        round += 1;
        assert!(
            round <= MAX_ROUNDS,
            "only {mid_apply} of {round} kills landed mid-apply ({half_way} half-way)"
        );
        let before = lun_map(&actual);
        let old_ledger = std::fs::read(&w.ledger).unwrap();
        let old_save = std::fs::read(&w.save).unwrap();
        let next = pick(&mut rng, &wanted);
        let (gone, new) = (
            wanted.difference(&next).count(),
            next.difference(&wanted).count(),
        );
        wanted = next;
        s3 = w.serve(&rt, &wanted);

        // Kill somewhere in the apply: it starts once the ledger is on disk.
        let mut child = w
            .agent(&s3, &["scan", "--once"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::fs::read(&w.ledger).unwrap() == old_ledger {
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the agent exited without writing its ledger"
            );
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "round {round}: no ledger"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let delay = Duration::from_micros(rng.below(window.as_micros() as u64));
        std::thread::sleep(delay);
        let alive = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Both files whole: the old version or a new one that loads.
        let ledger_now = std::fs::read(&w.ledger).unwrap();
        match ledger::load(&w.ledger, NOW).unwrap() {
            Loaded::Existing(_) => {}
            other => panic!("round {round}: ledger torn by SIGKILL: {other:?}"),
        }
        assert_ne!(
            ledger_now, old_ledger,
            "round {round}: the write-ahead ledger"
        );
        let save_now = std::fs::read(&w.save).unwrap();
        let parsed = std::str::from_utf8(&save_now).map(saveconfig::parse);
        assert!(
            matches!(parsed, Ok(Ok(_))),
            "round {round}: saveconfig.json torn by SIGKILL"
        );
        // Where it landed: mid-apply when the agent was alive, had not written
        // saveconfig.json yet and the kernel did not hold the new state.
        let killed = rig.target().observe().unwrap();
        let at_new = managed(&killed) == wanted_serials_of(&w.pool, &wanted);
        let untouched = lun_map(&killed) == before;
        let landed = if !alive {
            "the agent had already exited"
        } else if save_now != old_save || at_new {
            "after the apply"
        } else if untouched {
            "mid-apply, before its first change"
        } else {
            "mid-apply, kernel half-way"
        };
        if landed.starts_with("mid-apply") {
            mid_apply += 1;
            half_way += usize::from(!untouched);
        }
        // Aim where the apply is: earlier after a kill that came too late, later
        // after one that came before the first change.
        if !landed.starts_with("mid-apply") {
            window = (window * 2 / 3).max(Duration::from_millis(20));
        } else if untouched {
            window = window * 3 / 2;
        }
        eprintln!(
            "round {round}: -{gone} +{new}, killed {:.0} ms after the ledger: {landed}",
            delay.as_secs_f64() * 1000.0,
        );

        let t = Instant::now();
        actual = w.check_converged(&rig, &s3, &wanted, &before, round);
        eprintln!(
            "  recovered and checked in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "{mid_apply} mid-apply kills ({half_way} with the kernel half-way) in {round} rounds, every one recovered"
    );
}

/// The paths and doubles one test run shares.
struct World {
    dir: tempfile::TempDir,
    ims: Served,
    creds: PathBuf,
    spire: PathBuf,
    ledger: PathBuf,
    save: PathBuf,
    mount: PathBuf,
    locks: PathBuf,
    configfs: PathBuf,
    /// Pool image `i`: object key and size.
    pool: Vec<(String, u64)>,
}

impl World {
    fn new(rig: &Rig, rt: &tokio::runtime::Handle) -> World {
        let dir = tempfile::tempdir().unwrap();
        let pool: Vec<_> = (0..POOL)
            .map(|i| (format!("PE/kill-{i:02}.squashfs"), 4096 * (1 + i as u64)))
            .collect();
        for (key, size) in &pool {
            rig.image(key, *size);
        }
        let spire = dir.path().join("spire-agent");
        std::fs::write(
            &spire,
            format!(
                "#!/bin/sh\nprintf '%s\\n' '[{{\"svids\":[{{\"spiffe_id\":\"spiffe://shasta/ncn/workload/sbps-marshal\",\"svid\":\"{}\",\"hint\":\"\"}}]}}]'\n",
                jwt()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&spire, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        World {
            ims: rt.block_on(Served::start(ims_router("[]".into()))),
            creds: cred_file(dir.path(), "KILLACCESS:kill-secret\n"),
            spire,
            ledger: dir.path().join("state/ledger.json"),
            save: dir.path().join("saveconfig.json"),
            mount: rig.images.path().to_path_buf(),
            locks: rig.locks.path().to_path_buf(),
            configfs: rig.root.clone(),
            pool,
            dir,
        }
    }

    /// An S3 double listing the pool images in `wanted`.
    fn serve(&self, rt: &tokio::runtime::Runtime, wanted: &BTreeSet<usize>) -> Served {
        let objects: Vec<Object> = wanted
            .iter()
            .map(|&i| {
                Object::new(
                    self.pool[i].0.as_str(),
                    &format!("etag-{i}"),
                    self.pool[i].1,
                )
            })
            .collect();
        rt.block_on(Served::start(S3::memory(objects).router()))
    }

    /// The agent binary, configured for this world (no label gating, no grace, no
    /// brake: every change of a round is applied at once).
    fn agent(&self, s3: &Served, args: &[&str]) -> Command {
        // In the VM the binary runs from a stripped copy in RAM (SBPS_AGENT_BIN):
        // paging 150 MB of debug info in over 9p costs seconds per start.
        let bin = std::env::var_os("SBPS_AGENT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sbps-marshal")));
        let mut c = Command::new(bin);
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["--config", "/dev/null"])
            .args(args);
        let d = |p: &Path| p.display().to_string();
        for (k, v) in [
            ("CONFIGFS_ROOT", d(&self.configfs)),
            ("TARGET_IQN", IQN.into()),
            ("S3_PROTO", "http".into()),
            ("S3_HOST", s3.addr.to_string()),
            ("S3_CREDENTIAL_FILE", d(&self.creds)),
            ("API_GATEWAY", self.ims.url().to_string()),
            ("SPIRE_AGENT_PATH", d(&self.spire)),
            ("NODE_LABEL", String::new()),
            // The kernel and the local files under SIGKILL: no Kubernetes API here.
            ("REMOTE_LEDGER", "false".into()),
            ("NODE_NAME", "kill-node".into()),
            ("TARGET_SERVICE", String::new()),
            ("STATE_DIR", d(&self.dir.path().join("state"))),
            ("LOCK_FILE", d(&self.dir.path().join("sbps-marshal.lock"))),
            ("RTSLIB_LOCK_DIR", d(&self.locks)),
            ("LIO_SAVE_FILE", d(&self.save)),
            ("SQUASHFS_S3FS_MOUNT", d(&self.mount)),
            ("METRICS_LISTEN", String::new()),
            ("REMOVAL_GRACE", "0".into()),
            ("DELETION_BRAKE_RATIO", "1".into()),
        ] {
            c.env(format!("SBPS_MARSHAL_{k}"), v);
        }
        c
    }

    /// A clean scan converges; then the kernel holds exactly `wanted`, one LUN
    /// each, numbers kept from `before`, and `plan` has nothing to do.
    fn check_converged(
        &self,
        rig: &Rig,
        s3: &Served,
        wanted: &BTreeSet<usize>,
        before: &BTreeMap<String, u64>,
        round: usize,
    ) -> Actual {
        let t = Instant::now();
        let out = self.agent(s3, &["scan", "--once"]).output().unwrap();
        assert!(out.status.success(), "round {round}: {}", text(&out));
        let scan = t.elapsed();
        let a = rig.target().observe().unwrap();
        assert_whole(&a, &format!("round {round}"));
        assert_eq!(
            managed(&a),
            wanted_serials_of(&self.pool, wanted),
            "round {round}"
        );
        let now = lun_map(&a);
        for (serial, lun) in &now {
            if let Some(old) = before.get(serial) {
                assert_eq!(lun, old, "round {round}: the LUN of a kept image changed");
            }
            assert_ne!(*lun, 0, "round {round}: LUN 0 handed out");
        }
        let t = Instant::now();
        let plan = self.agent(s3, &["plan", "--json"]).output().unwrap();
        eprintln!(
            "  scan {:.1}s, plan {:.1}s",
            scan.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        assert!(plan.status.success(), "round {round}: {}", text(&plan));
        let p: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        assert_eq!(
            p["ops"],
            serde_json::json!([]),
            "round {round}: plan after convergence"
        );
        let save = std::fs::read_to_string(&self.save).unwrap();
        let live = saveconfig::to_text(&saveconfig::dump(&*rig.fs, &rig.root).unwrap());
        assert_eq!(
            save, live,
            "round {round}: saveconfig.json is not the kernel's state"
        );
        for d in [self.dir.path(), &self.dir.path().join("state")] {
            assert_no_litter(d, &format!("round {round}"));
        }
        a
    }
}

/// The next round's images: each pool image is wanted with probability 3/5, and
/// the round always changes something.
fn pick(rng: &mut Rng, now: &BTreeSet<usize>) -> BTreeSet<usize> {
    loop {
        let next: BTreeSet<usize> = (0..POOL).filter(|_| rng.below(5) < 3).collect();
        if next != *now && next.difference(now).count() >= 4 {
            return next;
        }
    }
}

/// Serials of the backstores on the kernel (this test owns them all).
fn managed(a: &Actual) -> BTreeSet<String> {
    a.backstores
        .iter()
        .filter_map(|b| b.serial.clone())
        .collect()
}

fn wanted_serials_of(pool: &[(String, u64)], wanted: &BTreeSet<usize>) -> BTreeSet<String> {
    wanted
        .iter()
        .map(|&i| Identity::of_key(&format!("s3://boot-images/{}", pool[i].0)).serial)
        .collect()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A JWT-SVID shaped token that does not expire.
fn jwt() -> String {
    let e = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.{}",
        e(serde_json::json!({"alg": "ES256", "typ": "JWT"})),
        e(
            serde_json::json!({"sub": "spiffe://shasta/ncn/workload/sbps-marshal", "exp": 4_102_444_800u64})
        ),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}
