//! The IMS source: every image record, parsed leniently.
//!
//! IMS has no server-side filter, so this is one GET of the whole collection. Real
//! records deviate from the schema (null `link`, missing `etag`, the `{key, value}`
//! metadata of the CSM < 1.7 create bug), so the body is read as `serde_json::Value`
//! and each record is judged on its own: a record that cannot be understood is
//! reported as *unreadable* (its image is unknown this scan, never absent), the others
//! are kept. Only a failure of the whole answer (HTTP error, not a JSON array) makes
//! the IMS source unknown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;
use url::Url;

use super::retry::{retry, RetryPolicy};
use super::{ImageRecord, Link, Tagging};
use crate::http::{self, BodyError, ClientError, TlsOptions};

/// Default cap of the IMS answer. Real systems have a few thousand records (~1 KiB each).
pub(crate) const DEFAULT_MAX_BODY: usize = 256 * 1024 * 1024;

/// Settings of the IMS source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImsSettings {
    /// The images collection, e.g. `https://api-gw-service-nmn.local/apis/ims/v3/images`
    /// (see [`join_url`]).
    pub(crate) url: Url,
    /// `IMS_TIMEOUT`: bound of the whole request, body included.
    pub timeout: Duration,
    pub tls: TlsOptions,
    pub max_body: usize,
    /// The original made one attempt; so does the default.
    pub(crate) retry: RetryPolicy,
}

impl ImsSettings {
    pub fn new(url: Url) -> ImsSettings {
        ImsSettings {
            url,
            timeout: Duration::from_secs(10),
            tls: TlsOptions::default(),
            max_body: DEFAULT_MAX_BODY,
            retry: RetryPolicy::once(),
        }
    }
}

/// `API_GATEWAY` joined with `IMS_URI` the way Python's `urljoin` does it (RFC 3986
/// reference resolution): `https://gw` + `apis/ims/v3/images` →
/// `https://gw/apis/ims/v3/images`.
pub fn join_url(gateway: &str, uri: &str) -> Result<Url, url::ParseError> {
    Url::parse(gateway)?.join(uri)
}

/// Why the IMS source could not answer.
#[derive(Debug, Error)]
pub enum ImsError {
    #[error("no token: {0}")]
    NoToken(String),
    #[error("IMS GET {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("IMS GET {url}: HTTP {status}: {excerpt}")]
    Status {
        url: String,
        status: u16,
        excerpt: String,
    },
    #[error("IMS GET {url}: {source}")]
    Body { url: String, source: BodyError },
    #[error("IMS answer is not JSON: {0}")]
    NotJson(String),
    #[error("IMS answer is a JSON {0}, not an array of image records")]
    NotArray(&'static str),
    #[error(transparent)]
    Client(#[from] ClientError),
}

pub(crate) use sbps_core::inventory::SkippedRecord;

/// The readable records and the unreadable ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImsListing {
    pub records: Vec<ImageRecord>,
    pub skipped: Vec<SkippedRecord>,
}

/// The IMS source. Counts the requests it makes.
pub struct ImsSource {
    cfg: ImsSettings,
    client: reqwest::Client,
    requests: AtomicU64,
}

impl ImsSource {
    pub fn new(cfg: ImsSettings) -> Result<ImsSource, ImsError> {
        let client = http::client("IMS", &cfg.tls, cfg.timeout)?;
        Ok(ImsSource {
            cfg,
            client,
            requests: AtomicU64::new(0),
        })
    }

    /// HTTP requests sent so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Fetches and parses every image record, authenticating with `token`.
    pub async fn list(&self, token: &str) -> Result<ImsListing, ImsError> {
        retry(self.cfg.retry, "IMS", retryable, |_| self.list_once(token)).await
    }

    async fn list_once(&self, token: &str) -> Result<ImsListing, ImsError> {
        let url = http::redact_url(&self.cfg.url);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .client
            .get(self.cfg.url.clone())
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ImsError::Transport {
                url: url.clone(),
                detail: if e.is_timeout() {
                    format!("timed out after {:?}", self.cfg.timeout)
                } else {
                    http::request_error(e)
                },
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = http::read_capped(resp, 4096).await.unwrap_or_default();
            return Err(ImsError::Status {
                url,
                status: status.as_u16(),
                excerpt: excerpt(&body, token),
            });
        }
        let body = http::read_capped(resp, self.cfg.max_body)
            .await
            .map_err(|source| ImsError::Body {
                url: url.clone(),
                source,
            })?;
        parse_listing(&body)
    }
}

/// The start of an error body for the message, without the token: a gateway may
/// echo the `Authorization` header back, and the message goes to the log.
fn excerpt(body: &[u8], token: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let text = if token.is_empty() {
        text.into_owned()
    } else {
        text.replace(token, "<redacted>")
    };
    text.chars().take(300).collect()
}

fn retryable(e: &ImsError) -> bool {
    match e {
        ImsError::Transport { .. } => true,
        ImsError::Status { status, .. } => {
            reqwest::StatusCode::from_u16(*status).is_ok_and(http::retryable_status)
        }
        ImsError::Body { source, .. } => source.is_timeout(),
        _ => false,
    }
}

/// Parses the IMS answer: an array of records, each judged on its own.
///
/// Streamed: one record's JSON tree at a time, never the whole answer's (a tree of
/// `serde_json::Value`s is ~15× the size of its text: 100,000 records took 360 MiB).
pub fn parse_listing(body: &[u8]) -> Result<ImsListing, ImsError> {
    use serde::de::Deserializer as _;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de
        .deserialize_any(ListingVisitor)
        .and_then(|p| de.end().map(|()| p))
        .map_err(|e| ImsError::NotJson(e.to_string()))?;
    match parsed {
        Parsed::Listing(l) => Ok(l),
        Parsed::Not(kind) => Err(ImsError::NotArray(kind)),
    }
}

enum Parsed {
    Listing(ImsListing),
    /// The answer was valid JSON of this type, not an array.
    Not(&'static str),
}

struct ListingVisitor;

impl<'de> serde::de::Visitor<'de> for ListingVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of image records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        let mut out = ImsListing::default();
        let mut index = 0;
        while let Some(item) = seq.next_element::<Value>()? {
            match parse_record(&item) {
                Ok(r) => out.records.push(r),
                Err(reason) => {
                    let id = item.get("id").and_then(Value::as_str).map(str::to_string);
                    tracing::warn!(index, id = id.as_deref().unwrap_or("?"), %reason, "IMS record unreadable: its image is unknown this scan");
                    out.skipped.push(SkippedRecord { index, id, reason });
                }
            }
            index += 1;
        }
        Ok(Parsed::Listing(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        use serde::de::IgnoredAny;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Parsed::Not("object"))
    }
    fn visit_unit<E>(self) -> Result<Parsed, E> {
        Ok(Parsed::Not("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Parsed, E> {
        Ok(Parsed::Not("boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Parsed, E> {
        Ok(Parsed::Not("number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Parsed, E> {
        Ok(Parsed::Not("number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Parsed, E> {
        Ok(Parsed::Not("number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Parsed, E> {
        Ok(Parsed::Not("string"))
    }
}

/// One record. `Err` is the reason it cannot be used at all.
pub fn parse_record(v: &Value) -> Result<ImageRecord, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("record is a JSON {}, not an object", type_name(v)))?;
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err("empty id".into()),
        None | Some(Value::Null) => return Err("no id".into()),
        Some(other) => return Err(format!("id is a JSON {}", type_name(other))),
    };
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => return Err(format!("name is a JSON {}", type_name(other))),
    };
    let link = parse_link(obj.get("link")).map_err(|e| format!("link: {e}"))?;
    let tagging = parse_tagging(&id, obj.get("metadata"));
    Ok(ImageRecord {
        id,
        name,
        link,
        tagging,
    })
}

/// A `link` (ArtifactLinkRecord) of an IMS record or a manifest artifact.
///
/// Absent or null → `None`; an object without a string `path` → `None` too (the
/// callers treat both as "no link"). `etag`: a string is kept; missing/null → `None`;
/// a JSON number is kept as its decimal text (a careless writer may have stored an
/// all-digit ETag as a number; should the text not match, `desired` reports an ETag
/// mismatch, never a wrong projection); any other type → `None`. A `link` that is
/// neither object nor null, or a non-string `path`, is a type error.
pub(crate) fn parse_link(v: Option<&Value>) -> Result<Option<Link>, String> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(other) => return Err(format!("a JSON {}, not an object", type_name(other))),
    };
    let path = match obj.get("path") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Ok(None),
        Some(other) => return Err(format!("path is a JSON {}", type_name(other))),
    };
    let etag = match obj.get("etag") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => {
            tracing::warn!(%path, etag = %n, "link etag is a JSON number; using its text");
            Some(n.to_string())
        }
        None | Some(Value::Null) => None,
        Some(other) => {
            tracing::warn!(%path, "link etag is a JSON {}; ignored", type_name(other));
            None
        }
    };
    let kind = obj.get("type").and_then(Value::as_str).map(str::to_string);
    Ok(Some(Link { path, etag, kind }))
}

/// The record's `metadata`, classified. Never fails: an odd shape is `Invalid`.
///
/// Non-string values of the flat map: numbers and booleans become their JSON text
/// (`true` → `"true"`, which is what the writer evidently meant: a JSON boolean `true`
/// under `sbps-project` is projected, where the original compared it with the string
/// and did not; projecting adds a LUN and never removes one); null, arrays and objects
/// are dropped, except under `sbps-project`, where they make the metadata `Invalid`
/// (the image is then unknown, never untagged). All with a warning: IMS's own schema
/// forbids them.
pub(crate) fn parse_tagging(id: &str, v: Option<&Value>) -> Tagging {
    let obj = match v {
        None => return Tagging::NoMetadata,
        Some(Value::Object(o)) => o,
        // `null` is not "an IMS without tagging" (that omits the field): not understood.
        Some(other) => return Tagging::Invalid(format!("metadata is a JSON {}", type_name(other))),
    };
    if obj.len() == 2 {
        if let (Some(Value::String(key)), Some(Value::String(value))) =
            (obj.get("key"), obj.get("value"))
        {
            tracing::warn!(
                image = id,
                key,
                value,
                "IMS metadata has the {{key, value}} shape of the CSM < 1.7 create bug; treated as untagged"
            );
            return Tagging::BuggyKeyValue {
                key: key.clone(),
                value: value.clone(),
            };
        }
    }
    // The one value that decides projection must be read, not guessed: a null, array or
    // object there is not "untagged" (which would remove a live LUN after the grace).
    if let Some(v @ (Value::Null | Value::Array(_) | Value::Object(_))) = obj.get(super::TAG_KEY) {
        return Tagging::Invalid(format!(
            "metadata '{}' is a JSON {}",
            super::TAG_KEY,
            type_name(v)
        ));
    }
    let mut tag = None;
    for (k, val) in obj {
        // Every value is checked (and its oddities logged); only the tag's is kept.
        let text = match val {
            Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
            Value::Number(_) | Value::Bool(_) => {
                tracing::warn!(image = id, key = %k, value = %val, "IMS metadata value is not a string; using its text");
                std::borrow::Cow::Owned(val.to_string())
            }
            _ => {
                tracing::warn!(image = id, key = %k, "IMS metadata value is a JSON {}; dropped", type_name(val));
                continue;
            }
        };
        if k == super::TAG_KEY {
            tag = Some(text.into_owned());
        }
    }
    Tagging::Map { tag }
}

/// JSON type name for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urljoin_like_python() {
        let u = join_url("https://api-gw-service-nmn.local", "apis/ims/v3/images").unwrap();
        assert_eq!(
            u.as_str(),
            "https://api-gw-service-nmn.local/apis/ims/v3/images"
        );
        let u = join_url("https://gw/", "/apis/ims/v3/images").unwrap();
        assert_eq!(u.as_str(), "https://gw/apis/ims/v3/images");
    }

    #[test]
    fn quirks() {
        let body = json!([
            {"id": "a", "name": "ok", "link": {"path": "s3://b/a/manifest.json", "etag": "e", "type": "s3"},
             "metadata": {"sbps-project": "true"}},
            {"id": "b", "name": "nulllink", "link": null, "metadata": {}},
            {"id": "c", "name": "noetag", "link": {"path": "s3://b/c/manifest.json", "type": "s3"}},
            {"id": "d", "name": "buggy", "metadata": {"key": "sbps-project", "value": "true"}},
            {"id": "e", "name": "nonstr", "metadata": {"sbps-project": true, "n": 3, "x": null, "o": {}}},
            {"id": 7, "name": "badid"},
            {"name": "noid"},
            "garbage",
            {"id": "f", "name": "badlink", "link": "s3://b/f"},
            {"id": "g", "name": "badmeta", "metadata": []},
            {"id": "h", "name": "numetag", "link": {"path": "s3://b/h/manifest.json", "etag": 123}},
        ]);
        let l = parse_listing(body.to_string().as_bytes()).unwrap();
        let ids: Vec<_> = l.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e", "g", "h"]);
        assert_eq!(l.records[0].tagging.tag(), Some("true"));
        assert_eq!(l.records[1].link, None);
        assert_eq!(l.records[1].tagging, Tagging::Map { tag: None });
        assert_eq!(l.records[2].link.as_ref().unwrap().etag, None);
        assert_eq!(l.records[2].tagging, Tagging::NoMetadata);
        assert!(matches!(
            l.records[3].tagging,
            Tagging::BuggyKeyValue { .. }
        ));
        // A boolean tag is its text; the other keys decide nothing and are not kept.
        assert_eq!(
            l.records[4].tagging,
            Tagging::Map {
                tag: Some("true".into())
            }
        );
        assert!(matches!(l.records[5].tagging, Tagging::Invalid(_)));
        assert_eq!(
            l.records[6].link.as_ref().unwrap().etag.as_deref(),
            Some("123")
        );
        let skipped: Vec<_> = l.skipped.iter().map(|s| (s.index, s.id.clone())).collect();
        assert_eq!(
            skipped,
            [(5, None), (6, None), (7, None), (8, Some("f".to_string()))]
        );
    }

    /// Regression: a gateway echoing the Authorization header put the JWT in the log.
    #[test]
    fn error_excerpt_never_carries_the_token() {
        let body = b"{\"detail\": \"token rejected: Bearer eyJ.secret.sig\"}";
        let e = excerpt(body, "eyJ.secret.sig");
        assert!(
            !e.contains("eyJ.secret.sig") && e.contains("Bearer <redacted>"),
            "{e}"
        );
        assert_eq!(excerpt(b"plain", ""), "plain");
    }

    #[test]
    fn whole_answer_errors() {
        assert!(matches!(
            parse_listing(b"{}"),
            Err(ImsError::NotArray("object"))
        ));
        assert!(matches!(
            parse_listing(b"<html>"),
            Err(ImsError::NotJson(_))
        ));
        assert_eq!(parse_listing(b"[]").unwrap(), ImsListing::default());
    }
}
