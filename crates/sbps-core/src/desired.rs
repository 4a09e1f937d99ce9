//! Desired state: which images this node must project, and why every other
//! candidate is not.
//!
//! A pure function of the [`Inventory`] and three settings. Every candidate (each
//! `PE/` object, each IMS record) ends in exactly one [`Outcome`]:
//! projected, skipped for a named reason, or *unknown* because some input about it
//! could not be had. Unknown is never "not projected": the plan protects what it
//! cannot see. `explain`, `status`, the logs and the metrics all read this one value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::{self, Identity};
use crate::inventory::{
    parse_s3_url, strip_etag_quotes, ByKey, ImageRecord, Inventory, MountEntry, S3Object, Tagging,
    ROOTFS_ARTIFACT_TYPE,
};
use crate::ledger::Ledger;
use crate::paths;

pub use crate::paths::{kernel_safe_path, lexically_inside, Backend};

/// Prefix of programming-environment objects in the bucket.
pub(crate) const PE_PREFIX: &str = "PE/";

/// The settings `desired` depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub bucket: String,
    pub mount: PathBuf,
    pub ims_tagging: bool,
    /// The LIO backend the paths go to: a path it would misread is skipped here
    /// (`unsafe-path`), not planned to fail its create every scan.
    #[serde(default)]
    pub backend: Backend,
}

/// Programming environment or IMS root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pe,
    Rootfs,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Kind::Pe => "pe",
            Kind::Rootfs => "rootfs",
        })
    }
}

/// One image that must be exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projection {
    pub kind: Kind,
    /// The digest input (see [`crate::identity`]).
    pub key: String,
    pub identity: Identity,
    /// The S3 object key of the squashfs file.
    pub object_key: String,
    /// `<mount root>/<object key>`: what the kernel opens.
    pub path: PathBuf,
    pub size: u64,
    /// S3 ETag (unquoted) of the object.
    pub etag: String,
    /// IMS image id and name (rootfs only).
    pub image_id: Option<String>,
    pub image_name: Option<String>,
}

/// What a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Subject {
    Pe { object_key: String },
    Image { id: String, name: String },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Pe { object_key } => write!(f, "PE object {object_key}"),
            Subject::Image { id, name } if name.is_empty() => write!(f, "IMS image {id}"),
            Subject::Image { id, name } => write!(f, "IMS image {id} ({name})"),
        }
    }
}

/// The end of one candidate's evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    Projected { serial: String },
    Skipped { reason: Reason },
    Unknown { reason: Reason },
}

/// A candidate and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub subject: Subject,
    /// The identity, where it could be computed.
    pub identity: Option<Identity>,
    /// The S3 object key of the squashfs file, where known.
    pub object_key: Option<String>,
    pub outcome: Outcome,
}

/// Why a candidate is not projected (or not known to be). Each names one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum Reason {
    /// A key ending in `/`: a "directory" placeholder, not a file.
    DirectoryKey,
    /// One key, one file: the key has an empty or `.` segment, or reaches its file
    /// through a symlink; or the path has characters the kernel's `control` parser (or
    /// targetcli's command line, with that backend) would misread, or is too long.
    UnsafePath { detail: String },
    /// The IMS record has no `link.path`.
    NoLink,
    /// Tagging is on and `metadata["sbps-project"]` is not `"true"`.
    Untagged { value: Option<String> },
    /// The metadata has the `{key, value}` shape of the CSM < 1.7 create bug.
    BuggyMetadata { key: String, value: String },
    /// The metadata is of no known shape: the image is unknown (an unreadable tag is
    /// not "untagged").
    InvalidMetadata { detail: String },
    /// The IMS record itself could not be read (not an object, no string id, a name or
    /// link of the wrong type): its image is unknown, never absent.
    UnreadableRecord { index: usize, detail: String },
    /// An image this node serves that the IMS answer does not name, while some records
    /// of that answer could not be read and name no image: it may be one of them.
    MaybeUnreadable { records: usize },
    /// The IMS answer names none of the rootfs images this node serves (an IMS whose
    /// datastore failed to load answers `[]`): taken as IMS unknown until an operator
    /// confirms it (`scan --once --release-brake`).
    ImsNamesNoneServed { served: usize, named: usize },
    /// An `s3://` link that is malformed or names another bucket.
    OutsideBucket { path: String },
    /// The manifest object is not in the bucket listing.
    ManifestMissing { path: String },
    /// The manifest could not be fetched or parsed.
    ManifestError { path: String, error: String },
    /// No manifest result was gathered for this image.
    ManifestNotFetched { path: String },
    /// The manifest has no rootfs artifact.
    NoRootfsArtifact,
    /// The manifest has more than one rootfs artifact (IMS refuses such a manifest):
    /// which one is meant cannot be read, so the image is unknown.
    SeveralRootfsArtifacts { count: usize },
    /// The rootfs artifact has no `link.path`: unknown.
    RootfsWithoutLink,
    /// The rootfs artifact has no `link.etag`: the identity cannot be computed, unknown.
    EtagMissing,
    /// The rootfs object is not in the bucket listing.
    NotInS3 { object_key: String },
    /// The manifest's etag differs from the object's.
    EtagMismatch { manifest: String, s3: String },
    /// The object is not (yet) in the mount.
    NotInMount { path: PathBuf },
    /// The mount has something that is not a regular file at that path.
    NotRegularFile { path: PathBuf },
    /// The path leaves the mount.
    OutsideMount { detail: String },
    /// Sizes differ between S3 and the mount: an upload or cache refresh in progress.
    NotReady { s3_size: u64, mount_size: u64 },
    /// The mount check failed.
    MountError { error: String },
    /// The mount was not checked for this key.
    MountNotChecked,
    /// The S3 listing failed.
    S3Unavailable { error: String },
    /// The IMS listing failed.
    ImsUnavailable { error: String },
    /// Another candidate with the same identity was projected first.
    Duplicate { serial: String },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Reason::*;
        match self {
            DirectoryKey => write!(f, "key ends in '/': a directory placeholder, not a file"),
            UnsafePath { detail } => write!(f, "unsafe path: {detail}"),
            NoLink => write!(f, "IMS record has no link.path"),
            Untagged { value: None } => write!(f, "untagged: metadata has no 'sbps-project' key"),
            Untagged { value: Some(v) } => {
                write!(f, "untagged: metadata 'sbps-project' is {v:?}, not \"true\"")
            }
            BuggyMetadata { key, value } => write!(
                f,
                "metadata has the {{\"key\": {key:?}, \"value\": {value:?}}} shape of the CSM < 1.7 create bug; treated as untagged"
            ),
            InvalidMetadata { detail } => write!(f, "metadata of unknown shape: {detail}"),
            UnreadableRecord { index, detail } => {
                write!(f, "IMS record {index} could not be read: {detail}")
            }
            MaybeUnreadable { records } => write!(
                f,
                "served here, not named by IMS, and {records} IMS record(s) could not be read: it may be one of them"
            ),
            ImsNamesNoneServed { served, named } => write!(
                f,
                "the IMS answer ({named} readable records) names none of the {served} rootfs images this node serves; taken as IMS unknown until an operator confirms it with `sbps-marshal scan --once --release-brake`"
            ),
            OutsideBucket { path } => write!(f, "link {path:?} is not an object of the configured bucket"),
            ManifestMissing { path } => write!(f, "manifest {path} is not in the bucket"),
            ManifestError { path, error } => write!(f, "manifest {path} unavailable: {error}"),
            ManifestNotFetched { path } => write!(f, "manifest {path} was not fetched"),
            NoRootfsArtifact => write!(f, "manifest has no {ROOTFS_ARTIFACT_TYPE} artifact"),
            SeveralRootfsArtifacts { count } => {
                write!(f, "manifest has {count} rootfs artifacts; exactly one is required")
            }
            RootfsWithoutLink => write!(f, "rootfs artifact has no link.path"),
            EtagMissing => write!(f, "rootfs artifact has no link.etag"),
            NotInS3 { object_key } => write!(f, "rootfs object {object_key} is not in the bucket"),
            EtagMismatch { manifest, s3 } => {
                write!(f, "etag mismatch: manifest says {manifest}, S3 has {s3}")
            }
            NotInMount { path } => write!(f, "not in the mount yet: {}", path.display()),
            NotRegularFile { path } => write!(f, "not a regular file: {}", path.display()),
            OutsideMount { detail } => write!(f, "path leaves the mount: {detail}"),
            NotReady { s3_size, mount_size } => write!(
                f,
                "not ready: S3 size {s3_size} but the mount shows {mount_size} (upload or cache refresh in progress)"
            ),
            MountError { error } => write!(f, "mount check failed: {error}"),
            MountNotChecked => write!(f, "mount was not checked for this object"),
            S3Unavailable { error } => write!(f, "S3 listing unavailable: {error}"),
            ImsUnavailable { error } => write!(f, "IMS unavailable: {error}"),
            Duplicate { serial } => write!(f, "same image as projection {serial}"),
        }
    }
}

impl Reason {
    /// A short stable label for metrics (`skips by reason`).
    pub fn label(&self) -> &'static str {
        use Reason::*;
        match self {
            DirectoryKey => "directory_key",
            UnsafePath { .. } => "unsafe_path",
            NoLink => "no_link",
            Untagged { .. } => "untagged",
            BuggyMetadata { .. } => "buggy_metadata",
            InvalidMetadata { .. } => "invalid_metadata",
            UnreadableRecord { .. } => "unreadable_record",
            MaybeUnreadable { .. } => "maybe_unreadable",
            ImsNamesNoneServed { .. } => "ims_names_none_served",
            OutsideBucket { .. } => "outside_bucket",
            ManifestMissing { .. } => "manifest_missing",
            ManifestError { .. } => "manifest_error",
            ManifestNotFetched { .. } => "manifest_not_fetched",
            NoRootfsArtifact => "no_rootfs_artifact",
            SeveralRootfsArtifacts { .. } => "several_rootfs_artifacts",
            RootfsWithoutLink => "rootfs_without_link",
            EtagMissing => "etag_missing",
            NotInS3 { .. } => "not_in_s3",
            EtagMismatch { .. } => "etag_mismatch",
            NotInMount { .. } => "not_in_mount",
            NotRegularFile { .. } => "not_regular_file",
            OutsideMount { .. } => "outside_mount",
            NotReady { .. } => "not_ready",
            MountError { .. } => "mount_error",
            MountNotChecked => "mount_not_checked",
            S3Unavailable { .. } => "s3_unavailable",
            ImsUnavailable { .. } => "ims_unavailable",
            Duplicate { .. } => "duplicate",
        }
    }
}

/// What the plan must not remove because this scan could not see it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Uncertainty {
    /// Nothing can be judged absent (the S3 listing failed).
    pub everything: Option<String>,
    /// No rootfs image can be judged absent (IMS failed).
    pub rootfs: Option<String>,
    /// Identities whose state is unknown.
    pub serials: BTreeSet<String>,
    /// IMS images whose identity could not even be computed (manifest error,
    /// unreadable record or metadata).
    pub images: BTreeSet<String>,
    /// IMS records that could not be read and name no image (no string id): any
    /// rootfs image the answer does not name may be one of them ([`protect_served`]
    /// turns this into the serials concerned).
    #[serde(default)]
    pub unattributed: usize,
}

impl Uncertainty {
    pub fn is_empty(&self) -> bool {
        self.everything.is_none()
            && self.rootfs.is_none()
            && self.serials.is_empty()
            && self.images.is_empty()
            && self.unattributed == 0
    }
}

/// The result of `desired()`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Desired {
    /// Projections by unit serial.
    pub projections: BTreeMap<String, Projection>,
    /// One verdict per candidate, PE objects first, in listing order.
    pub verdicts: Vec<Verdict>,
    pub uncertainty: Uncertainty,
}

/// The manifest an IMS record asks to be fetched, if the record passes the checks
/// that need no manifest (link, tagging, bucket). Gathering uses this, so untagged
/// images cost no request.
pub fn manifest_wanted<'a>(record: &'a ImageRecord, s: &Settings) -> Option<&'a str> {
    pre_manifest_checks(record, s).ok()
}

/// The object keys whose mount state `desired` will need, given the listing and the
/// manifests gathered so far: the candidates that pass every check before the mount.
pub fn mount_candidates(inv: &Inventory, s: &Settings) -> Vec<String> {
    judging(inv, s).mount_keys()
}

/// Computes the desired state.
pub fn desired(inv: &Inventory, s: &Settings) -> Desired {
    judging(inv, s).finish(&inv.mount)
}

/// `desired` up to the mount: every verdict that needs no mount entry, and, in order,
/// the candidates that do. A scan evaluates the inventory once: gathering stats exactly
/// [`Judging::mount_keys`], then [`Judging::finish`] reads the answers.
#[derive(Debug, Clone, Default)]
pub struct Judging {
    desired: Desired,
    waiting: Vec<Waiting>,
}

/// A candidate that passed every check but the mount; its verdict (at `verdict`) says
/// `MountNotChecked` until [`Judging::finish`].
#[derive(Debug, Clone)]
struct Waiting {
    verdict: usize,
    kind: Kind,
    key: String,
    path: PathBuf,
    size: u64,
    etag: String,
}

thread_local! {
    static EVALUATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many inventories this thread has evaluated ([`judging`]): the evaluation is the
/// costliest pure step of a scan at thousands of images, and a test proves a scan makes
/// exactly one.
pub fn evaluations() -> u64 {
    EVALUATIONS.with(std::cell::Cell::get)
}

/// Evaluates everything `desired` decides before the mount (`inv.mount` is not read).
pub fn judging(inv: &Inventory, s: &Settings) -> Judging {
    EVALUATIONS.with(|n| n.set(n.get() + 1));
    let mut waiting = Vec::new();
    let desired = judge_all(inv, s, &mut waiting);
    Judging { desired, waiting }
}

impl Judging {
    /// The object keys the mount must be asked about, sorted, once each.
    pub fn mount_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .waiting
            .iter()
            .filter_map(|w| self.desired.verdicts[w.verdict].object_key.clone())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The desired state, given what the mount says for each key.
    pub fn finish(self, mount: &BTreeMap<String, MountEntry>) -> Desired {
        let Judging {
            desired: mut d,
            waiting,
        } = self;
        for w in waiting {
            let v = &d.verdicts[w.verdict];
            let (Some(id), Some(object_key)) = (v.identity.clone(), v.object_key.as_deref()) else {
                continue;
            };
            let outcome = match d.mount_outcome(&w, &id, mount.get(object_key)) {
                Ok(size) => {
                    // A rootfs candidate's verdict is about its image: the projection
                    // names it.
                    let (image_id, image_name) = match &v.subject {
                        Subject::Image { id, name } => (Some(id.clone()), Some(name.clone())),
                        Subject::Pe { .. } => (None, None),
                    };
                    d.projections.insert(
                        id.serial.clone(),
                        Projection {
                            kind: w.kind,
                            key: w.key,
                            identity: id.clone(),
                            object_key: object_key.to_string(),
                            path: w.path,
                            size,
                            etag: w.etag,
                            image_id,
                            image_name,
                        },
                    );
                    Outcome::Projected {
                        serial: id.serial.clone(),
                    }
                }
                Err(outcome) => outcome,
            };
            if let Outcome::Unknown { .. } = outcome {
                d.uncertainty.serials.insert(id.serial.clone());
            }
            d.verdicts[w.verdict].outcome = outcome;
        }
        d
    }
}

fn judge_all(inv: &Inventory, s: &Settings, waiting: &mut Vec<Waiting>) -> Desired {
    let mut out = Desired::default();
    let objects = match &inv.s3 {
        Ok(list) => list,
        Err(e) => {
            out.uncertainty.everything = Some(format!("S3 listing unavailable: {e}"));
            out.verdicts.push(Verdict {
                subject: Subject::Pe {
                    object_key: PE_PREFIX.to_string(),
                },
                identity: None,
                object_key: None,
                outcome: Outcome::Unknown {
                    reason: Reason::S3Unavailable { error: e.clone() },
                },
            });
            if let Ok(records) = &inv.ims {
                for r in records {
                    out.verdicts.push(Verdict {
                        subject: image_subject(r),
                        identity: None,
                        object_key: None,
                        outcome: Outcome::Unknown {
                            reason: Reason::S3Unavailable { error: e.clone() },
                        },
                    });
                }
            }
            return out;
        }
    };
    let by_key = ByKey::new(objects);
    // One verdict per PE object and per record, or more: allocated once, not doubled
    // into a vector up to twice the size at thousands of images.
    let pe_objects = objects.iter().filter(|o| o.key.starts_with(PE_PREFIX));
    let records = inv.ims.as_ref().map_or(1, Vec::len) + inv.ims_unreadable.len();
    out.verdicts.reserve(pe_objects.count() + records);

    for o in objects.iter().filter(|o| o.key.starts_with(PE_PREFIX)) {
        let subject = Subject::Pe {
            object_key: o.key.clone(),
        };
        if o.key.ends_with('/') {
            out.skip(subject, None, Reason::DirectoryKey);
            continue;
        }
        let key = identity::pe_key(&s.bucket, &o.key);
        let cand = Candidate {
            kind: Kind::Pe,
            key,
            object: o,
        };
        out.judge(cand, subject, s, waiting);
    }

    match &inv.ims {
        Err(e) => {
            out.uncertainty.rootfs = Some(format!("IMS unavailable: {e}"));
            out.verdicts.push(Verdict {
                subject: Subject::Image {
                    id: "*".into(),
                    name: "*".into(),
                },
                identity: None,
                object_key: None,
                outcome: Outcome::Unknown {
                    reason: Reason::ImsUnavailable { error: e.clone() },
                },
            });
        }
        Ok(records) => {
            for r in records {
                judge_image(&mut out, r, &by_key, inv, s, waiting);
            }
            for u in &inv.ims_unreadable {
                let reason = Reason::UnreadableRecord {
                    index: u.index,
                    detail: u.reason.clone(),
                };
                let id = match &u.id {
                    Some(id) => {
                        out.uncertainty.images.insert(id.clone());
                        id.clone()
                    }
                    None => {
                        out.uncertainty.unattributed += 1;
                        format!("#{}", u.index)
                    }
                };
                let subject = Subject::Image {
                    id,
                    name: String::new(),
                };
                out.unknown(subject, None, reason);
            }
        }
    }
    out
}

/// What `desired` cannot say without the ledger: which of the images this node serves
/// the IMS answer vouches for. Pure; the agent runs it on every scan between
/// [`desired`] and the plan.
///
/// 1. An IMS answer that names none of the rootfs images the ledger serves (while it
///    serves at least one whose absence is not already being timed) is not believed:
///    an IMS whose datastore failed to load answers `[]`, and an answer of unreadable
///    records says nothing. It is taken as IMS unknown (`uncertainty.rootfs`): no
///    rootfs image is created or removed, the TPG is not enabled, the scan does not
///    converge, until the answer names a served image again or an operator confirms
///    it (`released`: `scan --once --release-brake`). A confirmed answer is taken as
///    it stands: the images it no longer names start their absence (REMOVAL_GRACE
///    still applies), and since their absence is then being timed, later scans do
///    not hold them again.
/// 2. Records that could not be read and name no image (`uncertainty.unattributed`)
///    make every served image the answer does not name unknown: it may be one of them.
pub fn protect_served(d: &mut Desired, ledger: &Ledger, released: bool) {
    if d.uncertainty.everything.is_some() || d.uncertainty.rootfs.is_some() {
        return;
    }
    let named: BTreeSet<&str> = d
        .verdicts
        .iter()
        .filter_map(|v| match (&v.subject, &v.outcome) {
            (
                _,
                Outcome::Unknown {
                    reason: Reason::UnreadableRecord { .. },
                },
            ) => None,
            (Subject::Image { id, .. }, _) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let rootfs_records = || ledger.luns.iter().filter(|(_, r)| r.kind != Some(Kind::Pe));
    let served: Vec<(&str, &str)> = rootfs_records()
        .filter(|(s, _)| !ledger.absent_since.contains_key(*s))
        .filter_map(|(s, r)| Some((s.as_str(), r.image_id.as_deref()?)))
        .collect();
    let vouched =
        |(serial, id): &(&str, &str)| named.contains(id) || d.projections.contains_key(*serial);
    if !served.is_empty() && !served.iter().any(vouched) {
        let reason = Reason::ImsNamesNoneServed {
            served: served.len(),
            named: named.len(),
        };
        if !released {
            hold_rootfs(d, reason);
            return;
        }
    }
    let records = d.uncertainty.unattributed;
    if records == 0 {
        return;
    }
    let maybe: Vec<(String, Option<String>, Option<String>)> = rootfs_records()
        .filter(|(s, r)| {
            !d.projections.contains_key(*s)
                && !r.image_id.as_deref().is_some_and(|id| named.contains(id))
        })
        .map(|(s, r)| (s.clone(), r.image_id.clone(), r.key.clone()))
        .collect();
    for (serial, image_id, key) in maybe {
        d.uncertainty.serials.insert(serial.clone());
        let identity = key.as_deref().map(Identity::of_key);
        d.verdicts.push(Verdict {
            subject: Subject::Image {
                id: image_id.unwrap_or_else(|| format!("serial {serial}")),
                name: String::new(),
            },
            object_key: key
                .as_deref()
                .and_then(|k| k.split('|').next())
                .and_then(parse_s3_url)
                .map(|(_, k)| k.to_string()),
            identity,
            outcome: Outcome::Unknown {
                reason: Reason::MaybeUnreadable { records },
            },
        });
    }
}

/// IMS unknown after the fact: what `desired` would have said had IMS not answered.
fn hold_rootfs(d: &mut Desired, reason: Reason) {
    d.uncertainty.rootfs = Some(reason.to_string());
    d.projections.retain(|_, p| p.kind != Kind::Rootfs);
    for v in &mut d.verdicts {
        if matches!(v.subject, Subject::Image { .. })
            && !matches!(v.outcome, Outcome::Unknown { .. })
        {
            v.outcome = Outcome::Unknown {
                reason: reason.clone(),
            };
        }
    }
    d.verdicts.push(Verdict {
        subject: Subject::Image {
            id: "*".into(),
            name: "*".into(),
        },
        identity: None,
        object_key: None,
        outcome: Outcome::Unknown { reason },
    });
}

// ---------------------------------------------------------------------------------------------
// Details.

struct Candidate<'a> {
    kind: Kind,
    key: String,
    object: &'a S3Object,
}

fn image_subject(r: &ImageRecord) -> Subject {
    Subject::Image {
        id: r.id.clone(),
        name: r.name.clone(),
    }
}

/// Checks that need no manifest; returns the manifest path.
fn pre_manifest_checks<'a>(r: &'a ImageRecord, s: &Settings) -> Result<&'a str, Reason> {
    let path = match &r.link {
        Some(l) if !l.path.trim().is_empty() => l.path.as_str(),
        _ => return Err(Reason::NoLink),
    };
    if s.ims_tagging {
        match &r.tagging {
            Tagging::NoMetadata => {}
            Tagging::Map { tag } => match tag {
                Some(v) if v == "true" => {}
                other => {
                    return Err(Reason::Untagged {
                        value: other.clone(),
                    })
                }
            },
            Tagging::BuggyKeyValue { key, value } => {
                return Err(Reason::BuggyMetadata {
                    key: key.clone(),
                    value: value.clone(),
                })
            }
            Tagging::Invalid(detail) => {
                return Err(Reason::InvalidMetadata {
                    detail: detail.clone(),
                })
            }
        }
    }
    match parse_s3_url(path) {
        Some((bucket, _)) if bucket == s.bucket => Ok(path),
        _ => Err(Reason::OutsideBucket {
            path: path.to_string(),
        }),
    }
}

fn judge_image(
    out: &mut Desired,
    r: &ImageRecord,
    by_key: &ByKey<'_>,
    inv: &Inventory,
    s: &Settings,
    waiting: &mut Vec<Waiting>,
) {
    let subject = image_subject(r);
    let manifest_path = match pre_manifest_checks(r, s) {
        Ok(p) => p,
        Err(reason @ Reason::InvalidMetadata { .. }) => {
            return out.unknown_image(r, subject, reason)
        }
        Err(reason) => return out.skip(subject, None, reason),
    };
    let manifest = match inv.manifests.get(manifest_path) {
        Some(Ok(m)) => m,
        Some(Err(error)) => {
            let in_listing = parse_s3_url(manifest_path)
                .map(|(_, k)| by_key.get(k).is_some())
                .unwrap_or(false);
            let reason = if in_listing {
                Reason::ManifestError {
                    path: manifest_path.to_string(),
                    error: error.clone(),
                }
            } else {
                return out.skip(
                    subject,
                    None,
                    Reason::ManifestMissing {
                        path: manifest_path.to_string(),
                    },
                );
            };
            return out.unknown_image(r, subject, reason);
        }
        None => {
            return out.unknown_image(
                r,
                subject,
                Reason::ManifestNotFetched {
                    path: manifest_path.to_string(),
                },
            );
        }
    };
    let rootfs: Vec<_> = manifest
        .artifacts
        .iter()
        .filter(|a| a.kind == ROOTFS_ARTIFACT_TYPE)
        .collect();
    // A manifest that says "no rootfs" is read and believed (skip); one whose rootfs
    // artifact cannot be read (several of them, no path, no etag) makes the image
    // unknown: it may be the very image a live LUN serves. The original took the last
    // rootfs artifact with a path and an etag; guessing could export another image
    // under a live identity, or remove the right one.
    let artifact = match rootfs.as_slice() {
        [] => return out.skip(subject, None, Reason::NoRootfsArtifact),
        [one] => one,
        many => {
            let reason = Reason::SeveralRootfsArtifacts { count: many.len() };
            return out.unknown_image(r, subject, reason);
        }
    };
    let link = match &artifact.link {
        Some(l) if !l.path.trim().is_empty() => l,
        _ => return out.unknown_image(r, subject, Reason::RootfsWithoutLink),
    };
    let etag = match link.etag.as_deref() {
        Some(e) if !e.trim().is_empty() => e,
        _ => return out.unknown_image(r, subject, Reason::EtagMissing),
    };
    let object_key = match parse_s3_url(&link.path) {
        Some((bucket, key)) if bucket == s.bucket => key,
        _ => {
            return out.skip(
                subject,
                None,
                Reason::OutsideBucket {
                    path: link.path.clone(),
                },
            )
        }
    };
    let object = match by_key.get(object_key) {
        Some(o) => o,
        None => {
            return out.skip(
                subject,
                None,
                Reason::NotInS3 {
                    object_key: object_key.to_string(),
                },
            )
        }
    };
    // A quoted manifest etag (`"abc"`) names the object whose S3 ETag is `abc`; the
    // identity keeps the etag exactly as the manifest has it, because the initiator
    // derives the WWID from the manifest's path and etag as BOS hands them over
    // (`root=sbps-s3:<path>:<etag>`): any other key would export a LUN nobody looks
    // for. The original compared the quoted text with the bare ETag and did not
    // project it; projecting adds a LUN and never removes one.
    if strip_etag_quotes(etag) != object.etag {
        return out.skip(
            subject,
            None,
            Reason::EtagMismatch {
                manifest: etag.to_string(),
                s3: object.etag.clone(),
            },
        );
    }
    let cand = Candidate {
        kind: Kind::Rootfs,
        key: identity::rootfs_key(&link.path, etag),
        object,
    };
    out.judge(cand, subject, s, waiting);
}

impl Desired {
    fn skip(&mut self, subject: Subject, identity: Option<Identity>, reason: Reason) {
        self.verdicts.push(Verdict {
            subject,
            identity,
            object_key: None,
            outcome: Outcome::Skipped { reason },
        });
    }

    /// An IMS image whose identity cannot be computed: every projection of that image
    /// id is held (see the plan's rule 1).
    fn unknown_image(&mut self, r: &ImageRecord, subject: Subject, reason: Reason) {
        self.uncertainty.images.insert(r.id.clone());
        self.unknown(subject, None, reason);
    }

    fn unknown(&mut self, subject: Subject, identity: Option<Identity>, reason: Reason) {
        if let Some(id) = &identity {
            self.uncertainty.serials.insert(id.serial.clone());
        }
        self.verdicts.push(Verdict {
            subject,
            identity,
            object_key: None,
            outcome: Outcome::Unknown { reason },
        });
    }

    /// The checks shared by PE and rootfs candidates: path safety here, the mount in
    /// [`Judging::finish`].
    fn judge(
        &mut self,
        c: Candidate<'_>,
        subject: Subject,
        s: &Settings,
        waiting: &mut Vec<Waiting>,
    ) {
        let id = Identity::of_key(&c.key);
        let path = s.mount.join(&c.object.key);
        let outcome = match path_outcome(&c.object.key, &path, s.backend) {
            Err(outcome) => outcome,
            Ok(()) => {
                waiting.push(Waiting {
                    verdict: self.verdicts.len(),
                    kind: c.kind,
                    key: c.key,
                    path,
                    size: c.object.size,
                    etag: c.object.etag.clone(),
                });
                Outcome::Unknown {
                    reason: Reason::MountNotChecked,
                }
            }
        };
        self.verdicts.push(Verdict {
            subject,
            identity: Some(id),
            object_key: Some(c.object.key.clone()),
            outcome,
        });
    }

    /// The projected size, or the outcome that stops the candidate.
    fn mount_outcome(
        &self,
        w: &Waiting,
        id: &Identity,
        entry: Option<&MountEntry>,
    ) -> Result<u64, Outcome> {
        let skip = |reason| Err(Outcome::Skipped { reason });
        let unknown = |reason| Err(Outcome::Unknown { reason });
        let path = &w.path;
        match entry {
            None => unknown(Reason::MountNotChecked),
            Some(MountEntry::Error(error)) => unknown(Reason::MountError {
                error: error.clone(),
            }),
            Some(MountEntry::Missing) => unknown(Reason::NotInMount {
                path: path.to_path_buf(),
            }),
            Some(MountEntry::NotRegular) => skip(Reason::NotRegularFile {
                path: path.to_path_buf(),
            }),
            Some(MountEntry::Outside(detail)) => skip(Reason::OutsideMount {
                detail: detail.clone(),
            }),
            Some(MountEntry::Indirect(detail)) => skip(Reason::UnsafePath {
                detail: detail.clone(),
            }),
            Some(MountEntry::File { size }) if *size != w.size => unknown(Reason::NotReady {
                s3_size: w.size,
                mount_size: *size,
            }),
            Some(MountEntry::File { .. }) if self.projections.contains_key(&id.serial) => {
                skip(Reason::Duplicate {
                    serial: id.serial.clone(),
                })
            }
            Some(MountEntry::File { size }) => Ok(*size),
        }
    }
}

/// The checks of an object key that need no mount: it stays inside the mount and names
/// one file by a path the backend reads as written.
fn path_outcome(key: &str, path: &Path, backend: Backend) -> Result<(), Outcome> {
    let skip = |reason| Err(Outcome::Skipped { reason });
    if let Err(detail) = lexically_inside(key) {
        return skip(Reason::OutsideMount { detail });
    }
    if let Err(detail) = paths::one_name(key).and_then(|()| paths::backend_safe_path(path, backend))
    {
        return skip(Reason::UnsafePath { detail });
    }
    Ok(())
}
