//! Image manifests: lenient parsing, bounded concurrent fetching, and a cache.
//!
//! A system with thousands of images would otherwise GET thousands of manifests
//! every scan. A manifest is immutable in practice (IMS registers it with its ETag),
//! so a parsed manifest (what `desired` reads of it: its rootfs artifacts) is kept
//! in memory under (manifest path, the IMS record's
//! link etag, the manifest object's ETag in this scan's listing): an unchanged image
//! costs no request on later scans, and a manifest rewritten in place is refetched
//! because its listing ETag changes. Parsed results are cached, an unparsable
//! manifest included (the same bytes fail the same way); a failed download is
//! retried next scan. Each error is an unknown for that one image, never for the
//! others.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use serde_json::Value;

use super::ims::{parse_link, type_name};
use super::s3::{S3Error, S3Source};
use super::{parse_s3_url, Artifact, ByKey, Manifest, S3Object, ROOTFS_ARTIFACT_TYPE};

/// IMS refuses manifests of 1 MiB or more (`MAX_IMAGE_MANIFEST_SIZE_BYTES`).
pub(crate) const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// Default number of manifest downloads in flight.
pub(crate) const DEFAULT_CONCURRENCY: usize = 16;

/// Parses a manifest.
///
/// Required: a JSON object whose `artifacts` is an array of objects. Per artifact,
/// `type` must be a string (an artifact without one is dropped: it cannot be the
/// rootfs) and `link` an object or null (see `parse_link` for `etag`). Structural
/// type errors fail the whole manifest, which makes the image *unknown* rather than
/// skipped: a corrupt manifest must not remove a projection. `version` other than
/// IMS's `"1.0"` is accepted with a warning; IMS itself validates it at registration.
pub fn parse_manifest(body: &[u8]) -> Result<Manifest, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("a JSON {}, not an object", type_name(&v)))?;
    match obj.get("version") {
        Some(Value::String(s)) if s == "1.0" => {}
        other => tracing::warn!(version = ?other, "manifest version is not \"1.0\"; parsed anyway"),
    }
    let items = match obj.get("artifacts") {
        Some(Value::Array(a)) => a,
        None => return Err("no artifacts".into()),
        Some(other) => {
            return Err(format!(
                "artifacts is a JSON {}, not an array",
                type_name(other)
            ))
        }
    };
    let mut artifacts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let a = item
            .as_object()
            .ok_or_else(|| format!("artifact {i} is a JSON {}", type_name(item)))?;
        let kind = match a.get("type") {
            Some(Value::String(s)) => s.clone(),
            other => {
                tracing::warn!(index = i, kind = ?other, "manifest artifact without a string type; ignored");
                continue;
            }
        };
        let link = parse_link(a.get("link")).map_err(|e| format!("artifact {i} link: {e}"))?;
        artifacts.push(Artifact { kind, link });
    }
    Ok(Manifest { artifacts })
}

/// One manifest to fetch: its `s3://` path and the IMS record's link etag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted<'a> {
    pub(crate) path: &'a str,
    pub(crate) ims_etag: Option<&'a str>,
}

/// A parsed manifest (or why it cannot be parsed) and the etags it was fetched under.
struct Cached {
    ims_etag: Option<String>,
    listing_etag: String,
    manifest: Result<Arc<Manifest>, String>,
}

impl Cached {
    fn is_for(&self, ims_etag: Option<&str>, listing_etag: &str) -> bool {
        self.ims_etag.as_deref() == ims_etag && self.listing_etag == listing_etag
    }
}

/// What one round of fetching did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ManifestStats {
    pub(crate) wanted: usize,
    pub cache_hits: usize,
    /// Downloads attempted (not counting S3 retries).
    pub(crate) fetched: usize,
    /// Manifests absent from the listing: reported without a request.
    pub not_listed: usize,
    pub(crate) errors: usize,
}

/// Fetches manifests through a cache that lives as long as the agent.
pub(crate) struct ManifestFetcher {
    concurrency: usize,
    /// By manifest path. The inventory shares the parsed manifests, it does not copy them.
    cache: Mutex<HashMap<String, Cached>>,
}

/// A download error (retried next scan) or a parse error (cached with its key).
enum FetchError {
    Download(String),
    Parse(String),
}

impl ManifestFetcher {
    pub(crate) fn new(concurrency: usize) -> ManifestFetcher {
        ManifestFetcher {
            concurrency: concurrency.max(1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches every wanted manifest (deduplicated by path), using `listing` (this
    /// scan's bucket listing) to validate cache entries and to answer for manifests
    /// that are not in the bucket. Cache entries not wanted this scan are dropped.
    pub(crate) async fn fetch_all(
        &self,
        s3: &S3Source,
        wanted: &[Wanted<'_>],
        listing: &[S3Object],
    ) -> (
        BTreeMap<String, Result<Arc<Manifest>, String>>,
        ManifestStats,
    ) {
        let by_key = ByKey::new(listing);
        let mut stats = ManifestStats::default();
        let mut out = BTreeMap::new();
        let mut to_fetch = Vec::new();
        // The paths whose manifest is cached, or fetched, for this scan's etags.
        let mut used: HashSet<&str> = HashSet::new();
        let mut seen = HashSet::new();
        for w in wanted {
            if !seen.insert(w.path) {
                continue;
            }
            stats.wanted += 1;
            let Some((_, key)) = parse_s3_url(w.path) else {
                out.insert(
                    w.path.to_string(),
                    Err(format!("not an s3:// object URL: {}", w.path)),
                );
                stats.errors += 1;
                continue;
            };
            let Some(obj) = by_key.get(key) else {
                // `desired` turns this into "manifest missing" (a skip).
                out.insert(w.path.to_string(), Err("not in the bucket listing".into()));
                stats.not_listed += 1;
                continue;
            };
            let hit = match self.lock().get(w.path) {
                Some(c) if c.is_for(w.ims_etag, &obj.etag) => Some(c.manifest.clone()),
                _ => None,
            };
            if let Some(m) = hit {
                if m.is_err() {
                    stats.errors += 1;
                }
                out.insert(w.path.to_string(), m);
                stats.cache_hits += 1;
                used.insert(w.path);
                continue;
            }
            to_fetch.push((*w, key, obj.etag.as_str()));
        }
        stats.fetched = to_fetch.len();
        let results: Vec<_> = stream::iter(to_fetch)
            .map(|(w, key, etag)| async move {
                let r = fetch_one(s3, key).await;
                (w, etag, r)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for (w, listing_etag, r) in results {
            let r = match r {
                Ok(m) => Ok(Arc::new(m)),
                Err(FetchError::Parse(e)) => Err(e),
                Err(FetchError::Download(e)) => {
                    tracing::warn!(manifest = %w.path, error = %e, "manifest unavailable");
                    stats.errors += 1;
                    out.insert(w.path.to_string(), Err(e));
                    continue;
                }
            };
            if let Err(e) = &r {
                tracing::warn!(manifest = %w.path, error = %e, "manifest unusable");
                stats.errors += 1;
            }
            let cached = Cached {
                ims_etag: w.ims_etag.map(str::to_string),
                listing_etag: listing_etag.to_string(),
                manifest: r.clone(),
            };
            self.lock().insert(w.path.to_string(), cached);
            out.insert(w.path.to_string(), r);
            used.insert(w.path);
        }
        self.lock().retain(|path, _| used.contains(path.as_str()));
        (out, stats)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // A panic while holding the lock cannot leave a half-written entry (inserts are
        // atomic), so a poisoned cache is still valid.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What `desired` reads of a manifest: its rootfs artifacts (how many there are, and the
/// link of the one). The others (kernel, initrd, boot parameters: most of a manifest)
/// are dropped before it is cached, so the cache of thousands of images holds only
/// what decides a projection.
fn kept(mut m: Manifest) -> Manifest {
    m.artifacts.retain(|a| a.kind == ROOTFS_ARTIFACT_TYPE);
    m.artifacts.shrink_to_fit();
    m
}

async fn fetch_one(s3: &S3Source, key: &str) -> Result<Manifest, FetchError> {
    let body = s3
        .get_object(key, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| match e {
            S3Error::NotFound { .. } => FetchError::Download("not found (HTTP 404)".into()),
            other => FetchError::Download(other.to_string()),
        })?;
    parse_manifest(&body)
        .map(kept)
        .map_err(|e| FetchError::Parse(format!("unparsable manifest: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn real_shape() {
        let m = json!({"version": "1.0", "created": "2024-08-15 09:37:13.123456", "artifacts": [
            {"link": {"path": "s3://boot-images/x/rootfs", "etag": "abc-3", "type": "s3"},
             "type": ROOTFS_ARTIFACT_TYPE, "md5": "m"},
            {"link": {"path": "s3://boot-images/x/kernel", "type": "s3"},
             "type": "application/vnd.cray.image.kernel", "md5": "m"},
            {"link": null, "type": "application/vnd.cray.image.initrd"},
            {"link": {"path": "s3://boot-images/x/p", "etag": null}, "type": "application/vnd.cray.image.parameters.boot"},
            {"link": {"path": "s3://boot-images/x/q", "etag": 42}, "type": "x"},
            {"type": 5},
        ]});
        let m = parse_manifest(m.to_string().as_bytes()).unwrap();
        assert_eq!(m.artifacts.len(), 5);
        assert_eq!(
            m.artifacts[0].link.as_ref().unwrap().etag.as_deref(),
            Some("abc-3")
        );
        assert_eq!(m.artifacts[1].link.as_ref().unwrap().etag, None);
        assert_eq!(m.artifacts[2].link, None);
        assert_eq!(m.artifacts[3].link.as_ref().unwrap().etag, None);
        assert_eq!(
            m.artifacts[4].link.as_ref().unwrap().etag.as_deref(),
            Some("42")
        );
    }

    #[test]
    fn only_rootfs_artifacts_are_cached() {
        let m = json!({"artifacts": [
            {"link": {"path": "s3://b/x/rootfs", "etag": "e"}, "type": ROOTFS_ARTIFACT_TYPE},
            {"link": {"path": "s3://b/x/kernel"}, "type": "application/vnd.cray.image.kernel"},
            {"link": null, "type": ROOTFS_ARTIFACT_TYPE},
        ]});
        let m = kept(parse_manifest(m.to_string().as_bytes()).unwrap());
        // Both rootfs artifacts stay: `desired` counts them (several: unknown).
        assert_eq!(m.artifacts.len(), 2);
        assert!(m.artifacts.iter().all(|a| a.kind == ROOTFS_ARTIFACT_TYPE));
        assert_eq!(m.artifacts[1].link, None);
        assert!(kept(Manifest::default()).artifacts.is_empty());
    }

    #[test]
    fn structural_errors() {
        for bad in [
            "[]",
            "{}",
            r#"{"artifacts": {}}"#,
            r#"{"artifacts": [1]}"#,
            r#"{"artifacts": [{"type": "t", "link": "s3://x"}]}"#,
            r#"{"artifacts": [{"type": "t", "link": {"path": 1}}]}"#,
            "not json",
        ] {
            assert!(parse_manifest(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_manifest(br#"{"artifacts": []}"#).is_ok());
    }
}
