//! End to end: moto S3 + an s3fs mount of it + an IMS double, through `gather`,
//! then `desired` on the result. Also checks what a warm scan costs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sbps_marshal::desired::{self, Outcome, Reason, Settings};
use sbps_marshal::inventory::gather::{Sources, SourcesSettings};
use sbps_marshal::inventory::ims::ImsSettings;
use sbps_marshal::inventory::s3::S3Settings;
use sbps_marshal::inventory::spire::{StaticToken, Token};
use sbps_marshal::inventory::{MountEntry, ROOTFS_ARTIFACT_TYPE};
use serde_json::json;

use sbps_testkit::ims::Ims;

use crate::support::{credential_file, Moto, S3fsMount, Served};

const BUCKET: &str = "boot-images";

fn manifest(rootfs_path: &str, etag: &str) -> String {
    json!({"version": "1.0", "created": "2024-08-15 09:37:13.123456", "artifacts": [
        {"link": {"path": rootfs_path, "etag": etag, "type": "s3"}, "type": ROOTFS_ARTIFACT_TYPE, "md5": "x"},
        {"link": {"path": "s3://boot-images/k", "etag": "e", "type": "s3"},
         "type": "application/vnd.cray.image.kernel", "md5": "x"}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gathers_everything_and_a_warm_scan_is_cheap() {
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    // Filler, so the listing takes two pages.
    moto.put_many(
        BUCKET,
        (0..1_000).map(|i| format!("filler/{i:04}")).collect(),
    )
    .await;
    moto.put(BUCKET, "PE/CPE-base.squashfs", vec![9u8; 2048])
        .await;
    let mut records = Vec::new();
    for i in 0..3 {
        let id = format!("00000000-0000-0000-0000-00000000000{i}");
        let rootfs_etag = if i == 2 {
            moto.put_multipart(
                BUCKET,
                &format!("{id}/rootfs"),
                &[vec![1u8; 600], vec![2u8; 400]],
            )
            .await
        } else {
            moto.put(BUCKET, &format!("{id}/rootfs"), vec![i as u8; 1000 + i])
                .await
        };
        let m = manifest(
            &format!("s3://{BUCKET}/{id}/rootfs"),
            rootfs_etag.trim_matches('"'),
        );
        let m_etag = moto.put(BUCKET, &format!("{id}/manifest.json"), m).await;
        records.push(
            json!({"id": id, "name": format!("img{i}"), "arch": "x86_64",
            "link": {"path": format!("s3://{BUCKET}/{id}/manifest.json"),
                     "etag": m_etag.trim_matches('"'), "type": "s3"},
            "metadata": {"sbps-project": "true"}}),
        );
    }
    // Untagged: no manifest request. Manifest not in the bucket: no request either.
    records.push(json!({"id": "u", "name": "untagged",
        "link": {"path": "s3://boot-images/u/manifest.json", "etag": "x", "type": "s3"},
        "metadata": {}}));
    records.push(json!({"id": "m", "name": "manifest-gone",
        "link": {"path": "s3://boot-images/m/manifest.json", "etag": "x", "type": "s3"},
        "metadata": {"sbps-project": "true"}}));
    // A corrupt manifest: unknown for that image only.
    moto.put(BUCKET, "c/manifest.json", "{\"artifacts\": 5}")
        .await;
    records.push(json!({"id": "c", "name": "corrupt",
        "link": {"path": "s3://boot-images/c/manifest.json", "type": "s3"},
        "metadata": {"sbps-project": "true"}}));
    records.push(json!({"name": "no id"}));

    // Only `Bearer the-token` is answered: anything else is a 401 and fails the gather.
    let ims_double = Arc::new(Ims::new(&serde_json::Value::Array(records)).with_token("the-token"));
    let ims = Served::start(ims_double.clone().router()).await;
    let mnt = S3fsMount::mount(&moto, BUCKET);

    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Settings::new(moto.endpoint.clone(), BUCKET, credential_file(dir.path()));
    s3.timeout = Duration::from_secs(10);
    let mut cfg = SourcesSettings::new(
        s3,
        ImsSettings::new(ims.url().join("apis/ims/v3/images").unwrap()),
    );
    cfg.node = None;
    let sources =
        Sources::with_tokens(cfg, Arc::new(StaticToken(Token::new("the-token".into())))).unwrap();
    let settings = Settings {
        bucket: BUCKET.into(),
        mount: mnt.mountpoint.clone(),
        ims_tagging: true,
        backend: Default::default(),
    };

    let cold = sources.gather(&settings).await;
    let inv = &cold.inventory;
    let objects = inv.s3.as_ref().unwrap().len();
    assert_eq!(objects, 1_000 + 1 + 3 * 2 + 1);
    assert_eq!(inv.ims.as_ref().unwrap().len(), 6);
    assert_eq!(inv.ims_unreadable.len(), 1);
    let manifests: BTreeMap<_, _> = inv
        .manifests
        .iter()
        .map(|(k, v)| (k.as_str(), v.is_ok()))
        .collect();
    assert_eq!(manifests.len(), 5, "{manifests:?}");
    assert_eq!(manifests.values().filter(|ok| **ok).count(), 3);
    assert_eq!(inv.mount.len(), 4, "{:?}", inv.mount);
    assert!(inv
        .mount
        .values()
        .all(|e| matches!(e, MountEntry::File { .. })));
    let d = desired::desired(inv, &settings);
    assert_eq!(d.projections.len(), 4, "{:#?}", d.verdicts);
    let reason = |id: &str| {
        d.verdicts
            .iter()
            .find(|v| matches!(&v.subject, desired::Subject::Image { id: i, .. } if i == id))
            .map(|v| v.outcome.clone())
            .unwrap()
    };
    assert!(matches!(
        reason("u"),
        Outcome::Skipped {
            reason: Reason::Untagged { .. }
        }
    ));
    assert!(matches!(
        reason("m"),
        Outcome::Skipped {
            reason: Reason::ManifestMissing { .. }
        }
    ));
    assert!(matches!(
        reason("c"),
        Outcome::Unknown {
            reason: Reason::ManifestError { .. }
        }
    ));

    let s = &cold.stats;
    let pages = objects.div_ceil(1000) as u64;
    assert_eq!(s.ims.requests, 1);
    assert_eq!(s.s3_list.requests, pages);
    assert_eq!(
        s.manifest_fetch.requests, 4,
        "3 good + 1 corrupt; the missing one costs none"
    );
    assert_eq!(s.manifests.not_listed, 1);
    assert_eq!(ims_double.hits(), 1);
    eprintln!("cold: {s:?}");

    let warm = sources.gather(&settings).await;
    let s = &warm.stats;
    eprintln!("warm: {s:?}");
    assert_eq!(warm.inventory, cold.inventory);
    assert_eq!(s.ims.requests, 1);
    assert_eq!(s.s3_list.requests, pages);
    assert_eq!(s.manifest_fetch.requests, 0);
    assert_eq!(s.manifests.cache_hits, 4);
    assert_eq!(ims_double.hits(), 2);
}

#[tokio::test]
async fn failing_sources_are_unknown_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let closed: url::Url = format!("http://127.0.0.1:{}", crate::support::free_port())
        .parse()
        .unwrap();
    let mut s3 = S3Settings::new(closed.clone(), BUCKET, credential_file(dir.path()));
    s3.retry = sbps_marshal::inventory::retry::RetryPolicy::once();
    let mut cfg = SourcesSettings::new(
        s3,
        ImsSettings::new(closed.join("apis/ims/v3/images").unwrap()),
    );
    cfg.node = None;
    cfg.spire.backend = sbps_marshal::inventory::spire::SpireBackend::Cli {
        agent: dir.path().join("no-such-agent"),
    };
    let sources = Sources::new(cfg).unwrap();
    let settings = Settings {
        bucket: BUCKET.into(),
        mount: dir.path().into(),
        ims_tagging: true,
        backend: Default::default(),
    };
    let g = sources.gather(&settings).await;
    assert!(g.inventory.s3.is_err());
    let e = g.inventory.ims.unwrap_err();
    assert!(e.starts_with("no token: "), "{e}");
    assert_eq!(g.stats.ims.requests, 0);
    assert!(g.inventory.manifests.is_empty());
}
