//! The ledger kept in the Kubernetes API, end to end on the host: workers (the agent with
//! the fake configfs, its own mount and state directory) against the Kubernetes API
//! double over mTLS, sharing one S3 server and one IMS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use sbps_marshal::agent::service::NoServices;
use sbps_marshal::agent::{wiring, Agent};
use sbps_marshal::config::{Layers, Settings};
use sbps_marshal::fleet::{survey, Flag, SurveyPolicy};
use sbps_marshal::inventory::gather::Sources;
use sbps_marshal::ledger::remote::{configmap_name, LedgerMirror};
use sbps_marshal::lio::{Op, Target};
use sbps_marshal::report::status::explain;
use sbps_marshal::report::ScanReport;

use crate::scans::{world_with, Tokens, World, BUCKET};
use crate::support::Rig;
use sbps_testkit::kube_api::{write_kubeconfig, ClientAuth, KubeApi, User};

const NEW_PE: &str = "PE/CPE-new.x86_64-25.09.squashfs";
const OLD_PE: &str = "PE/CPE-base.x86_64-24.11.squashfs";

/// The API double and an admin.conf for it (client certificate, as kubeadm writes it).
struct Api {
    api: KubeApi,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.conf");
    let cert = api.client_cert("kubernetes-admin");
    write_kubeconfig(
        &kubeconfig,
        &api.url(),
        Some(&api.pki.ca_pem()),
        User::Cert(&cert),
    );
    for n in ["ncn-w001", "ncn-w002"] {
        api.add_node(n, &[("iscsi", "sbps"), ("kubernetes.io/hostname", n)]);
    }
    Api {
        api,
        kubeconfig,
        _dir: dir,
    }
}

/// One worker node: its agent, its kernel (fake configfs), its mount, its disk.
struct Worker {
    agent: Agent,
    rig: Rig,
    target: Arc<dyn Target>,
    settings: Settings,
    _state: tempfile::TempDir,
}

impl Worker {
    async fn scan(&mut self) -> ScanReport {
        self.agent.scan_and_publish().await
    }

    /// Serial → LUN number, as the kernel exports them.
    fn luns(&self) -> BTreeMap<String, u64> {
        self.target
            .observe()
            .unwrap()
            .lun_by_serial()
            .into_iter()
            .map(|(s, l)| (s.to_string(), l))
            .collect()
    }

    /// The agent restarted: a new process on the same disk and kernel.
    fn restart(&mut self) {
        self.agent = agent(&self.settings, self.target.clone());
    }

    /// CSM's provisioning recreated the target enabled (`provision_iscsi_server.sh`).
    fn enable_tpg(&self) {
        self.rig
            .fs
            .write(&self.rig.tpg().join("enable"), "1")
            .unwrap();
    }
}

/// A worker named `name` on a new disk, its mount a copy of the world's bucket.
async fn worker(w: &World, api: &Api, name: &str, remote: bool) -> Worker {
    let rig = Rig::new();
    copy_tree(w.rig.images.path(), rig.images.path());
    let state = tempfile::tempdir().unwrap();
    let env = [
        ("S3_PROTO", "http".to_string()),
        ("S3_HOST", format!("127.0.0.1:{}", w.moto().port)),
        ("S3_CREDENTIAL_FILE", w.creds.display().to_string()),
        ("API_GATEWAY", w.ims_url.clone()),
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
        ("TARGET_SERVICE", String::new()),
        ("REMOVAL_GRACE", "0".to_string()),
        ("KUBECONFIG", api.kubeconfig.display().to_string()),
        ("NODE_NAME", name.to_string()),
        ("REMOTE_LEDGER", remote.to_string()),
    ];
    let layers = Layers::load(
        Some(Path::new("/dev/null")),
        env.into_iter()
            .map(|(k, v)| (format!("SBPS_MARSHAL_{k}"), v)),
        &[],
    )
    .unwrap();
    let settings = Settings::from_layers(&layers, name).unwrap();
    std::fs::create_dir_all(&settings.state_dir).unwrap();
    let target: Arc<dyn Target> = Arc::new(rig.target());
    Worker {
        agent: agent(&settings, target.clone()),
        rig,
        target,
        settings,
        _state: state,
    }
}

/// The agent as `Agent::new` builds it, on the worker's kernel.
fn agent(settings: &Settings, target: Arc<dyn Target>) -> Agent {
    let sources = Sources::with_tokens(
        wiring::sources_config(settings).unwrap(),
        Arc::new(Tokens {
            down: Arc::new(AtomicBool::new(false)),
        }),
    )
    .unwrap();
    let mirror = wiring::mirror(settings);
    let agent = Agent::with_parts(settings.clone(), sources, target, Box::new(NoServices)).unwrap();
    match mirror {
        Some(m) => agent.with_mirror(m),
        None => agent,
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Puts a PE object in S3 and in the mounts given (the bucket template first).
async fn put_pe(w: &World, key: &str, body: &[u8], mounts: &[&Path]) {
    w.moto().put(BUCKET, key, body.to_vec()).await;
    for m in std::iter::once(w.rig.images.path()).chain(mounts.iter().copied()) {
        std::fs::write(m.join(key), body).unwrap();
    }
}

/// A worker with a history: its numbers are not what a fresh numbering would give.
/// The world starts with a PE and a rootfs image; a second PE image comes, then the first
/// goes (its number freed and quarantined).
async fn worker_with_history(w: &World, api: &Api, name: &str) -> Worker {
    let mut a = worker(w, api, name, true).await;
    let r = a.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    put_pe(w, NEW_PE, &[5u8; 6144], &[a.rig.images.path()]).await;
    let r = a.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    w.moto().delete(BUCKET, OLD_PE).await;
    let r = a.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    let luns = a.luns();
    assert_eq!(luns.len(), 2, "{luns:?}");
    a
}

fn ops(r: &ScanReport) -> Vec<Op> {
    r.outcomes.iter().map(|o| o.op.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_worker_gets_every_number_back() {
    let w = world_with(&[]).await;
    let api = api().await;
    let a = worker_with_history(&w, &api, "ncn-w001").await;
    let before = a.luns();
    assert!(
        api.api
            .configmap("services", &configmap_name("ncn-w001"))
            .is_some(),
        "the ledger is in the API"
    );
    drop(a);

    // The rebuild: a new disk (no ledger, no saveconfig.json), the target recreated
    // enabled and empty by CSM's provisioning.
    let mut a = worker(&w, &api, "ncn-w001", true).await;
    a.enable_tpg();
    let r = a.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    let done = ops(&r);
    assert_eq!(
        done.first(),
        Some(&Op::DisableTpg),
        "closed while filled: {done:?}"
    );
    assert_eq!(done.last(), Some(&Op::EnableTpg), "{done:?}");
    assert_eq!(a.luns(), before, "every image back at its number");
    // The restored ledger is on the new disk too; the next scan is steady.
    let r = a.scan().await;
    assert!(r.converged && r.outcomes.is_empty(), "{:?}", ops(&r));

    // The same rebuild without the remote ledger numbers afresh: this is the incident.
    let mut b = worker(&w, &api, "ncn-w001", false).await;
    b.enable_tpg();
    let r = b.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(b.luns().len(), before.len());
    assert_ne!(
        b.luns(),
        before,
        "a local-only ledger cannot survive a rebuild"
    );
}

/// Requests for ledger documents since `from`: (reads, writes). The node label is read
/// every scan besides, as the original did.
fn requests(api: &KubeApi, from: usize) -> (usize, usize) {
    let seen = api.seen();
    let s: Vec<_> = seen[from..]
        .iter()
        .filter(|r| r.uri.contains("/configmaps"))
        .collect();
    let reads = s.iter().filter(|r| r.method == "GET").count();
    (reads, s.len() - reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_scan_makes_no_request_and_a_change_one_write() {
    let w = world_with(&[]).await;
    let api = api().await;
    let mut a = worker(&w, &api, "ncn-w001", true).await;
    let n = api.api.seen().len();
    let r = a.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    // Start: read this node's document, list the fleet's (new images), write ahead,
    // then the status.
    assert_eq!(requests(&api.api, n), (2, 2), "{:#?}", &api.api.seen()[n..]);

    let n = api.api.seen().len();
    let r = a.scan().await;
    assert!(r.converged && r.outcomes.is_empty());
    assert_eq!(
        requests(&api.api, n),
        (0, 0),
        "steady: {:#?}",
        &api.api.seen()[n..]
    );

    put_pe(&w, NEW_PE, &[5u8; 6144], &[a.rig.images.path()]).await;
    let n = api.api.seen().len();
    let r = a.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(
        requests(&api.api, n),
        (1, 1),
        "a change: {:#?}",
        &api.api.seen()[n..]
    );

    let n = api.api.seen().len();
    a.scan().await;
    assert_eq!(requests(&api.api, n), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_api_cannot_be_written_new_images_wait_and_nothing_is_removed() {
    let w = world_with(&[]).await;
    let api = api().await;
    let mut a = worker(&w, &api, "ncn-w001", true).await;
    assert!(a.scan().await.converged);
    let before = a.luns();

    api.api.down();
    put_pe(&w, NEW_PE, &[5u8; 6144], &[a.rig.images.path()]).await;
    w.moto().delete(BUCKET, OLD_PE).await;
    let r = a.scan().await;
    assert!(!r.converged);
    assert_eq!(a.luns(), before, "nothing exported changes");
    let p = r.plan.as_ref().unwrap();
    assert_eq!(p.waiting.len(), 1, "{:?}", p.waiting);
    assert!(
        p.waiting[0].reason.contains("Kubernetes API"),
        "{}",
        p.waiting[0].reason
    );
    assert!(p.held.iter().any(|h| matches!(
        h.reason,
        sbps_marshal::plan::HoldReason::NumbersFrozen { .. }
    )));
    assert!(
        r.problems()
            .iter()
            .any(|p| p.contains("wait for a LUN number")),
        "{:?}",
        r.problems()
    );
    let why = explain(&r, a.agent.ledger(), NEW_PE).join("\n");
    assert!(why.contains("waits for a LUN number"), "{why}");

    api.api.up().await;
    let r = a.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(a.luns().len(), 2, "the new image is in, the old one out");

    // RBAC missing: the message names what to grant, and still nothing is removed.
    // (The image that went comes back at its own quarantined number, which the API's
    // copy already names, so only a third, new image waits.)
    api.api.deny("update", "configmaps");
    put_pe(
        &w,
        "PE/CPE-third.squashfs",
        &[3u8; 2048],
        &[a.rig.images.path()],
    )
    .await;
    let before = a.luns();
    let r = a.scan().await;
    assert!(!r.converged);
    assert_eq!(a.luns(), before);
    let reason = &r.plan.as_ref().unwrap().waiting[0].reason;
    assert!(
        reason.contains("update") && reason.contains("configmaps"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_worker_that_cannot_read_the_api_opens_nothing() {
    let w = world_with(&[]).await;
    let api = api().await;
    let before = worker_with_history(&w, &api, "ncn-w001").await.luns();

    api.api.down();
    let mut a = worker(&w, &api, "ncn-w001", true).await;
    a.enable_tpg();
    let r = a.scan().await;
    assert!(!r.converged);
    assert_eq!(
        ops(&r),
        [Op::DisableTpg],
        "no number is known: closed, nothing mapped"
    );
    assert!(a.luns().is_empty());
    // Restarted while the API is still down: the ledger that frozen scan left on the
    // new disk numbers nothing, so it does not outrank the API's copy later.
    a.restart();
    let r = a.scan().await;
    assert!(!r.converged && a.luns().is_empty());

    api.api.up().await;
    let r = a.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(a.luns(), before);
    assert_eq!(ops(&r).last(), Some(&Op::EnableTpg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_numbers_and_the_fleet_flags_differing_content() {
    let w = world_with(&[]).await;
    let api = api().await;
    let mut a = worker_with_history(&w, &api, "ncn-w001").await;
    // A second worker, new: it numbers as the first did, not from 1.
    let mut b = worker(&w, &api, "ncn-w002", true).await;
    copy_tree(a.rig.images.path(), b.rig.images.path());
    let r = b.scan().await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(b.luns(), a.luns());

    let fleet = || async {
        let docs = sbps_marshal::ledger::kube::ConfigMapMirror::new(
            Arc::new(sbps_marshal::k8s::KubeConfigMaps::new(
                Arc::new(sbps_marshal::k8s::KubeConnector::new(wiring::kube(
                    &a_settings(&api),
                ))),
                "services",
            )),
            "observer",
        )
        .fleet()
        .await
        .unwrap();
        survey(
            &docs,
            &SurveyPolicy {
                labelled: Some(["ncn-w001".to_string(), "ncn-w002".to_string()].into()),
                grace_secs: 0,
                periods: 3,
                now: sbps_marshal::clock::unix_now(),
            },
        )
    };
    let s = fleet().await;
    assert_eq!(s.flags, [], "{s:#?}");
    assert_eq!(s.images.len(), 2);
    assert_eq!(fleet_cli(&api), 0);

    // The PE object is re-uploaded with other content under the same key; the first
    // worker sees it.
    put_pe(&w, NEW_PE, &[6u8; 6144], &[a.rig.images.path()]).await;
    let r = a.scan().await;
    assert!(r
        .plan
        .unwrap()
        .warnings
        .iter()
        .any(|w| matches!(w, sbps_marshal::plan::Warning::ContentChanged { .. })));
    let s = fleet().await;
    assert!(
        s.flags
            .iter()
            .any(|f| matches!(f, Flag::ContentDiffers { .. })),
        "{:#?}",
        s.flags
    );
    assert_eq!(fleet_cli(&api), 1);
    let _ = b.scan().await;
}

fn a_settings(api: &Api) -> Settings {
    let layers = Layers::load(
        Some(Path::new("/dev/null")),
        [(
            "SBPS_MARSHAL_KUBECONFIG".to_string(),
            api.kubeconfig.display().to_string(),
        )],
        &[],
    )
    .unwrap();
    Settings::from_layers(&layers, "observer").unwrap()
}

/// `sbps-marshal fleet`'s exit status.
fn fleet_cli(api: &Api) -> i32 {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sbps-marshal"))
        .env_clear()
        .args(["--config", "/dev/null", "fleet"])
        .env("SBPS_MARSHAL_KUBECONFIG", &api.kubeconfig)
        .env("SBPS_MARSHAL_REMOVAL_GRACE", "0")
        .output()
        .unwrap();
    eprintln!(
        "fleet: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code().unwrap_or(-1)
}
