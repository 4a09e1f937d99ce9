//! S3 and IMS doubles on 127.0.0.1 (plain or TLS), and sources wired to them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use sbps_marshal::desired::Settings;
use sbps_marshal::http::TlsOptions;
use sbps_marshal::inventory::gather::{Sources, SourcesConfig};
use sbps_marshal::inventory::ims::ImsConfig;
use sbps_marshal::inventory::retry::RetryPolicy;
use sbps_marshal::inventory::s3::S3Config;
use sbps_marshal::inventory::spire::{StaticToken, Token};
use url::Url;

pub const BUCKET: &str = "boot-images";
/// Recognisable secrets: no log line or error may ever carry them.
pub const ACCESS: &str = "AKIDHARDENING";
pub const S3_SECRET: &str = "S3SECRET-hardening-7f3a9c2e11";
pub const JWT_SECRET: &str =
    "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJoYXJkZW5pbmcifQ.SIGNATURE-hardening-b41d";

/// One listed object; `key` is raw bytes (it may be invalid UTF-8).
#[derive(Clone)]
pub struct Obj {
    pub key: Vec<u8>,
    pub etag: String,
    pub size: u64,
}

impl Obj {
    pub fn new(key: impl Into<Vec<u8>>, etag: &str, size: u64) -> Obj {
        Obj {
            key: key.into(),
            etag: etag.into(),
            size,
        }
    }
}

/// How the S3 double behaves.
#[derive(Clone, Default)]
pub struct S3Double {
    pub objects: Vec<Obj>,
    /// GET bodies by object key (simple keys only).
    pub bodies: HashMap<String, Vec<u8>>,
    /// GET of an object never answers.
    pub stall_get: bool,
    /// The listing answers with this many bytes of padding (a huge page).
    pub list_padding: usize,
}

fn pct(key: &[u8]) -> String {
    let mut s = String::new();
    for b in key {
        if b.is_ascii_alphanumeric() || b"/-._".contains(b) {
            s.push(*b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// A ListObjectsV2 page, keys URL-encoded as `encoding-type=url` asks.
pub fn listing_xml(objects: &[Obj], padding: usize) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    x.push_str(&format!(
        "<Name>{BUCKET}</Name><Prefix></Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>",
        objects.len()
    ));
    for o in objects {
        x.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            pct(&o.key),
            o.etag,
            o.size
        ));
    }
    if padding > 0 {
        x.push_str("<!--");
        x.push_str(&"x".repeat(padding));
        x.push_str("-->");
    }
    x.push_str("</ListBucketResult>");
    x
}

async fn s3_handler(d: Arc<S3Double>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let listing = req.uri().query().is_some_and(|q| q.contains("list-type=2"));
    if listing {
        return (
            [("content-type", "application/xml")],
            listing_xml(&d.objects, d.list_padding),
        )
            .into_response();
    }
    if d.stall_get {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let key = path.trim_start_matches(&format!("/{BUCKET}/")).to_string();
    match d.bodies.get(&key) {
        Some(b) => b.clone().into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code><Message>no</Message></Error>",
        )
            .into_response(),
    }
}

pub fn s3_router(d: S3Double) -> Router {
    let d = Arc::new(d);
    Router::new().fallback(move |req: Request| s3_handler(d.clone(), req))
}

/// An IMS double answering every GET with `body` (status 200).
pub fn ims_router(body: String) -> Router {
    let body = Arc::new(body);
    Router::new().fallback(move || {
        let b = body.clone();
        async move { ([("content-type", "application/json")], (*b).clone()).into_response() }
    })
}

/// An s3fs-style credential file (0600).
pub fn cred_file(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("s3.passwd");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Sources against the two doubles, with a static token, no node label.
pub fn sources(s3: Url, ims: Url, creds: PathBuf, tls: TlsOptions, timeout: Duration) -> Sources {
    let mut s3c = S3Config::new(s3, BUCKET, creds);
    s3c.tls = tls.clone();
    s3c.timeout = timeout;
    s3c.retry = RetryPolicy::once();
    let mut imsc = ImsConfig::new(ims.join("apis/ims/v3/images").unwrap());
    imsc.tls = tls;
    imsc.timeout = timeout;
    let cfg = SourcesConfig {
        node: None,
        ..SourcesConfig::new(s3c, imsc)
    };
    Sources::with_tokens(cfg, Arc::new(StaticToken(Token::new(JWT_SECRET.into())))).unwrap()
}

pub fn settings(mount: &Path) -> Settings {
    Settings {
        bucket: BUCKET.into(),
        mount_root: mount.to_path_buf(),
        ims_tagging: true,
        backend: Default::default(),
    }
}

/// The agent's settings: defaults plus `SBPS_MARSHAL_<key>` = value for each pair,
/// as the binary would read them (no settings file).
pub fn config_settings(env: &[(&str, String)]) -> sbps_marshal::config::Settings {
    use sbps_marshal::config::{Layers, Settings};
    let env = env
        .iter()
        .map(|(k, v)| (format!("SBPS_MARSHAL_{k}"), v.clone()));
    let l = Layers::load(Some(Path::new("/dev/null")), env, &[]).unwrap();
    Settings::from_layers(&l, "testhost").unwrap()
}
