//! Gather benchmark: cold and warm `Sources::gather` over loopback for N images.
//!
//! `cargo bench --bench gather` runs N = 1,000 and 5,000. Under `cargo test` (no
//! `--bench` argument) it runs one tiny round as a smoke test.
//!
//! S3 is an in-memory double (ListObjectsV2 pages of 1,000 with continuation tokens,
//! GetObject), not moto: moto stores ~100 objects/s, too slow to load 10,000+ objects
//! per run, and its own latency would dominate. The IMS double serves N tagged
//! records; the mount is a plain directory of sparse files of the right sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sbps_marshal::desired::{self, Settings};
use sbps_marshal::inventory::gather::{Sources, SourcesSettings};
use sbps_marshal::inventory::ims::ImsSettings;
use sbps_marshal::inventory::s3::S3Settings;
use sbps_marshal::inventory::spire::{StaticToken, Token};
use sbps_marshal::inventory::ROOTFS_ARTIFACT_TYPE;
use sbps_testkit::ims::Ims;
use sbps_testkit::s3::{Bucket, Object, BUCKET, S3};
use sbps_testkit::serve::spawn;
use serde_json::json;

async fn round(n: usize, verbose: bool) {
    let mount = tempfile::tempdir().unwrap();
    let mut objects = Vec::new();
    let mut records = Vec::new();
    for i in 0..n {
        let id = format!("{i:08x}-0000-4000-8000-000000000000");
        let rootfs_etag = format!("{:032x}-{}", i, 1 + i % 7);
        let size = 1_000_000 + i as u64;
        let manifest = json!({"version": "1.0", "created": "x", "artifacts": [
            {"link": {"path": format!("s3://{BUCKET}/{id}/rootfs"), "etag": rootfs_etag, "type": "s3"},
             "type": ROOTFS_ARTIFACT_TYPE, "md5": "x"}]})
        .to_string();
        let m_etag = format!("{:032x}", i + 1);
        objects.push(Object::with_body(
            format!("{id}/manifest.json"),
            &m_etag,
            manifest.into_bytes(),
        ));
        objects.push(Object::new(format!("{id}/rootfs"), &rootfs_etag, size));
        std::fs::create_dir(mount.path().join(&id)).unwrap();
        std::fs::File::create(mount.path().join(&id).join("rootfs"))
            .unwrap()
            .set_len(size)
            .unwrap();
        records.push(json!({"id": id, "name": format!("img{i}"), "arch": "x86_64",
            "link": {"path": format!("s3://{BUCKET}/{id}/manifest.json"), "etag": m_etag, "type": "s3"},
            "metadata": {"sbps-project": "true"}}));
    }
    let n_objects = objects.len();
    let store = Arc::new(Bucket::new(objects));
    let s3_url = spawn(S3::over(store.clone()).router()).await;
    let ims = Arc::new(Ims::default());
    ims.set(&records);
    let ims_url = spawn(ims.clone().router()).await;

    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::write(&creds, "AK:SK\n").unwrap();
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut cfg = SourcesSettings::new(
        S3Settings::new(s3_url, BUCKET, creds),
        ImsSettings::new(ims_url.join("apis/ims/v3/images").unwrap()),
    );
    cfg.node = None;
    let sources = Sources::with_tokens(cfg, Arc::new(StaticToken(Token::new("t".into())))).unwrap();
    let settings = Settings {
        bucket: BUCKET.into(),
        mount: mount.path().into(),
        ims_tagging: true,
        backend: Default::default(),
    };
    for label in ["cold", "warm"] {
        let (l0, g0, i0) = (store.lists(), store.gets(), ims.hits());
        let t = Instant::now();
        let g = sources.gather(&settings).await;
        let wall = t.elapsed();
        let d = desired::desired(&g.inventory, &settings);
        assert_eq!(d.projections.len(), n, "every image projected");
        let s = &g.stats;
        if verbose {
            println!(
                "N={n:>5} images ({n_objects} objects) {label}: gather {:>8.1} ms | S3 list {:>2} req {:>7.1} ms | IMS {} req {:>6.1} ms | manifests {:>4} GET {:>7.1} ms ({} cache hits) | mount {} stats {:>6.1} ms",
                ms(wall),
                store.lists() - l0,
                ms(s.s3_list.duration),
                ims.hits() - i0,
                ms(s.ims.duration),
                store.gets() - g0,
                ms(s.manifest_fetch.duration),
                s.manifests.cache_hits,
                s.mount_checked,
                ms(s.mount_duration),
            );
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if !bench {
        rt.block_on(round(20, false));
        return;
    }
    println!("gather benchmark: loopback, in-memory S3 double (not moto), IMS double, plain-directory mount");
    for n in [1_000, 5_000] {
        rt.block_on(round(n, true));
    }
}
