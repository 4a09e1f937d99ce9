//! The README's failure table, one row each: a scan that meets the fault is not
//! converged (`scan --once` exits 1 on exactly this value), says why among its
//! problems, in the log's summary, the metrics and `/status`, and changes nothing;
//! the next scan after the fault clears converges again. Faults that are no failure
//! (a hostile key skipped with its reason) leave the scan converged (exit 0).

use std::time::Duration;

use axum::http::StatusCode;
use sbps_marshal::inventory::ROOTFS_ARTIFACT_TYPE;
use sbps_marshal::lio::Op;
use sbps_marshal::report::ScanReport;
use sbps_testkit::ims::Answer;
use serde_json::json;

use crate::scans::{record, world_with, World, BUCKET};

/// A world whose first scan converged: img1 and a PE exported, img2 untagged.
async fn served(extra: &[(&str, String)]) -> World {
    let mut w = world_with(extra).await;
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    w
}

/// The scan under the fault: not converged, `says` among its problems, nothing changed,
/// and the metrics and the status document agree.
async fn not_converged(w: &mut World, says: &str) -> ScanReport {
    let before = w.target.observe().unwrap();
    let r = w.agent.scan_and_publish().await;
    let problems = r.problems().join("\n");
    assert!(!r.converged, "converged despite the fault");
    assert!(problems.contains(says), "{says:?} not in:\n{problems}");
    assert_eq!(w.target.observe().unwrap(), before, "the fault changed LIO");
    let metrics = w.agent.metrics.render();
    assert!(metrics.contains("sbps_marshal_converged 0"), "{metrics}");
    let status = w.agent.status.read().unwrap().clone().unwrap();
    assert!(!status.converged && !status.problems.is_empty());
    r
}

async fn converges(w: &mut World) {
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    assert!(w
        .agent
        .metrics
        .render()
        .contains("sbps_marshal_converged 1"));
}

fn set_ims(w: &World, code: StatusCode, body: serde_json::Value) {
    w.ims.respond(code, &body);
}

fn ims_back(w: &World) {
    w.ims.set_delay(Duration::ZERO);
    set_ims(
        w,
        StatusCode::OK,
        json!([record("img1", Some("true")), record("img2", Some("false"))]),
    );
}

async fn put_manifest(w: &World, artifacts: serde_json::Value) {
    let m = json!({"version": "1.0", "artifacts": artifacts}).to_string();
    w.moto().put(BUCKET, "img1/manifest.json", m).await;
}

async fn manifest_back(w: &World) {
    let link =
        json!({"path": format!("s3://{BUCKET}/img1/rootfs"), "etag": w.rootfs_etag, "type": "s3"});
    put_manifest(w, json!([{"type": ROOTFS_ARTIFACT_TYPE, "link": link}])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down() {
    let mut w = served(&[]).await;
    drop(w.moto.take());
    not_converged(&mut w, "S3 listing unavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_credential_file_missing() {
    let mut w = served(&[]).await;
    let creds = std::fs::read(&w.creds).unwrap();
    std::fs::remove_file(&w.creds).unwrap();
    not_converged(&mut w, "S3 listing unavailable").await;
    std::fs::write(&w.creds, creds).unwrap();
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_503() {
    let mut w = served(&[]).await;
    set_ims(
        &w,
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"title": "down"}),
    );
    not_converged(&mut w, "IMS unavailable").await;
    ims_back(&w);
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_timeout() {
    let mut w = served(&[("IMS_TIMEOUT", "1".into())]).await;
    w.ims.set_delay(Duration::from_secs(3));
    not_converged(&mut w, "timed out").await;
    ims_back(&w);
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_answer_not_json() {
    let mut w = served(&[]).await;
    w.ims
        .set_answer(Answer::raw("text/plain", "<html>proxy error</html>"));
    not_converged(&mut w, "not JSON").await;
    ims_back(&w);
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_answer_an_object() {
    let mut w = served(&[]).await;
    set_ims(&w, StatusCode::OK, json!({"images": []}));
    not_converged(&mut w, "not an array").await;
    ims_back(&w);
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_answers_empty() {
    let mut w = served(&[]).await;
    set_ims(&w, StatusCode::OK, json!([]));
    not_converged(&mut w, "names none of the 1 rootfs images").await;
    assert!(w
        .agent
        .metrics
        .render()
        .contains("sbps_marshal_ims_answer_held 1"));
    ims_back(&w);
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_record_unreadable() {
    let mut w = served(&[]).await;
    let mut bad = record("img1", Some("true"));
    bad["id"] = json!(7);
    set_ims(
        &w,
        StatusCode::OK,
        json!([bad, record("img2", Some("false"))]),
    );
    let r = not_converged(&mut w, "IMS record 0 could not be read").await;
    assert!(w
        .agent
        .metrics
        .render()
        .contains("sbps_marshal_unknown{reason=\"unreadable_record\"} 1"));
    assert!(r.outcomes.is_empty());
    ims_back(&w);
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_unparsable() {
    let mut w = served(&[]).await;
    w.moto()
        .put(BUCKET, "img1/manifest.json", "{not json")
        .await;
    not_converged(&mut w, "unparsable manifest").await;
    manifest_back(&w).await;
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_without_artifacts() {
    let mut w = served(&[]).await;
    w.moto()
        .put(BUCKET, "img1/manifest.json", r#"{"version": "1.0"}"#)
        .await;
    not_converged(&mut w, "no artifacts").await;
    manifest_back(&w).await;
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_rootfs_without_etag() {
    let mut w = served(&[]).await;
    let link = json!({"path": format!("s3://{BUCKET}/img1/rootfs"), "type": "s3"});
    put_manifest(&w, json!([{"type": ROOTFS_ARTIFACT_TYPE, "link": link}])).await;
    not_converged(&mut w, "rootfs artifact has no link.etag").await;
    manifest_back(&w).await;
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spire_token_failure() {
    let mut w = served(&[]).await;
    w.spire_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    not_converged(&mut w, "no token").await;
    w.spire_down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_down() {
    // The node label cannot be read (no kubeconfig): the TPG is neither enabled nor
    // disabled, the images are still reconciled, and the scan is not converged.
    let mut w = world_with(&[
        ("NODE_LABEL", "iscsi=sbps".into()),
        ("KUBECONFIG", "/nonexistent/admin.conf".into()),
    ])
    .await;
    let r = w.agent.scan_and_publish().await;
    assert!(!r.converged);
    assert!(
        r.problems()
            .iter()
            .any(|p| p.contains("node label unknown")),
        "{:?}",
        r.problems()
    );
    assert!(!r.outcomes.iter().any(|o| o.op == Op::EnableTpg));
    assert!(r.outcomes.iter().any(|o| matches!(o.op, Op::MapLun { .. })));
    assert!(w
        .agent
        .metrics
        .render()
        .contains("sbps_marshal_converged 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_file_missing() {
    let mut w = served(&[]).await;
    let file = w.rig.images.path().join("img1/rootfs");
    std::fs::rename(&file, file.with_extension("away")).unwrap();
    not_converged(&mut w, "not in the mount yet").await;
    std::fs::rename(file.with_extension("away"), &file).unwrap();
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_mismatch() {
    let mut w = served(&[]).await;
    let file = w.rig.images.path().join("img1/rootfs");
    let body = std::fs::read(&file).unwrap();
    std::fs::write(&file, &body[..100]).unwrap();
    not_converged(&mut w, "not ready").await;
    std::fs::write(&file, body).unwrap();
    converges(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_are_skips_and_the_scan_converges() {
    let mut w = served(&[]).await;
    w.moto().put(BUCKET, "PE/a,b.squashfs", vec![1u8; 10]).await;
    w.moto().put(BUCKET, "PE/dir/", Vec::<u8>::new()).await;
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    assert!(w
        .agent
        .metrics
        .render()
        .contains("sbps_marshal_skipped{reason=\"unsafe_path\"} 1"));
}

/// Rule 7: the first enable waits until nothing wanted is unknown and missing from the
/// map; an image already exported may stay unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_enable_waits_for_unknown_images() {
    let mut w = world_with(&[]).await;
    // img3: tagged, in S3, not yet in the mount (s3fs lag).
    let body = vec![3u8; 4096];
    let etag = w.moto().put(BUCKET, "img3/rootfs", body.clone()).await;
    let link = json!({"path": format!("s3://{BUCKET}/img3/rootfs"), "etag": etag.trim_matches('"'), "type": "s3"});
    let m = json!({"version": "1.0", "artifacts": [{"type": ROOTFS_ARTIFACT_TYPE, "link": link}]});
    w.moto()
        .put(BUCKET, "img3/manifest.json", m.to_string())
        .await;
    set_ims(
        &w,
        StatusCode::OK,
        json!([record("img1", Some("true")), record("img3", Some("true"))]),
    );
    let r = w.agent.scan_and_publish().await;
    assert!(!r.converged);
    assert!(
        !r.outcomes.iter().any(|o| o.op == Op::EnableTpg),
        "{:?}",
        r.outcomes
    );
    assert!(r.outcomes.iter().any(|o| matches!(o.op, Op::MapLun { .. })));
    assert!(
        r.problems().iter().any(|p| p.contains("TPG left disabled")),
        "{:?}",
        r.problems()
    );
    let tpg = w.target.observe().unwrap().tpg.unwrap();
    assert!(!tpg.enabled);

    // The file arrives: the map is whole, the TPG is enabled in that scan.
    let p = w.rig.images.path().join("img3/rootfs");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, &body).unwrap();
    let r = w.agent.scan_and_publish().await;
    assert!(r.converged, "{:?}", r.problems());
    assert_eq!(r.outcomes.last().map(|o| &o.op), Some(&Op::EnableTpg));

    // An exported image that becomes unknown does not keep a TPG from coming back.
    std::fs::rename(&p, p.with_extension("away")).unwrap();
    let tpg_dir = w.rig.tpg();
    w.rig.fs.write(&tpg_dir.join("enable"), "0").unwrap();
    let r = w.agent.scan_and_publish().await;
    assert!(!r.converged);
    assert!(
        r.outcomes.iter().any(|o| o.op == Op::EnableTpg),
        "{:?}",
        r.outcomes
    );
}
