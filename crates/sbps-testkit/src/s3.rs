//! The S3 double: path-style ListObjectsV2 and GetObject as S3 (and moto) answer them.
//!
//! One protocol implementation over a [`Store`]: [`Bucket`] keeps the objects in
//! memory (tests, benchmarks), the testbed serves a directory the VM suites edit.
//!
//! * `GET /<bucket>?list-type=2[&prefix=][&continuation-token=][&max-keys=][&start-after=]`:
//!   pages of at most 1000 keys in bytewise order, `encoding-type=url` honoured (the
//!   agent's client always asks for it, so raw-byte keys survive), quoted ETags;
//! * `GET /<bucket>/<key>`: the body with its `ETag`;
//! * errors as S3 writes them (`<Error><Code>..`): 404 `NoSuchBucket` / `NoSuchKey`,
//!   400 `InvalidArgument` for a bad continuation token, 501 `NotImplemented` for
//!   anything but ListObjectsV2; with [`S3::signed_by`], SigV4 presigned URLs are
//!   checked and S3's 403s answered (see [`sigv4`]); otherwise signatures are not
//!   checked.
//!
//! Faults: the [`Script`] (errors or delays for the next requests or every one, and
//! the log of the requests received), [`S3::list_padding`] (a huge listing page), and
//! whatever status a [`Store::fault`] injects (the testbed's fault files).

mod script;
pub mod sigv4;

pub use script::{Fault, On, Script, Seen};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// The bucket every test and benchmark uses unless it names another.
pub const BUCKET: &str = "boot-images";

/// `LastModified` of in-memory objects: fixed, so listings are reproducible.
const MEMORY_MODIFIED: &str = "2024-01-01T00:00:00.000Z";

/// One object. `key` is raw bytes: S3 keys may be any bytes, and the hostile corpus
/// lists invalid UTF-8. `body` may be empty while `size` is not (a listing-only object).
#[derive(Debug, Clone)]
pub struct Object {
    pub key: Vec<u8>,
    pub etag: String,
    pub size: u64,
    pub body: Vec<u8>,
}

impl Object {
    /// A listed object without a body (GetObject answers an empty one).
    pub fn new(key: impl Into<Vec<u8>>, etag: &str, size: u64) -> Object {
        Object {
            key: key.into(),
            etag: etag.into(),
            size,
            body: Vec::new(),
        }
    }

    /// An object whose size is its body's.
    pub fn with_body(key: impl Into<Vec<u8>>, etag: &str, body: Vec<u8>) -> Object {
        Object {
            size: body.len() as u64,
            body,
            ..Object::new(key, etag, 0)
        }
    }
}

/// One entry of a listing page.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: Vec<u8>,
    pub etag: String,
    pub size: u64,
    /// ISO 8601 with milliseconds, as S3 writes `LastModified`.
    pub modified: String,
}

/// An S3 error response: status, `<Code>` and `<Message>`.
#[derive(Debug, Clone)]
pub struct S3Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl S3Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error {
            status,
            code,
            message: message.into(),
        }
    }

    fn no_such_key() -> S3Error {
        S3Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        )
    }
}

/// Which request a [`Store::fault`] is asked about.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    List,
    Get(&'a [u8]),
}

/// Where the double's objects come from.
pub trait Store: Send + Sync + 'static {
    /// Up to `max` objects after `after` (exclusive) whose keys start with `prefix`,
    /// in bytewise key order, and whether more follow.
    fn page(&self, prefix: &[u8], after: &[u8], max: usize)
        -> Result<(Vec<Listed>, bool), S3Error>;
    /// The body and ETag of `key`, `None` when there is no such object.
    fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, String)>, S3Error>;
    /// An injected failure for this call, if any.
    fn fault(&self, _call: Call<'_>) -> Option<S3Error> {
        None
    }
}

/// A bucket in memory, changeable while served; counts the calls it answers.
#[derive(Debug, Default)]
pub struct Bucket {
    objects: RwLock<BTreeMap<Vec<u8>, Object>>,
    lists: AtomicU64,
    gets: AtomicU64,
}

impl Bucket {
    pub fn new(objects: impl IntoIterator<Item = Object>) -> Bucket {
        let b = Bucket::default();
        b.extend(objects);
        b
    }

    /// Adds (or replaces) objects.
    pub fn extend(&self, objects: impl IntoIterator<Item = Object>) {
        let mut m = self.objects.write().unwrap_or_else(|e| e.into_inner());
        m.extend(objects.into_iter().map(|o| (o.key.clone(), o)));
    }

    /// Removes the object `key`, if there.
    pub fn remove(&self, key: &[u8]) {
        let mut m = self.objects.write().unwrap_or_else(|e| e.into_inner());
        m.remove(key);
    }

    /// Objects in the bucket.
    pub fn len(&self) -> usize {
        self.objects.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Listing pages answered so far.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// GetObject calls answered so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }
}

impl Store for Bucket {
    fn page(
        &self,
        prefix: &[u8],
        after: &[u8],
        max: usize,
    ) -> Result<(Vec<Listed>, bool), S3Error> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.lists.fetch_add(1, Ordering::Relaxed);
        let m = self.objects.read().unwrap_or_else(|e| e.into_inner());
        let mut it = m
            .range::<[u8], _>((Excluded(after), Unbounded))
            .map(|(_, o)| o)
            .filter(|o| o.key.starts_with(prefix));
        let page = it
            .by_ref()
            .take(max)
            .map(|o| Listed {
                key: o.key.clone(),
                etag: o.etag.clone(),
                size: o.size,
                modified: MEMORY_MODIFIED.into(),
            })
            .collect();
        Ok((page, it.next().is_some()))
    }

    fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, String)>, S3Error> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let m = self.objects.read().unwrap_or_else(|e| e.into_inner());
        Ok(m.get(key).map(|o| (o.body.clone(), o.etag.clone())))
    }
}

/// The double: a bucket name, a store and the response faults.
#[derive(Clone)]
pub struct S3 {
    pub bucket: String,
    pub store: Arc<dyn Store>,
    /// Faults to come and the requests seen: keep a clone to script it while served.
    pub script: Arc<Script>,
    /// The keys SigV4 signatures are checked with; `None`: not checked.
    pub keys: Option<sigv4::Keys>,
    /// Every listing page carries this many bytes of padding (a huge page).
    pub list_padding: usize,
}

impl S3 {
    /// The double over `store`, as bucket [`BUCKET`].
    pub fn over(store: Arc<dyn Store>) -> S3 {
        S3 {
            bucket: BUCKET.into(),
            store,
            script: Arc::default(),
            keys: None,
            list_padding: 0,
        }
    }

    /// Checks every request's SigV4 presigned signature against these keys.
    pub fn signed_by(mut self, access: &str, secret: &str) -> S3 {
        self.keys = Some(sigv4::Keys {
            access: access.into(),
            secret: secret.into(),
        });
        self
    }

    /// The double over an in-memory [`Bucket`] of `objects`.
    pub fn memory(objects: impl IntoIterator<Item = Object>) -> S3 {
        S3::over(Arc::new(Bucket::new(objects)))
    }

    /// The routes: every path, since a bucket name and a key are parsed as S3 does.
    pub fn router(self) -> Router {
        let s3 = Arc::new(self);
        Router::new().fallback(move |req: Request| {
            let s3 = s3.clone();
            async move { s3.answer(req).await }
        })
    }

    async fn answer(&self, req: Request) -> Response {
        let path = req.uri().path();
        self.script.record(Seen {
            method: req.method().to_string(),
            path: path.to_string(),
            query: req.uri().query().map(str::to_string),
        });
        if let Some(keys) = &self.keys {
            let (m, q) = (req.method().as_str(), req.uri().query());
            if let Err(e) = sigv4::check(keys, m, path, q, req.headers()) {
                return error(&e, path);
            }
        }
        let (bucket, key) = match path.trim_start_matches('/').split_once('/') {
            Some((b, k)) => (b, k),
            None => (path.trim_start_matches('/'), ""),
        };
        let bucket = String::from_utf8_lossy(&pct_decode(bucket)).into_owned();
        if bucket != self.bucket {
            return error(
                &S3Error::new(
                    StatusCode::NOT_FOUND,
                    "NoSuchBucket",
                    "The specified bucket does not exist",
                ),
                &bucket,
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let e = S3Error::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            );
            return error(&e, path);
        }
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        match self.script.take(key.is_empty()) {
            Some(Fault::Error(e)) => return error(&e, path),
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        if key.is_empty() {
            self.list(&bucket, &query)
        } else {
            self.get(&pct_decode(key)).await
        }
    }

    fn list(&self, bucket: &str, q: &BTreeMap<String, String>) -> Response {
        if let Some(e) = self.store.fault(Call::List) {
            return error(&e, bucket);
        }
        if q.get("list-type").map(String::as_str) != Some("2") {
            let e = S3Error::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "the double only answers ListObjectsV2 (list-type=2)",
            );
            return error(&e, bucket);
        }
        let prefix = q.get("prefix").cloned().unwrap_or_default();
        let max_keys = q
            .get("max-keys")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(1000)
            .clamp(1, 1000);
        // The continuation token is the hex of the last key of the previous page.
        let after = match q.get("continuation-token") {
            Some(t) => match hex::decode(t) {
                Ok(k) => k,
                Err(_) => {
                    let e = S3Error::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidArgument",
                        "The continuation token provided is incorrect",
                    );
                    return error(&e, bucket);
                }
            },
            None => q
                .get("start-after")
                .cloned()
                .unwrap_or_default()
                .into_bytes(),
        };
        let (entries, truncated) = match self.store.page(prefix.as_bytes(), &after, max_keys) {
            Ok(p) => p,
            Err(e) => return error(&e, bucket),
        };
        let url = q.get("encoding-type").map(String::as_str) == Some("url");
        let key_text = |k: &[u8]| {
            if url {
                pct_encode(k)
            } else {
                xml_escape(&String::from_utf8_lossy(k))
            }
        };
        let mut x = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        x += &format!(
            "<Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
            xml_escape(bucket),
            key_text(prefix.as_bytes()),
            entries.len()
        );
        if url {
            x += "<EncodingType>url</EncodingType>";
        }
        x += &format!("<IsTruncated>{truncated}</IsTruncated>");
        if let Some(t) = q.get("continuation-token") {
            x += &format!("<ContinuationToken>{}</ContinuationToken>", xml_escape(t));
        }
        if truncated {
            if let Some(last) = entries.last() {
                x += &format!(
                    "<NextContinuationToken>{}</NextContinuationToken>",
                    hex::encode(&last.key)
                );
            }
        }
        for e in &entries {
            x += &format!(
                "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                key_text(&e.key),
                e.modified,
                xml_escape(&e.etag),
                e.size
            );
        }
        if self.list_padding > 0 {
            x += "<!--";
            x += &"x".repeat(self.list_padding);
            x += "-->";
        }
        x += "</ListBucketResult>";
        ([(header::CONTENT_TYPE, "application/xml")], x).into_response()
    }

    async fn get(&self, key: &[u8]) -> Response {
        let resource = String::from_utf8_lossy(key).into_owned();
        if let Some(e) = self.store.fault(Call::Get(key)) {
            return error(&e, &resource);
        }
        match self.store.get(key) {
            Ok(Some((body, etag))) => (
                [
                    (header::ETAG, format!("\"{etag}\"")),
                    (header::CONTENT_TYPE, "binary/octet-stream".into()),
                ],
                body,
            )
                .into_response(),
            Ok(None) => error(&S3Error::no_such_key(), &resource),
            Err(e) => error(&e, &resource),
        }
    }
}

/// An S3 error document.
pub fn error(e: &S3Error, resource: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>sbps-testkit</RequestId></Error>",
        e.code,
        xml_escape(&e.message),
        xml_escape(resource)
    );
    (e.status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A key as `encoding-type=url` writes it: everything but `A-Za-z0-9/-._` escaped.
fn pct_encode(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for b in key {
        if b.is_ascii_alphanumeric() || b"/-._".contains(b) {
            s.push(*b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The bytes of a percent-encoded path segment (a malformed escape stays as it is).
pub(crate) fn pct_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        let k = b"PE/\xff\xfe a+b%.squashfs".to_vec();
        assert_eq!(pct_decode(&pct_encode(&k)), k);
        assert_eq!(pct_decode("a%2"), b"a%2");
    }
}
