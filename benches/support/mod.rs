//! Shared by the gather and scan benchmarks (`#[path]`-included, not a target):
//! the in-memory S3 double, the IMS double and the fixture generator.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use sbps_marshal::inventory::ROOTFS_ARTIFACT_TYPE;
use serde_json::{json, Value};

pub const BUCKET: &str = "boot-images";

/// An object: (etag, body, size).
pub type Object = (String, Vec<u8>, u64);

/// An S3 bucket in memory: key → (etag, body, size). Bodies are only kept for
/// `manifest.json`; every other object is listed with its size and has no body.
#[derive(Default)]
pub struct Store {
    pub objects: RwLock<BTreeMap<String, Object>>,
    pub lists: AtomicU64,
    pub gets: AtomicU64,
}

async fn list(
    State(st): State<Arc<Store>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> impl IntoResponse {
    st.lists.fetch_add(1, Ordering::Relaxed);
    let start = q.get("continuation-token").cloned().unwrap_or_default();
    let objects = st.objects.read().unwrap();
    let mut it =
        objects.range::<String, _>((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded));
    let page: Vec<_> = it.by_ref().take(1000).collect();
    let truncated = it.next().is_some();
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>boot-images</Name><MaxKeys>1000</MaxKeys>"#,
    );
    xml.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
    if truncated {
        xml.push_str(&format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            page.last().unwrap().0
        ));
    }
    for (k, (etag, _, size)) in page {
        xml.push_str(&format!(
            "<Contents><Key>{k}</Key><ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size></Contents>"
        ));
    }
    xml.push_str("</ListBucketResult>");
    xml
}

async fn object(State(st): State<Arc<Store>>, UrlPath(key): UrlPath<String>) -> impl IntoResponse {
    st.gets.fetch_add(1, Ordering::Relaxed);
    match st.objects.read().unwrap().get(&key) {
        Some((_, body, _)) => body.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The S3 double's routes (`/boot-images/` lists, `/boot-images/{key}` gets).
pub fn s3_router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/boot-images/", get(list))
        .route("/boot-images/{*key}", get(object))
        .with_state(store)
}

/// The IMS double: a fixed JSON body (changeable), a request counter.
#[derive(Default)]
pub struct Ims {
    pub body: RwLock<bytes::Bytes>,
    pub hits: AtomicU64,
}

impl Ims {
    pub fn set(&self, records: &[Value]) {
        *self.body.write().unwrap() = serde_json::to_vec(records).unwrap().into();
    }
}

async fn images(State(ims): State<Arc<Ims>>) -> impl IntoResponse {
    ims.hits.fetch_add(1, Ordering::Relaxed);
    let b = ims.body.read().unwrap().clone();
    ([("content-type", "application/json")], b)
}

pub fn ims_router(ims: Arc<Ims>) -> Router {
    Router::new()
        .route("/apis/ims/v3/images", get(images))
        .with_state(ims)
}

/// Serves `router` on 127.0.0.1 (an ephemeral port) from the current runtime.
pub async fn serve(router: Router) -> url::Url {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, router).await;
    });
    format!("http://{addr}").parse().unwrap()
}

/// The IMS id of image `i`.
pub fn image_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

/// The rootfs etag of image `i` (multipart-style, as IMS uploads are).
pub fn rootfs_etag(i: usize) -> String {
    format!("{:032x}-{}", i, 1 + i % 7)
}

/// What one image adds: its IMS record and its S3 objects (key → etag, body, size).
pub struct ImageFixture {
    pub record: Value,
    pub objects: Vec<(String, Object)>,
}

/// Image `i`: a record (tagged unless `tagged` is false), a manifest naming a
/// rootfs, a kernel and an initrd, and those four objects.
pub fn image(i: usize, tagged: bool) -> ImageFixture {
    let id = image_id(i);
    let art = |name: &str, etag: String, ty: &str| {
        json!({"link": {"path": format!("s3://{BUCKET}/{id}/{name}"), "etag": etag, "type": "s3"},
               "type": ty, "md5": "x"})
    };
    let (r_etag, k_etag, i_etag) = (
        rootfs_etag(i),
        format!("{:032x}", (i << 2) | 1),
        format!("{:032x}", (i << 2) | 2),
    );
    let manifest = json!({"version": "1.0", "created": "2024-07-18T22:05:16", "artifacts": [
        art("rootfs", r_etag.clone(), ROOTFS_ARTIFACT_TYPE),
        art("kernel", k_etag.clone(), "application/vnd.cray.image.kernel"),
        art("initrd", i_etag.clone(), "application/vnd.cray.image.initrd"),
    ]})
    .to_string()
    .into_bytes();
    let m_etag = format!("{:032x}", (i << 2) | 3);
    let m_len = manifest.len() as u64;
    let objects = vec![
        (
            format!("{id}/manifest.json"),
            (m_etag.clone(), manifest, m_len),
        ),
        (
            format!("{id}/rootfs"),
            (r_etag, Vec::new(), 1_000_000_000 + i as u64 * 4096),
        ),
        (
            format!("{id}/kernel"),
            (k_etag, Vec::new(), 12_000_000 + i as u64),
        ),
        (
            format!("{id}/initrd"),
            (i_etag, Vec::new(), 90_000_000 + i as u64),
        ),
    ];
    let metadata = if tagged {
        json!({"sbps-project": "true"})
    } else {
        json!({})
    };
    let record = json!({"id": id, "name": format!("image-{i}"), "arch": "x86_64",
        "created": "2024-07-18T22:05:16.565885",
        "link": {"path": format!("s3://{BUCKET}/{id}/manifest.json"), "etag": m_etag, "type": "s3"},
        "metadata": metadata});
    ImageFixture { record, objects }
}

/// PE object `j`.
pub fn pe(j: usize) -> (String, Object) {
    (
        format!("PE/CPE-base-{j:02}.x86_64-24.11.squashfs"),
        (
            format!("{:032x}", 0xfe00 + j),
            Vec::new(),
            2_000_000_000 + j as u64,
        ),
    )
}

/// N images (90 % tagged: every tenth is not) and `pe` PE objects.
pub struct Fixture {
    pub records: Vec<Value>,
    pub objects: BTreeMap<String, Object>,
}

impl Fixture {
    pub fn new(n: usize, pes: usize) -> Fixture {
        let mut f = Fixture {
            records: Vec::with_capacity(n),
            objects: BTreeMap::new(),
        };
        for i in 0..n {
            f.add(image(i, i % 10 != 9));
        }
        f.objects.extend((0..pes).map(pe));
        f
    }

    pub fn add(&mut self, im: ImageFixture) {
        self.records.push(im.record);
        self.objects.extend(im.objects);
    }

    /// Images that must be projected (tagged) plus PE objects.
    pub fn tagged(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r["metadata"]["sbps-project"] == "true")
            .count()
    }
}

/// The mount tree: a sparse file of the listed size for every object.
pub fn write_mount<'a>(root: &Path, objects: impl IntoIterator<Item = (&'a String, &'a Object)>) {
    for (key, (_, body, size)) in objects {
        let p = root.join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&p).unwrap();
        if body.is_empty() {
            f.set_len(*size).unwrap();
        } else {
            std::fs::write(&p, body).unwrap();
        }
    }
}
