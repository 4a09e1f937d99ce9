use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use sbps_marshal::agent::service::{NoServices, ServiceManager};
use sbps_marshal::agent::{wiring, Agent, Mode};
use sbps_marshal::config::{Layers, Settings};
use sbps_marshal::identity::{self, Identity};
use sbps_marshal::inventory::gather::Sources;
use sbps_marshal::inventory::spire::{SpireError, Token, TokenProvider};
use sbps_marshal::inventory::ROOTFS_ARTIFACT_TYPE;
use sbps_marshal::lio::{Op, Target};
use sbps_marshal::report::status::{explain, Status};
use serde_json::{json, Value};

use crate::support::Rig;
use crate::support::{credential_file, Moto, Served};
use sbps_testkit::ims::Ims;

pub const BUCKET: &str = "boot-images";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ0In0.c2ln";

/// The SPIRE token, or the failure of the spire-agent CLI while `down`.
pub struct Tokens {
    pub down: Arc<AtomicBool>,
}

impl TokenProvider for Tokens {
    fn token(&self) -> futures_util::future::BoxFuture<'_, Result<Token, SpireError>> {
        let down = self.down.load(Ordering::SeqCst);
        Box::pin(async move {
            if down {
                Err(SpireError::Output("no SVID: agent not attested".into()))
            } else {
                Ok(Token::new(TOKEN.to_string()))
            }
        })
    }
}

pub struct World {
    pub moto: Option<Moto>,
    _ims_server: Served,
    pub ims_url: String,
    pub ims: Arc<Ims>,
    pub rig: Rig,
    pub state: tempfile::TempDir,
    pub agent: Agent,
    pub target: Arc<dyn Target>,
    pub rootfs_etag: String,
    pub spire_down: Arc<AtomicBool>,
    pub creds: std::path::PathBuf,
}

impl World {
    pub fn moto(&self) -> &Moto {
        self.moto.as_ref().expect("moto runs")
    }
}

/// Builds the LIO backend of a world on its rig.
pub(crate) type TargetOf = Box<dyn FnOnce(&Rig) -> Arc<dyn Target>>;

/// How a test's world differs from the usual one.
#[derive(Default)]
pub(crate) struct Options {
    /// Settings over the usual ones (`KEY`, value).
    pub(crate) env: Vec<(String, String)>,
    /// The LIO backend, built on the rig (default: the rig's target).
    pub(crate) target: Option<TargetOf>,
    /// The service manager (default: none, every unit active).
    pub(crate) service: Option<Box<dyn ServiceManager>>,
}

pub fn record(id: &str, tag: Option<&str>) -> Value {
    let mut r = json!({
        "id": id, "name": format!("image-{id}"), "created": "2024-07-18T22:05:16.565885", "arch": "x86_64",
        "link": {"path": format!("s3://{BUCKET}/{id}/manifest.json"), "etag": "m", "type": "s3"},
        "metadata": {}
    });
    if let Some(t) = tag {
        r["metadata"] = json!({"sbps-project": t});
    }
    r
}

async fn world() -> World {
    world_opts(Options::default()).await
}

/// The world with settings of `extra` (keys without the prefix) over the defaults.
pub async fn world_with(extra: &[(&str, String)]) -> World {
    let env = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    world_opts(Options {
        env,
        ..Options::default()
    })
    .await
}

/// The world as `opts` says.
pub(crate) async fn world_opts(opts: Options) -> World {
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    let rig = Rig::new();
    let pe = vec![7u8; 4096];
    let rootfs = vec![9u8; 8192];
    moto.put(BUCKET, "PE/CPE-base.x86_64-24.11.squashfs", pe.clone())
        .await;
    let etag = moto
        .put(BUCKET, "img1/rootfs", rootfs.clone())
        .await
        .trim_matches('"')
        .to_string();
    let manifest = json!({"version": "1.0", "created": "x", "artifacts": [
        {"type": ROOTFS_ARTIFACT_TYPE, "md5": "x", "link": {"path": format!("s3://{BUCKET}/img1/rootfs"), "etag": etag, "type": "s3"}}]});
    moto.put(BUCKET, "img1/manifest.json", manifest.to_string())
        .await;
    for (key, body) in [
        ("PE/CPE-base.x86_64-24.11.squashfs", &pe),
        ("img1/rootfs", &rootfs),
    ] {
        let p = rig.images.path().join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let ims = Arc::new(
        Ims::new(&json!([
            record("img1", Some("true")),
            record("img2", Some("false"))
        ]))
        .with_token(TOKEN),
    );
    let ims_server = Served::start(ims.clone().router()).await;
    let state = tempfile::tempdir().unwrap();
    let creds = credential_file(state.path());
    let base = [
        ("S3_PROTO", "http".to_string()),
        ("S3_HOST", format!("127.0.0.1:{}", moto.port)),
        ("S3_CREDENTIAL_FILE", creds.display().to_string()),
        ("API_GATEWAY", ims_server.url().to_string()),
        (
            "SQUASHFS_S3FS_MOUNT",
            rig.images.path().display().to_string(),
        ),
        (
            "STATE_DIR",
            state.path().join("state").display().to_string(),
        ),
        (
            "LIO_SAVE_FILE",
            state.path().join("saveconfig.json").display().to_string(),
        ),
        ("TARGET_IQN", crate::support::IQN.to_string()),
        ("NODE_LABEL", String::new()),
        ("TARGET_SERVICE", String::new()),
        ("REMOVAL_GRACE", "0".to_string()),
        // A new node: no initiator ever saw this target, so no margin of numbers is
        // quarantined at its first scan (plan_rules.rs has adoption's rules).
        ("ADOPTION_QUARANTINE_ABOVE", "0".to_string()),
    ];
    let overridden: Vec<String> = opts.env.iter().map(|(k, _)| k.clone()).collect();
    let env = base
        .into_iter()
        .filter(|(k, _)| !overridden.iter().any(|e| e == k))
        .map(|(k, v)| (k.to_string(), v))
        .chain(opts.env);
    let layers = Layers::load(
        Some(std::path::Path::new("/dev/null")),
        env.map(|(k, v)| (format!("SBPS_MARSHAL_{k}"), v)),
        &[],
    )
    .unwrap();
    let settings = Settings::from_layers(&layers, "ncn-w001").unwrap();
    std::fs::create_dir_all(&settings.state_dir).unwrap();
    let spire_down = Arc::new(AtomicBool::new(false));
    let sources = Sources::with_tokens(
        wiring::sources_config(&settings).unwrap(),
        Arc::new(Tokens {
            down: spire_down.clone(),
        }),
    )
    .unwrap();
    let target: Arc<dyn Target> = match opts.target {
        Some(build) => build(&rig),
        None => Arc::new(rig.target()),
    };
    let service = opts.service.unwrap_or_else(|| Box::new(NoServices));
    let agent = Agent::with_parts(settings, sources, target.clone(), service).unwrap();
    World {
        moto: Some(moto),
        ims_url: ims_server.url().to_string(),
        _ims_server: ims_server,
        ims,
        rig,
        state,
        agent,
        target,
        rootfs_etag: etag,
        spire_down,
        creds,
    }
}

pub fn serial_at(target: &dyn Target, lun: u64) -> Option<String> {
    let a = target.observe().unwrap();
    let l = a.tpg.as_ref()?.luns.get(&lun)?.backstore.clone()?;
    a.backstores
        .iter()
        .find(|b| b.at == l)
        .and_then(|b| b.serial.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_converge_adopt_and_hold() {
    let mut w = world().await;
    let pe_id = Identity::of_key(&identity::pe_key(
        BUCKET,
        "PE/CPE-base.x86_64-24.11.squashfs",
    ));
    let rootfs_id = Identity::of_key(&identity::rootfs_key(
        &format!("s3://{BUCKET}/img1/rootfs"),
        &w.rootfs_etag,
    ));
    assert_eq!(pe_id.name, "de4cc04e7dacfb9");

    // Cold scan: two projections on LUNs 1 and 2 (never 0), TPG enabled last.
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(r.desired.projections.len(), 2);
    assert_eq!(r.outcomes.last().map(|o| &o.op), Some(&Op::EnableTpg));
    assert!(r.saveconfig_written && r.ledger_written);
    let luns: Vec<Option<String>> = (0..3).map(|l| serial_at(w.target.as_ref(), l)).collect();
    assert_eq!(luns[0], None);
    let mut got: Vec<String> = luns[1..].iter().flatten().cloned().collect();
    got.sort();
    let mut want = vec![pe_id.serial.clone(), rootfs_id.serial.clone()];
    want.sort();
    assert_eq!(got, want);
    let saved = std::fs::read_to_string(w.state.path().join("saveconfig.json")).unwrap();
    assert!(saved.contains(&pe_id.serial) && saved.contains(&rootfs_id.serial));

    // The ledger on disk says a scan converged: the agent has this target's history
    // (a later scan with no record left is not an adoption).
    let ledger_file = w.agent.settings.ledger_file();
    let on_disk = || {
        sbps_marshal::ledger::load(&ledger_file, 0)
            .unwrap()
            .into_ledger()
    };
    let converged_at = on_disk().last_converged;
    assert!(
        converged_at.is_some_and(|t| t >= r.started),
        "{converged_at:?}"
    );

    // Steady scan: nothing to do, no file rewritten.
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged && r.outcomes.is_empty(), "{:?}", r.outcomes);
    assert!(!r.saveconfig_written && !r.ledger_written);
    assert_eq!(on_disk().last_converged, converged_at);
    // saveconfig.json is still checked: a lost file comes back at the next scan, and
    // a change made behind the agent's back (an admin's targetcli) reaches it too.
    std::fs::remove_file(w.state.path().join("saveconfig.json")).unwrap();
    let r = w.agent.scan_and_publish().await;
    assert!(r.saveconfig_written && r.outcomes.is_empty());
    let tpg = w.rig.tpg();
    w.rig
        .fs
        .write(&tpg.join("attrib/login_timeout"), "20")
        .unwrap();
    w.rig.fs.mkdir(&tpg.join("lun/lun_9")).unwrap();
    let r = w.agent.scan_and_publish().await;
    assert!(
        r.saveconfig_written,
        "an empty lun_9 appeared and was cleaned: the file follows"
    );
    // Nothing explains it (another tool was unmapping it): its number is quarantined.
    let q9 = &w.agent.ledger().quarantine[&9];
    assert!(q9.serial.is_none() && !q9.same_serial_may_return);
    let r = w.agent.scan_and_publish().await;
    assert!(!r.saveconfig_written && r.outcomes.is_empty());
    let metrics = w.agent.metrics.render();
    assert!(metrics.contains("iscsi_pe_lun_cnt 1"), "{metrics}");
    assert!(metrics.contains("iscsi_rootfs_lun_cnt 1"), "{metrics}");
    assert!(
        metrics.contains("sbps_marshal_skipped{reason=\"untagged\"} 1"),
        "{metrics}"
    );

    // explain and status name the rule and the LUN.
    let e = explain(&r, w.agent.ledger(), "img2").join("\n");
    assert!(e.contains("untagged") && e.contains("\"false\""), "{e}");
    let e = explain(&r, w.agent.ledger(), &pe_id.wwid()).join("\n");
    assert!(e.contains("exported at LUN"), "{e}");
    let st = Status::build(&r, w.agent.ledger(), &w.agent.settings);
    assert_eq!(st.projections.len(), 2);
    assert!(st.projections.iter().all(|p| p.lun.is_some_and(|l| l > 0)));
    assert_eq!(st.gate.tpg_enabled, Some(true));

    // IMS fails: nothing is removed, the reason is visible.
    w.ims
        .respond(StatusCode::SERVICE_UNAVAILABLE, &json!({"title": "down"}));
    let before = w.target.observe().unwrap();
    let r = w.agent.scan_and_publish().await;
    assert!(r.outcomes.is_empty(), "{:?}", r.outcomes);
    assert_eq!(w.target.observe().unwrap(), before);
    assert!(r
        .plan
        .as_ref()
        .unwrap()
        .held
        .iter()
        .any(|h| h.serial.as_deref() == Some(rootfs_id.serial.as_str())));
    assert!(w
        .agent
        .metrics
        .render()
        .contains("sbps_marshal_source_errors_total{source=\"ims\"}"));
    // explain by image id still answers while IMS cannot list it.
    let e = explain(&r, w.agent.ledger(), "img1").join("\n");
    assert!(
        e.contains("was exported at LUN") && e.contains("IMS unavailable"),
        "{e}"
    );

    // IMS answers without the one rootfs image this node serves (an IMS that lost its
    // datastore looks like this): not believed. One image is under the brake's floor,
    // so only this rule keeps it: nothing removed, not converged, an alert.
    w.ims.set(&[record("img2", Some("false"))]);
    let lun_of_rootfs = (1..3)
        .find(|l| serial_at(w.target.as_ref(), *l).as_deref() == Some(rootfs_id.serial.as_str()))
        .unwrap();
    let before = w.target.observe().unwrap();
    let r = w.agent.scan_and_publish().await;
    assert!(!r.converged);
    assert!(r.outcomes.is_empty(), "{:?}", r.outcomes);
    assert_eq!(w.target.observe().unwrap(), before);
    assert!(
        r.problems()
            .iter()
            .any(|p| p.contains("names none of the 1 rootfs images")),
        "{:?}",
        r.problems()
    );
    assert!(w
        .agent
        .metrics
        .render()
        .contains("sbps_marshal_ims_answer_held 1"));
    let e = explain(&r, w.agent.ledger(), "img1").join("\n");
    assert!(e.contains("names none of"), "{e}");
    // The operator confirms the answer (`scan --once --release-brake`): with grace 0
    // the image goes at once, its LUN number quarantined.
    w.agent.release_brake = true;
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    assert!(w
        .agent
        .metrics
        .render()
        .contains("sbps_marshal_ims_answer_held 0"));
    assert_eq!(serial_at(w.target.as_ref(), lun_of_rootfs), None);
    assert!(w.agent.ledger().quarantine.contains_key(&lun_of_rootfs));
    // Operators see the quarantine: metric, status document and text.
    assert!(
        w.agent
            .metrics
            .render()
            .contains("sbps_marshal_quarantined_luns 2"),
        "{}",
        w.agent.metrics.render()
    );
    let st = Status::build(&r, w.agent.ledger(), &w.agent.settings);
    assert_eq!(
        st.quarantined.iter().map(|q| q.lun).collect::<Vec<_>>(),
        vec![lun_of_rootfs, 9]
    );
    assert_eq!(
        st.quarantined[0].serial.as_deref(),
        Some(rootfs_id.serial.as_str())
    );
    // LUN_QUARANTINE is 7 days: `7d 0h` (or `6d 23h` when the scan started a second
    // before it planned).
    let text = st.to_text();
    let line = format!("quarantined LUN numbers (not given to new images): {lun_of_rootfs} (");
    assert!(
        text.contains(&format!("{line}7d 0h more)"))
            || text.contains(&format!("{line}6d 23h more)")),
        "{text}"
    );

    // It comes back: same content, same key, so it gets its old number back.
    w.ims.set(&[record("img1", Some("true"))]);
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(
        serial_at(w.target.as_ref(), lun_of_rootfs).as_deref(),
        Some(rootfs_id.serial.as_str())
    );
    drop(w.rig);
}

/// `desired()` is the costliest pure step of a scan at thousands of images: a scan judges
/// the inventory once, although the mount is asked only about what that judgement needs.
/// (The count is per thread: this runtime runs the whole scan but the LIO job on it.)
#[tokio::test(flavor = "current_thread")]
async fn a_scan_judges_the_inventory_once() {
    let mut w = world().await;
    for mode in [Mode::Apply, Mode::Apply, Mode::DryRun] {
        let before = sbps_marshal::desired::evaluations();
        let r = match mode {
            Mode::Apply => w.agent.scan_and_publish().await,
            Mode::DryRun => w.agent.reconcile(mode).await,
        };
        assert!(r.converged, "{mode:?}: {:?}", r.problems());
        assert_eq!(r.desired.projections.len(), 2);
        assert_eq!(r.stats.mount_checked, 2, "{mode:?}");
        assert_eq!(sbps_marshal::desired::evaluations() - before, 1, "{mode:?}");
    }
}

/// The reconciler decides and acts but shows nothing; its runner's step, what the daemon
/// and `scan --once` take, shows every scan (log, metrics, status document).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_shows_nothing_and_its_runner_shows_each_scan() {
    let mut w = world().await;
    let r = w.agent.reconcile(Mode::Apply).await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(r.desired.projections.len(), 2);
    assert!(w.agent.status.read().unwrap().is_none());
    let metrics = w.agent.metrics.render();
    assert!(!metrics.contains("iscsi_pe_lun_cnt 1"), "{metrics}");
    assert!(
        metrics.contains("sbps_marshal_last_scan_timestamp_seconds 0"),
        "{metrics}"
    );

    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    let status = w.agent.status.read().unwrap().clone();
    assert_eq!(status.map(|s| s.projections.len()), Some(2));
    let metrics = w.agent.metrics.render();
    assert!(metrics.contains("iscsi_pe_lun_cnt 1"), "{metrics}");
    assert!(
        !metrics.contains("sbps_marshal_last_scan_timestamp_seconds 0"),
        "{metrics}"
    );
}
