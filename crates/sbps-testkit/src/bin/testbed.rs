//! Testbed: test doubles of S3, IMS and the Kubernetes API in one process, for
//! end-to-end runs of the real agent (tests/vm/run-agent, scripts/quickstart).
//!
//! ```text
//! testbed serve DIR [--s3 PORT] [--ims PORT] [--k8s PORT] [--bucket NAME] [--node NAME] [--ports-file FILE]
//! testbed make-fixtures DIR [--bucket NAME]
//! ```
//!
//! `serve` answers on 127.0.0.1 (port 0 = chosen; the chosen ports are printed as
//! `s3=PORT ims=PORT k8s=PORT` and written to `--ports-file`), from:
//!
//! * `DIR/bucket/<key>`: the bucket's objects. S3 double: path-style ListObjectsV2
//!   (`GET /<bucket>?list-type=2[&continuation-token=..][&max-keys=..][&prefix=..]`,
//!   1000 keys a page, quoted md5 ETags, XML as S3/moto write it) and GetObject
//!   (`GET /<bucket>/<key>`). Signatures are not checked.
//! * `DIR/ims.json`: the IMS records array, re-read on every request.
//!   `GET /apis/ims/v3/images` (and `/<id>`) needs `Authorization: Bearer <token>`; the
//!   token must equal `DIR/token` when that file exists.
//! * `DIR/node-labels.json`: the labels of the Node `--node NAME` (default `e2e-node`),
//!   which carries `kubernetes.io/hostname=NAME` too; file missing → no such Node.
//!   The Kubernetes API is the tests' one double of it (`sbps_testkit::kube_api`):
//!   HTTPS with its own CA, bearer token `testbed-k8s-token`, Nodes and ConfigMaps (the
//!   ledger) with the real API's semantics; `serve` writes `DIR/kubeconfig.run` for it
//!   before the ports file.
//! * `DIR/faults/<name>`: fault injection, read on every request:
//!   `ims` = `503` (any status) or `empty` (answer `[]`); `s3-list` = a status;
//!   `manifest-<image-id>` = a status for GetObject of `<image-id>/manifest.json`;
//!   `object-<key with / as _>` = a status for that GetObject; `k8s` = `down` (the API
//!   stops listening) or anything else (every request answers 500).
//!
//! `make-fixtures` builds real squashfs images with `mksquashfs` (each holds a file
//! `NAME` naming the image), the bucket layout, IMS records and helper files; see
//! [`make_fixtures`] and tests/vm/README.md.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use sbps_testkit::kube_api;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve_main(&args[1..]),
        Some("make-fixtures") => {
            let dir = args.get(1).context("make-fixtures DIR")?;
            let bucket = opt(&args[2..], "--bucket")?.unwrap_or_else(|| "boot-images".into());
            make_fixtures(Path::new(dir), &bucket)
        }
        Some("identity") => {
            // identity KEY: backstore name, serial, WWID (a debugging aid).
            let key = args.get(1).context("identity KEY")?;
            let id = sbps_core::identity::Identity::of_key(key);
            println!("{} {} {}", id.name, id.serial, id.wwid());
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: testbed serve DIR [--s3 PORT] [--ims PORT] [--k8s PORT] [--bucket NAME] [--ports-file FILE]\n       testbed make-fixtures DIR [--bucket NAME]\n       testbed identity KEY"
            );
            std::process::exit(2);
        }
    }
}

fn opt(args: &[String], name: &str) -> Result<Option<String>> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(Some(
            args.get(i + 1)
                .with_context(|| format!("{name} needs a value"))?
                .clone(),
        )),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// serve

/// path → (size, mtime, md5)
type Md5Cache = BTreeMap<PathBuf, (u64, SystemTime, String)>;

#[derive(Clone)]
struct Ctx {
    dir: PathBuf,
    bucket: String,
    /// md5 of object files, by (path, size, mtime).
    md5s: Arc<Mutex<Md5Cache>>,
}

impl Ctx {
    fn fault(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join("faults").join(name))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn fault_status(&self, name: &str) -> Option<StatusCode> {
        self.fault(name)
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|n| StatusCode::from_u16(n).ok())
    }

    fn etag(&self, path: &Path, size: u64, mtime: SystemTime) -> std::io::Result<String> {
        if let Some((s, m, e)) = self.md5s.lock().unwrap().get(path) {
            if *s == size && *m == mtime {
                return Ok(e.clone());
            }
        }
        let e = md5_hex(&std::fs::read(path)?);
        self.md5s
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), (size, mtime, e.clone()));
        Ok(e)
    }
}

fn serve_main(args: &[String]) -> Result<()> {
    let dir = PathBuf::from(args.first().context("serve DIR")?);
    let port = |n: &str| -> Result<u16> {
        Ok(opt(args, n)?
            .map(|p| p.parse())
            .transpose()
            .with_context(|| format!("{n} PORT"))?
            .unwrap_or(0))
    };
    let (s3p, imsp, k8sp) = (port("--s3")?, port("--ims")?, port("--k8s")?);
    let bucket = opt(args, "--bucket")?.unwrap_or_else(|| "boot-images".into());
    let ports_file = opt(args, "--ports-file")?;
    let node = opt(args, "--node")?.unwrap_or_else(|| "e2e-node".into());
    let ctx = Ctx {
        dir,
        bucket,
        md5s: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let s3 = tokio::net::TcpListener::bind(("127.0.0.1", s3p)).await?;
        let ims = tokio::net::TcpListener::bind(("127.0.0.1", imsp)).await?;
        let api = kube_api::KubeApi::start_at(k8sp, kube_api::ClientAuth::CertificateOrToken).await;
        api.add_token(K8S_TOKEN, "testbed");
        kube_api::write_kubeconfig(
            &ctx.dir.join("kubeconfig.run"),
            &api.url(),
            Some(&api.pki.ca_pem()),
            kube_api::User::Token(K8S_TOKEN),
        );
        let line = format!(
            "s3={} ims={} k8s={}",
            s3.local_addr()?.port(),
            ims.local_addr()?.port(),
            api.addr.port()
        );
        println!("{line}");
        std::io::stdout().flush()?;
        if let Some(f) = ports_file {
            let tmp = format!("{f}.tmp");
            std::fs::write(&tmp, format!("{line}\n"))?;
            std::fs::rename(&tmp, &f)?;
        }
        let s3_app = Router::new()
            .route("/{bucket}", get(s3_list))
            .route("/{bucket}/", get(s3_list))
            .route("/{bucket}/{*key}", get(s3_get))
            .with_state(ctx.clone());
        let ims_app = Router::new()
            .route("/apis/ims/v3/images", get(ims_list))
            .route("/apis/ims/v3/images/{id}", get(ims_one))
            .with_state(ctx.clone());
        // The tests edit these while the agent runs; the double reads them per request.
        api.follow_files(
            &node,
            ctx.dir.join("node-labels.json"),
            ctx.dir.join("faults").join("k8s"),
        );
        tokio::try_join!(async { axum::serve(s3, s3_app).await }, async {
            axum::serve(ims, ims_app).await
        },)?;
        Ok(())
    })
}

/// The token of the testbed's kubeconfig.
const K8S_TOKEN: &str = "testbed-k8s-token";

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn s3_error(status: StatusCode, code: &str, message: &str, resource: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>testbed</RequestId></Error>",
        xml_escape(message),
        xml_escape(resource)
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

/// Every file under `root`, as (key, path), sorted by key (S3 order: bytewise).
fn walk(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    if let Ok(rel) = p.strip_prefix(root) {
                        out.push((rel.to_string_lossy().into_owned(), p));
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn iso8601(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // civil_from_days (Howard Hinnant)
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

async fn s3_list(
    State(ctx): State<Ctx>,
    UrlPath(bucket): UrlPath<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if bucket != ctx.bucket {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist",
            &bucket,
        );
    }
    if let Some(s) = ctx.fault_status("s3-list") {
        return s3_error(s, "InternalError", "injected fault", &bucket);
    }
    if q.get("list-type").map(String::as_str) != Some("2") {
        return s3_error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "the testbed only answers ListObjectsV2 (list-type=2)",
            &bucket,
        );
    }
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let max_keys: usize = q
        .get("max-keys")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    // The continuation token is the hex of the last key of the previous page.
    let after = match q.get("continuation-token") {
        Some(t) => match hex::decode(t).ok().and_then(|b| String::from_utf8(b).ok()) {
            Some(k) => Some(k),
            None => {
                return s3_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "The continuation token provided is incorrect",
                    &bucket,
                )
            }
        },
        None => q.get("start-after").cloned(),
    };
    let ctx2 = ctx.clone();
    let result = tokio::task::spawn_blocking(move || {
        let all = walk(&ctx2.dir.join("bucket"));
        let mut entries = Vec::new();
        let mut truncated = false;
        for (key, path) in all {
            if !key.starts_with(&prefix) || after.as_ref().is_some_and(|a| key.as_str() <= a.as_str()) {
                continue;
            }
            if entries.len() == max_keys {
                truncated = true;
                break;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let Ok(etag) = ctx2.etag(&path, meta.len(), mtime) else {
                continue;
            };
            entries.push((key, meta.len(), mtime, etag));
        }
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        x += &format!(
            "<Name>{}</Name><Prefix>{}</Prefix><MaxKeys>{max_keys}</MaxKeys><KeyCount>{}</KeyCount><IsTruncated>{truncated}</IsTruncated>",
            xml_escape(&ctx2.bucket),
            xml_escape(&prefix),
            entries.len()
        );
        if let Some(t) = q.get("continuation-token") {
            x += &format!("<ContinuationToken>{}</ContinuationToken>", xml_escape(t));
        }
        if truncated {
            if let Some((last, ..)) = entries.last() {
                x += &format!(
                    "<NextContinuationToken>{}</NextContinuationToken>",
                    hex::encode(last)
                );
            }
        }
        for (key, size, mtime, etag) in &entries {
            x += &format!(
                "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                xml_escape(key),
                iso8601(*mtime)
            );
        }
        x += "</ListBucketResult>";
        x
    })
    .await;
    match result {
        Ok(x) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/xml")],
            x,
        )
            .into_response(),
        Err(e) => s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &e.to_string(),
            &bucket,
        ),
    }
}

async fn s3_get(
    State(ctx): State<Ctx>,
    UrlPath((bucket, key)): UrlPath<(String, String)>,
) -> Response {
    if bucket != ctx.bucket {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist",
            &bucket,
        );
    }
    if let Some((id, "manifest.json")) = key.split_once('/') {
        if let Some(s) = ctx.fault_status(&format!("manifest-{id}")) {
            return s3_error(s, "InternalError", "injected fault", &key);
        }
    }
    if let Some(s) = ctx.fault_status(&format!("object-{}", key.replace('/', "_"))) {
        return s3_error(s, "InternalError", "injected fault", &key);
    }
    if key
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return s3_error(StatusCode::BAD_REQUEST, "InvalidArgument", "bad key", &key);
    }
    let path = ctx.dir.join("bucket").join(&key);
    let Ok(meta) = std::fs::metadata(&path) else {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            &key,
        );
    };
    if !meta.is_file() {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            &key,
        );
    }
    let Ok(bytes) = std::fs::read(&path) else {
        return s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "read failed",
            &key,
        );
    };
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let etag = ctx.etag(&path, meta.len(), mtime).unwrap_or_default();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::ETAG, format!("\"{etag}\""))
        .header(header::CONTENT_TYPE, "binary/octet-stream")
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn json_error(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        json!({"detail": detail, "status": status.as_u16(), "title": status.canonical_reason().unwrap_or(""), "type": "about:blank"}).to_string(),
    )
        .into_response()
}

fn ims_auth(ctx: &Ctx, headers: &HeaderMap) -> Option<Response> {
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(got) = got.filter(|t| !t.is_empty()) else {
        return Some(json_error(StatusCode::UNAUTHORIZED, "missing bearer token"));
    };
    if let Ok(want) = std::fs::read_to_string(ctx.dir.join("token")) {
        if want.trim() != got {
            return Some(json_error(StatusCode::UNAUTHORIZED, "invalid token"));
        }
    }
    None
}

#[allow(clippy::result_large_err)] // the error is the response to send
fn ims_records(ctx: &Ctx) -> Result<Value, Response> {
    match ctx.fault("ims").as_deref() {
        Some("empty") => return Ok(json!([])),
        Some(s) => {
            if let Some(st) = s
                .parse::<u16>()
                .ok()
                .and_then(|n| StatusCode::from_u16(n).ok())
            {
                return Err(json_error(st, "injected fault"));
            }
        }
        None => {}
    }
    let text = std::fs::read_to_string(ctx.dir.join("ims.json"))
        .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("ims.json: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("ims.json: {e}")))
}

async fn ims_list(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = ims_auth(&ctx, &headers) {
        return r;
    }
    match ims_records(&ctx) {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn ims_one(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Some(r) = ims_auth(&ctx, &headers) {
        return r;
    }
    match ims_records(&ctx) {
        Ok(Value::Array(a)) => match a
            .into_iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id.as_str()))
        {
            Some(r) => axum::Json(r).into_response(),
            None => json_error(
                StatusCode::NOT_FOUND,
                &format!("Image record {id} not found"),
            ),
        },
        Ok(_) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ims.json is not an array",
        ),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------------------
// make-fixtures

/// One IMS image of the fixture set.
struct ImageSpec {
    label: &'static str,
    id: &'static str,
    name: &'static str,
    /// How `rec/<label>.json` (the record as first listed) is tagged.
    tagged: bool,
    /// The manifest names a wrong rootfs etag.
    bad_etag: bool,
}

const IMAGES: &[ImageSpec] = &[
    ImageSpec {
        label: "A",
        id: "a0000000-0000-4000-8000-00000000000a",
        name: "rootfs-a",
        tagged: true,
        bad_etag: false,
    },
    ImageSpec {
        label: "B",
        id: "b0000000-0000-4000-8000-00000000000b",
        name: "rootfs-b",
        tagged: true,
        bad_etag: false,
    },
    ImageSpec {
        label: "C",
        id: "c0000000-0000-4000-8000-00000000000c",
        name: "rootfs-c",
        tagged: false,
        bad_etag: false,
    },
    ImageSpec {
        label: "D",
        id: "d0000000-0000-4000-8000-00000000000d",
        name: "rootfs-d",
        tagged: true,
        bad_etag: false,
    },
    ImageSpec {
        label: "E",
        id: "e0000000-0000-4000-8000-00000000000e",
        name: "rootfs-e-badetag",
        tagged: true,
        bad_etag: true,
    },
    ImageSpec {
        label: "F",
        id: "f0000000-0000-4000-8000-00000000000f",
        name: "rootfs-f-notinmount",
        tagged: true,
        bad_etag: false,
    },
    ImageSpec {
        label: "G",
        id: "90000000-0000-4000-8000-000000000009",
        name: "rootfs-g-manifesterror",
        tagged: true,
        bad_etag: false,
    },
];

const PES: &[(&str, &str)] = &[("P1", "cpe-one.squashfs"), ("P2", "cpe-two.squashfs")];

/// Size every fixture image is padded to, so a re-upload with other content keeps the size.
const IMAGE_SIZE: u64 = 128 * 1024;

const ROOTFS_TYPE: &str = "application/vnd.cray.image.rootfs.squashfs";

/// Builds the fixture tree:
///
/// * `bucket/<id>/rootfs`, `bucket/<id>/manifest.json`, `bucket/PE/<name>.squashfs`;
/// * `rec/<label>.tagged.json`, `rec/<label>.untagged.json`: each image's IMS record,
///   tagged `{"sbps-project":"true"}` or not (`{"owner":"testbed"}`); `rec/<label>.json`
///   is the one `ims.json` starts with;
/// * `ims.json`: records of A, B (tagged), C (untagged), E (etag mismatch), F (meant to
///   be removed from the agent's mount copy), G (with `faults/manifest-<G>` = 500);
///   D is kept back for tests that add an image;
/// * `alt/<pe name>`: other content of the same size for each PE (a re-upload);
/// * `keys.txt`: `LABEL KIND ID KEY` per image, KEY being the identity key (PE
///   `s3://<bucket>/PE/<name>`, rootfs `<rootfs link path>|<etag>`);
/// * `ids.env`: `ID_<LABEL>=<image id>` and `PE_<LABEL>=<pe name>`;
/// * `token`, `spire-agent` (a spire-agent CLI stand-in printing a JWT-SVID),
///   `s3.creds`,
///   `node-labels.json` (`{"iscsi":"sbps"}`), `faults/`.
pub fn make_fixtures(dir: &Path, bucket: &str) -> Result<()> {
    let b = dir.join("bucket");
    std::fs::create_dir_all(b.join("PE"))?;
    std::fs::create_dir_all(dir.join("rec"))?;
    std::fs::create_dir_all(dir.join("alt"))?;
    std::fs::create_dir_all(dir.join("faults"))?;
    let work = dir.join(".work");
    std::fs::create_dir_all(&work)?;
    let mut keys = String::new();
    let mut ids = String::new();
    let mut first = Vec::new();
    for img in IMAGES {
        let d = b.join(img.id);
        std::fs::create_dir_all(&d)?;
        let rootfs = d.join("rootfs");
        let content = format!("rootfs {} {}", img.label, img.name);
        squashfs(&work, &content, &rootfs)?;
        let md5 = md5_hex(&std::fs::read(&rootfs)?);
        let etag = if img.bad_etag {
            "0123456789abcdef0123456789abcdef".to_string()
        } else {
            md5.clone()
        };
        let rootfs_path = format!("s3://{bucket}/{}/rootfs", img.id);
        let manifest = json!({
            "version": "1.0",
            "created": "2024-06-01 12:00:00.000000",
            "artifacts": [
                {"type": ROOTFS_TYPE, "link": {"path": rootfs_path, "etag": etag, "type": "s3"}, "md5": md5},
                {"type": "application/vnd.cray.image.initrd",
                 "link": {"path": format!("s3://{bucket}/{}/initrd", img.id), "etag": "11111111111111111111111111111111", "type": "s3"},
                 "md5": "11111111111111111111111111111111"},
                {"type": "application/vnd.cray.image.kernel",
                 "link": {"path": format!("s3://{bucket}/{}/kernel", img.id), "etag": "22222222222222222222222222222222", "type": "s3"},
                 "md5": "22222222222222222222222222222222"}
            ]
        });
        let mtext = serde_json::to_string_pretty(&manifest)? + "\n";
        std::fs::write(d.join("manifest.json"), &mtext)?;
        let mmd5 = md5_hex(mtext.as_bytes());
        for (suffix, meta) in [
            ("tagged", json!({"sbps-project": "true"})),
            ("untagged", json!({"owner": "testbed"})),
        ] {
            let rec = json!({
                "id": img.id, "name": img.name, "created": "2024-06-01T12:00:00.000000+00:00",
                "link": {"path": format!("s3://{bucket}/{}/manifest.json", img.id), "etag": mmd5, "type": "s3"},
                "arch": "x86_64", "metadata": meta
            });
            std::fs::write(
                dir.join("rec").join(format!("{}.{suffix}.json", img.label)),
                serde_json::to_string(&rec)? + "\n",
            )?;
            if (suffix == "tagged") == img.tagged {
                std::fs::write(
                    dir.join("rec").join(format!("{}.json", img.label)),
                    serde_json::to_string(&rec)? + "\n",
                )?;
                if img.label != "D" {
                    first.push(rec);
                }
            }
        }
        keys += &format!("{} rootfs {} {rootfs_path}|{etag}\n", img.label, img.id);
        ids += &format!("ID_{}={}\n", img.label, img.id);
        ids += &format!("NAME_{}='{content}'\n", img.label);
    }
    for (label, name) in PES {
        squashfs(
            &work,
            &format!("pe {label} {name}"),
            &b.join("PE").join(name),
        )?;
        ids += &format!("NAME_{label}='pe {label} {name}'\n");
        squashfs(
            &work,
            &format!("pe {label} {name} v2"),
            &dir.join("alt").join(name),
        )?;
        keys += &format!("{label} pe - s3://{bucket}/PE/{name}\n");
        ids += &format!("PE_{label}={name}\n");
    }
    let g = IMAGES
        .iter()
        .find(|i| i.label == "G")
        .map(|i| i.id)
        .unwrap_or_default();
    std::fs::write(dir.join("faults").join(format!("manifest-{g}")), "500\n")?;
    std::fs::write(
        dir.join("ims.json"),
        serde_json::to_string_pretty(&first)? + "\n",
    )?;
    std::fs::write(dir.join("keys.txt"), keys)?;
    std::fs::write(dir.join("ids.env"), ids)?;
    std::fs::write(dir.join("node-labels.json"), "{\"iscsi\": \"sbps\"}\n")?;

    let jwt = jwt_far_future();
    std::fs::write(dir.join("token"), format!("{jwt}\n"))?;
    let agent = dir.join("spire-agent");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\n# spire-agent CLI stand-in: `spire-agent api fetch jwt -audience A -socketPath S -output json`.\n\
             # Exits 1 like the real CLI when $0.down exists.\n\
             if [ -e \"$0.down\" ]; then echo 'rpc error: code = Unavailable desc = connection error' >&2; exit 1; fi\n\
             printf '%s\\n' '[{{\"svids\":[{{\"spiffe_id\":\"spiffe://shasta/ncn/workload/sbps-marshal\",\"svid\":\"{jwt}\",\"hint\":\"\"}}]}},{{\"bundles\":{{\"spiffe://shasta\":\"e30=\"}}}}]'\n"
        ),
    )?;
    set_mode(&agent, 0o755)?;
    let creds = dir.join("s3.creds");
    std::fs::write(&creds, "TESTBEDACCESSKEY:testbed-secret-key\n")?;
    set_mode(&creds, 0o600)?;
    std::fs::remove_dir_all(&work)?;
    println!("fixtures in {}", dir.display());
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A squashfs image holding one file `NAME` with `content`, padded to [`IMAGE_SIZE`].
fn squashfs(work: &Path, content: &str, out: &Path) -> Result<()> {
    let src = work.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("NAME"), format!("{content}\n"))?;
    let _ = std::fs::remove_file(out);
    let st = std::process::Command::new("mksquashfs")
        .arg(&src)
        .arg(out)
        .args([
            "-noappend",
            "-quiet",
            "-no-progress",
            "-all-root",
            "-mkfs-time",
            "0",
            "-all-time",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running mksquashfs (Debian package squashfs-tools)")?;
    if !st.success() {
        bail!("mksquashfs {} failed: {st}", out.display());
    }
    let len = std::fs::metadata(out)?.len();
    if len > IMAGE_SIZE {
        bail!("{} is {len} bytes, more than {IMAGE_SIZE}", out.display());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(out)?
        .set_len(IMAGE_SIZE)?;
    Ok(())
}

/// An unsigned-looking ES256 JWT-SVID with `exp` in 2100.
fn jwt_far_future() -> String {
    let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        e(json!({"alg": "ES256", "kid": "testbed", "typ": "JWT"})),
        e(
            json!({"sub": "spiffe://shasta/ncn/workload/sbps-marshal", "aud": ["system-compute"],
                 "iat": 1_700_000_000u64, "exp": 4_102_444_800u64})
        ),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}

// ---------------------------------------------------------------------------
// MD5 (RFC 1321), for S3 ETags; small enough not to need a crate.

fn md5_hex(data: &[u8]) -> String {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = Vec::with_capacity(16);
    for v in [a0, b0, c0, d0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    hex::encode(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn md5_vectors() {
        assert_eq!(super::md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(super::md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            super::md5_hex(&[b'a'; 1000]),
            "cabe45dcc9ae5b66ba86600cca6b8ba8"
        );
    }
}
