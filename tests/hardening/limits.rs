//! Resource limits: servers that accept and never answer, answers above the
//! caps; the gather stays within its time bounds and the next one still works.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sbps_marshal::http::TlsOptions;
use sbps_marshal::inventory::ims::{ImsSettings, ImsSource};
use sbps_marshal::inventory::ROOTFS_ARTIFACT_TYPE;
use sbps_testkit::s3::{Fault, On};
use serde_json::json;

use crate::support::*;

/// A TCP server that accepts and holds every connection without a byte of answer.
async fn black_hole() -> (url::Url, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap())
        .parse()
        .unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (url, task)
}

/// How long a stalled server holds each request: past any deadline of these tests.
const STALL: Duration = Duration::from_secs(3600);

fn scene() -> (Vec<Object>, String) {
    let manifest = json!({"version": "1.0", "artifacts": [{"type": ROOTFS_ARTIFACT_TYPE,
        "link": {"path": format!("s3://{BUCKET}/img/rootfs"), "etag": "r", "type": "s3"}}]})
    .to_string();
    let s3 = vec![
        Object::new("PE/a.squashfs", "e", 1),
        Object::with_body("img/manifest.json", "m", manifest.into_bytes()),
        Object::new("img/rootfs", "r", 1),
    ];
    let ims = json!([{"id": "i", "name": "i", "link": {"path": format!("s3://{BUCKET}/img/manifest.json"), "etag": "m"},
        "metadata": {"sbps-project": "true"}}])
    .to_string();
    (s3, ims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_servers_are_bounded_and_the_next_gather_works() {
    let timeout = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let creds = cred_file(dir.path(), &format!("{ACCESS}:{S3_SECRET}\n"));
    let mount = tempfile::tempdir().unwrap();
    let set = settings(mount.path());

    // IMS and S3 both black holes.
    let (hole, task) = black_hole().await;
    let src = sources(
        hole.clone(),
        hole,
        creds.clone(),
        TlsOptions::default(),
        timeout,
    );
    let t = Instant::now();
    let g = src.gather(&set).await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "gather took {took:?} with 1 s timeouts"
    );
    let s3e = g.inventory.s3.unwrap_err();
    let imse = g.inventory.ims.unwrap_err();
    assert!(s3e.contains("timed out"), "{s3e}");
    assert!(imse.contains("timed out"), "{imse}");
    task.abort();

    // Listing fine, manifest GETs stall: that image is unknown, the rest judged.
    let (objects, ims_body) = scene();
    let s3 = S3::memory(objects);
    s3.script.always(On::Get, Fault::stall());
    let s3s = Served::start(s3.router()).await;
    let ims = Served::start(ims_router(ims_body.clone())).await;
    let src = sources(
        s3s.url(),
        ims.url(),
        creds.clone(),
        TlsOptions::default(),
        timeout,
    );
    let t = Instant::now();
    let g = src.gather(&set).await;
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let m = g.inventory.manifests.values().next().unwrap();
    assert!(m.as_ref().unwrap_err().contains("timed out"), "{m:?}");
    assert!(g.inventory.s3.is_ok() && g.inventory.ims.is_ok());

    // One set of sources: a stalled scan, then the servers recover.
    let (objects, ims_body) = scene();
    let s3 = S3::memory(objects);
    let s3_script = s3.script.clone();
    s3_script.always(On::Any, Fault::stall());
    let s3s = Served::start(s3.router()).await;
    let ims_double = ims_double(ims_body);
    ims_double.set_delay(STALL);
    let ims = Served::start(ims_double.clone().router()).await;
    let src = sources(s3s.url(), ims.url(), creds, TlsOptions::default(), timeout);
    let t = Instant::now();
    let g = src.gather(&set).await;
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(g.inventory.s3.is_err() && g.inventory.ims.is_err());
    s3_script.clear();
    ims_double.set_delay(Duration::ZERO);
    let g = src.gather(&set).await;
    assert_eq!(g.inventory.s3.as_ref().unwrap().len(), 3);
    assert_eq!(g.inventory.ims.as_ref().unwrap().len(), 1);
    assert!(
        g.inventory.manifests.values().all(|m| m.is_ok()),
        "{:?}",
        g.inventory.manifests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_above_the_caps_are_refused() {
    // IMS above its cap.
    let big = format!("[{}]", vec!["{\"id\": \"x\"}"; 2000].join(","));
    let ims = Served::start(ims_router(big)).await;
    let mut cfg = ImsSettings::new(ims.url().join("apis/ims/v3/images").unwrap());
    cfg.max_body = 4096;
    let e = ImsSource::new(cfg)
        .unwrap()
        .list("t")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("exceeds the 4096-byte limit"), "{e}");

    // An S3 listing page above 16 MiB, a manifest above 1 MiB.
    let dir = tempfile::tempdir().unwrap();
    let creds = cred_file(dir.path(), &format!("{ACCESS}:{S3_SECRET}\n"));
    let mount = tempfile::tempdir().unwrap();
    let (objects, ims_body) = scene();
    let mut s3 = S3::memory(objects);
    s3.list_padding = 17 * 1024 * 1024;
    let s3s = Served::start(s3.router()).await;
    let ims = Served::start(ims_router(ims_body.clone())).await;
    let src = sources(
        s3s.url(),
        ims.url(),
        creds.clone(),
        TlsOptions::default(),
        Duration::from_secs(10),
    );
    let g = src.gather(&settings(mount.path())).await;
    let e = g.inventory.s3.unwrap_err();
    assert!(e.contains("exceeds the 16777216-byte limit"), "{e}");

    let (mut objects, ims_body) = scene();
    // The body grows past the cap; the listing still names the old size.
    objects[1].body = vec![b' '; 1024 * 1024 + 1];
    let s3s = Served::start(S3::memory(objects).router()).await;
    let ims = Served::start(ims_router(ims_body)).await;
    let src = sources(
        s3s.url(),
        ims.url(),
        creds,
        TlsOptions::default(),
        Duration::from_secs(10),
    );
    let g = src.gather(&settings(mount.path())).await;
    let m = g
        .inventory
        .manifests
        .values()
        .next()
        .unwrap()
        .as_ref()
        .unwrap_err();
    assert!(m.contains("exceeds the 1048576-byte limit"), "{m}");
}

/// The whole inventory has a deadline (GATHER_TIMEOUT) besides each request's: an
/// IMS that holds every request past it makes the scan change nothing, at the
/// deadline rather than at IMS_TIMEOUT, and the next scan converges as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gather_past_its_deadline_changes_nothing() {
    use sbps_marshal::agent::service::NoServices;
    use sbps_marshal::agent::Agent;
    use sbps_marshal::lio::Target;
    use std::os::unix::fs::PermissionsExt;

    let rig = crate::support::Rig::new();
    rig.image("PE/a.squashfs", 100);
    let s3 = Served::start(S3::memory([Object::new("PE/a.squashfs", "e", 100)]).router()).await;
    let ims_double = ims_double("[]".into());
    let ims = Served::start(ims_double.clone().router()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let creds = cred_file(dir.path(), "ACCESS:secret\n");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let settings = config_settings(&[
        ("GATHER_TIMEOUT", "1".to_string()),
        (
            "SQUASHFS_S3FS_MOUNT",
            rig.images.path().display().to_string(),
        ),
        ("STATE_DIR", state.display().to_string()),
        (
            "LIO_SAVE_FILE",
            dir.path().join("saveconfig.json").display().to_string(),
        ),
        ("TARGET_IQN", crate::support::IQN.into()),
        ("NODE_LABEL", String::new()),
        ("TARGET_SERVICE", String::new()),
    ]);
    // Each request may take 30 s: only the gather deadline can end the scan sooner.
    let src = sources(
        s3.url(),
        ims.url(),
        creds,
        TlsOptions::default(),
        Duration::from_secs(30),
    );
    let mut agent =
        Agent::with_parts(settings, src, Arc::new(rig.target()), Box::new(NoServices)).unwrap();
    let r = agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    let before = rig.target().observe().unwrap();

    ims_double.set_delay(STALL);
    let t0 = Instant::now();
    let r = agent.scan_and_publish().await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(20), "the scan took {took:?}");
    assert!(!r.converged);
    assert!(
        r.problems()
            .iter()
            .any(|p| p.contains("GATHER_TIMEOUT (1s)")),
        "{:?}",
        r.problems()
    );
    assert!(r.outcomes.is_empty(), "{:?}", r.outcomes);
    assert_eq!(rig.target().observe().unwrap(), before, "nothing changed");

    ims_double.set_delay(Duration::ZERO);
    let r = agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(rig.target().observe().unwrap(), before);
}
