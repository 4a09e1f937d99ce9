//! The inventory: everything the sources said in one scan, as plain values.
//!
//! The adapters (S3, IMS, manifests, SPIRE, node label, mount; in the agent's crate)
//! fill an [`Inventory`]; [`crate::desired`] decides from it alone. Every source result
//! is tri-state: a value (known present), an explicit absence, or an error. An error is
//! kept as an error all the way to the plan, so a failing source can never look like an
//! empty one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The media type of the rootfs artifact in an IMS manifest.
pub const ROOTFS_ARTIFACT_TYPE: &str = "application/vnd.cray.image.rootfs.squashfs";

/// The IMS metadata key whose value `"true"` asks for projection.
pub const TAG_KEY: &str = "sbps-project";

/// One object of the S3 listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Object {
    pub key: String,
    /// ETag with the surrounding quotes removed (S3 lists it quoted).
    pub etag: String,
    pub size: u64,
}

/// An IMS `link` (ArtifactLinkRecord). Only `path` is required by the schema; real
/// records and manifests miss the others.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Link {
    pub path: String,
    pub etag: Option<String>,
    pub kind: Option<String>,
}

/// What an image record says about tagging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tagging {
    /// No `metadata` field: an IMS older than tagging support (projected, as the original did).
    NoMetadata,
    /// The normal flat string map, of which only the projection tag's value is kept
    /// (`None`: the map has no such key). The rest of an image's metadata decides
    /// nothing here, and a map per record would cost a B-tree node (about half a KiB)
    /// for each of thousands of images in every scan. A number or boolean there is
    /// already its text.
    Map { tag: Option<String> },
    /// The `{"key": …, "value": …}` shape stored by a buggy `cray ims images create` (CSM < 1.7).
    BuggyKeyValue { key: String, value: String },
    /// `metadata` present but of no recognised shape.
    Invalid(String),
}

impl Tagging {
    /// The value of the projection tag, when the metadata is the normal map.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Tagging::Map { tag } => tag.as_deref(),
            _ => None,
        }
    }
}

/// One IMS image record, already parsed leniently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    pub name: String,
    pub link: Option<Link>,
    pub tagging: Tagging,
}

/// One artifact of an image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub kind: String,
    pub link: Option<Link>,
}

/// An image manifest (`manifest.json` at the IMS record's `link.path`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub artifacts: Vec<Artifact>,
}

/// What the s3fs mount says about one object key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountEntry {
    /// A regular file inside the mount (after resolving symlinks) of this size.
    File { size: u64 },
    /// Nothing at that path (yet).
    Missing,
    /// Something that is not a regular file (a directory, a device …).
    NotRegular,
    /// The path leaves the mount (`..`, an absolute component, a symlink pointing out).
    Outside(String),
    /// The path reaches a file inside the mount by another name than `<mount>/<key>`:
    /// through a symlink, or with an empty or `.` segment. One key must name one file,
    /// or two identities export the same bytes.
    Indirect(String),
    /// The check itself failed (I/O error, stale mount): unknown.
    Error(String),
}

/// A record that could not be read, and why. Its image is unknown, not absent: an
/// IMS that stored a record badly has not deleted the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecord {
    /// Position in the IMS answer.
    pub index: usize,
    /// The record's id, when it had a usable one (a non-empty string).
    pub id: Option<String>,
    pub reason: String,
}

/// Everything gathered in one scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The whole bucket listing, or why it could not be had.
    pub s3: Result<Vec<S3Object>, String>,
    /// All IMS image records that could be read, or why the answer could not be had.
    pub ims: Result<Vec<ImageRecord>, String>,
    /// Records of a readable IMS answer that could not be read themselves. Each makes
    /// its image *unknown*, never absent (see [`crate::desired`]).
    pub ims_unreadable: Vec<SkippedRecord>,
    /// Manifests by IMS `link.path`: parsed, or the fetch/parse error. Shared with the
    /// gatherer's cache, which keeps them from scan to scan.
    pub manifests: BTreeMap<String, Result<Arc<Manifest>, String>>,
    /// What the mount says, by S3 object key.
    pub mount: BTreeMap<String, MountEntry>,
}

impl Inventory {
    /// An inventory in which every source failed with `why`.
    pub fn unavailable(why: &str) -> Inventory {
        Inventory {
            s3: Err(why.to_string()),
            ims: Err(why.to_string()),
            ims_unreadable: Vec::new(),
            manifests: BTreeMap::new(),
            mount: BTreeMap::new(),
        }
    }
}

/// The bucket listing looked up by key. S3 lists keys in UTF-8 binary order, so the
/// listing itself is searched (no map of tens of thousands of keys built every scan); a listing
/// out of order, or with a key twice, gets a map, the last of equal keys winning.
pub enum ByKey<'a> {
    Sorted(&'a [S3Object]),
    Map(BTreeMap<&'a str, &'a S3Object>),
}

impl<'a> ByKey<'a> {
    pub fn new(objects: &'a [S3Object]) -> ByKey<'a> {
        if objects.windows(2).all(|w| w[0].key < w[1].key) {
            ByKey::Sorted(objects)
        } else {
            ByKey::Map(objects.iter().map(|o| (o.key.as_str(), o)).collect())
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a S3Object> {
        match self {
            ByKey::Sorted(s) => s
                .binary_search_by(|o| o.key.as_str().cmp(key))
                .ok()
                .map(|i| &s[i]),
            ByKey::Map(m) => m.get(key).copied(),
        }
    }
}

/// Splits `s3://<bucket>/<key>` into bucket and key.
pub fn parse_s3_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    if bucket.is_empty() || key.is_empty() {
        return None;
    }
    Some((bucket, key))
}

/// Removes the quotes S3 puts around ETags (`"abc"` → `abc`); leaves an unquoted one as it is.
pub fn strip_etag_quotes(etag: &str) -> &str {
    let t = etag.trim();
    t.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_s3_url("s3://boot-images/a/rootfs"),
            Some(("boot-images", "a/rootfs"))
        );
        assert_eq!(parse_s3_url("s3://boot-images/"), None);
        assert_eq!(parse_s3_url("s3://boot-images"), None);
        assert_eq!(parse_s3_url("https://x/y"), None);
    }

    #[test]
    fn etag_quotes() {
        assert_eq!(strip_etag_quotes("\"abc-2\""), "abc-2");
        assert_eq!(strip_etag_quotes("abc"), "abc");
        assert_eq!(strip_etag_quotes("\"abc"), "\"abc");
    }

    fn obj(key: &str, etag: &str) -> S3Object {
        S3Object {
            key: key.into(),
            etag: etag.into(),
            size: 1,
        }
    }

    /// The binary search of an ordered listing answers as the map of any listing.
    #[test]
    fn listing_lookup_ordered_or_not() {
        let sorted = vec![
            obj("PE/a", "1"),
            obj("a/b", "2"),
            obj("a/c", "3"),
            obj("é", "4"),
        ];
        let mut reversed = sorted.clone();
        reversed.reverse();
        let mut twice = sorted.clone();
        twice.insert(2, obj("a/b", "5"));
        assert!(matches!(ByKey::new(&sorted), ByKey::Sorted(_)));
        assert!(matches!(ByKey::new(&reversed), ByKey::Map(_)));
        assert!(matches!(ByKey::new(&twice), ByKey::Map(_)));
        assert!(matches!(ByKey::new(&[]), ByKey::Sorted(_)));
        for key in ["PE/a", "a/b", "a/c", "é", "a", "a/bb", "", "z"] {
            let etag = |l: &[S3Object]| ByKey::new(l).get(key).map(|o| o.etag.clone());
            assert_eq!(etag(&sorted), etag(&reversed), "{key}");
        }
        assert_eq!(
            ByKey::new(&twice).get("a/b").map(|o| o.etag.as_str()),
            Some("5")
        );
    }
}
