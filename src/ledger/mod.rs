//! The ledger: what the agent must remember between scans and restarts.
//!
//! * the LUN number of every projection, so an image keeps its number for life,
//!   also after the target was cleared or the agent restarted;
//! * quarantined LUN numbers, so a number an initiator may still hold is not given
//!   to other content (Linux does not notice a LUN's content changing);
//! * when each absence began, for the removal grace period.
//!
//! Stored as JSON, written atomically (temp file, fsync, rename, fsync of the
//! directory), mode 0600. A corrupt file is renamed aside and reported, never
//! silently replaced.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::desired::Kind;

pub mod kube;
pub mod remote;

/// Current on-disk format version.
pub const VERSION: u32 = 1;

/// One exported image's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunRecord {
    pub lun: u64,
    pub name: String,
    pub kind: Option<Kind>,
    pub key: Option<String>,
    pub image_id: Option<String>,
    /// The S3 ETag when the backstore was created or adopted (PE content-change detection).
    pub etag: Option<String>,
    pub size: Option<u64>,
    /// When the agent first saw it exported (seconds since the epoch).
    pub since: u64,
}

/// A freed LUN number that must not carry other content before `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The serial that held the number.
    pub serial: Option<String>,
    /// The ETag of the content it held: the same serial with the same content may come back.
    pub etag: Option<String>,
    pub size: Option<u64>,
    /// False when the number was freed because its content changed: then not even the
    /// same serial may have it back.
    pub same_serial_may_return: bool,
    pub until: u64,
}

/// The persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(default)]
    pub version: u32,
    /// By unit serial. Shared with the copies of this ledger until one changes a record:
    /// every scan plans from a copy and returns one, and most scans change no record.
    #[serde(default)]
    pub luns: Shared<BTreeMap<String, LunRecord>>,
    /// By LUN number.
    #[serde(default)]
    pub quarantine: BTreeMap<u64, Quarantine>,
    /// Unit serial → when it was first seen absent (seconds since the epoch).
    #[serde(default)]
    pub absent_since: BTreeMap<String, u64>,
    /// When a scan last converged (seconds since the epoch), as of the last scan that
    /// changed the target or the ledger (steady scans write no file). Set once a scan
    /// converged: the mark of a ledger with a history of this target, which adoption's
    /// quarantine of unexplained numbers relies on.
    #[serde(default)]
    pub last_converged: Option<u64>,
    /// Counts the writes of this ledger: the local file and the copy in the Kubernetes
    /// API carry it, and when they disagree the higher one is the newer.
    #[serde(default)]
    pub generation: u64,
}

/// A value shared by its copies until one of them is changed (copy on write): a clone
/// is a reference count, and the first change through a copy (`DerefMut`) copies the value
/// if it is still shared. Copies that were not changed compare equal without a walk.
/// Reads and (de)serializes exactly as the value itself.
#[derive(Default)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Shared<T> {
        Shared(Arc::new(value))
    }

    /// True when `a` and `b` are copies of one value that neither has changed.
    pub fn same(a: &Shared<T>, b: &Shared<T>) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Shared::same(self, other) || *self.0 == *other.0
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Shared<T> {
        Shared::new(value)
    }
}

impl<'a, T> IntoIterator for &'a Shared<T>
where
    &'a T: IntoIterator,
{
    type Item = <&'a T as IntoIterator>::Item;
    type IntoIter = <&'a T as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        self.0.as_ref().into_iter()
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::new)
    }
}

/// Errors of ledger I/O.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot read ledger {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write ledger {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("ledger {path} is corrupt ({detail}); moved aside to {aside}")]
    Corrupt {
        path: PathBuf,
        detail: String,
        aside: PathBuf,
    },
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No file: a fresh start.
    Fresh(Ledger),
    Existing(Ledger),
    /// The file was corrupt and has been moved to `aside`; starting fresh.
    Recovered {
        ledger: Ledger,
        aside: PathBuf,
        detail: String,
    },
}

impl Loaded {
    pub fn into_ledger(self) -> Ledger {
        match self {
            Loaded::Fresh(l) | Loaded::Existing(l) => l,
            Loaded::Recovered { ledger, .. } => ledger,
        }
    }
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger {
            version: VERSION,
            ..Ledger::default()
        }
    }

    /// Loads the ledger at `path`. A missing file is a fresh start; a corrupt one is
    /// moved aside (`<path>.corrupt-<now>`) and reported in the result.
    pub fn load(path: &Path, now: u64) -> Result<Loaded, LedgerError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Loaded::Fresh(Ledger::new()))
            }
            Err(source) => {
                return Err(LedgerError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        match serde_json::from_slice::<Ledger>(&bytes) {
            Ok(mut l) if l.version <= VERSION => {
                l.version = VERSION;
                Ok(Loaded::Existing(l))
            }
            Ok(l) => Self::set_aside(path, now, format!("unknown version {}", l.version)),
            Err(e) => Self::set_aside(path, now, e.to_string()),
        }
    }

    fn set_aside(path: &Path, now: u64, detail: String) -> Result<Loaded, LedgerError> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{now}"));
        let aside = PathBuf::from(aside);
        fs::rename(path, &aside).map_err(|source| LedgerError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Loaded::Recovered {
            ledger: Ledger::new(),
            aside,
            detail,
        })
    }

    /// Writes the ledger atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), LedgerError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| LedgerError::Write {
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes).map_err(|source| LedgerError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The LUN number reserved for `serial`, if any.
    pub fn lun_of(&self, serial: &str) -> Option<u64> {
        self.luns.get(serial).map(|r| r.lun)
    }
}

/// Whether the copy in the Kubernetes API replaces the local ledger at start: when there is
/// no local one (new disk, rebuild, corrupt file), when the local one has no LUN record
/// (nothing to lose: it may have been written by a scan that could number nothing while the
/// API could not be read), or when the API's is newer (a higher generation).
pub fn remote_wins(local: &Ledger, local_missing: bool, remote: &Ledger) -> bool {
    local_missing || local.luns.is_empty() || remote.generation > local.generation
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory created
/// 0600, fsync, rename over `path`, fsync of the directory. A crash leaves either
/// the old or the new file, never a torn one; the temp file such a crash leaves
/// (`<file>.tmp-<pid>`) is removed by the next successful write.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with the file's permission bits: a file other local readers need
/// (node-exporter's textfile collector) is written 0644.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    match result {
        Ok(()) => remove_stale_temps(dir, path),
        Err(_) => {
            let _ = fs::remove_file(&tmp);
        }
    }
    result
}

/// Removes `<file>.tmp-<pid>` left in `dir` by a process that died mid-write.
/// Only one agent writes these files at a time (the single-instance lock), so any
/// such file of another pid is dead. Best effort: a failure only leaves litter.
fn remove_stale_temps(dir: &Path, path: &Path) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!("{name}.tmp-");
    let own = std::process::id().to_string();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let Some(pid) = n.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if pid != own && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            match fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(file = %e.path().display(), "removed a temp file left by a crashed write")
                }
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a stale temp file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_removes_temp_files_of_crashed_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ledger.json");
        let stale = dir.path().join("ledger.json.tmp-999999");
        let other = dir.path().join("saveconfig.json.tmp-999999");
        let odd = dir.path().join("ledger.json.tmp-x1");
        for f in [&stale, &other, &odd] {
            fs::write(f, "{\"torn").unwrap();
        }
        write_atomic(&p, b"{}\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{}\n");
        assert!(!stale.exists(), "the dead writer's temp file is gone");
        assert!(other.exists() && odd.exists(), "other files are left alone");
    }

    #[test]
    fn the_api_copy_wins_when_the_local_one_is_missing_empty_or_older() {
        let record = LunRecord {
            lun: 3,
            name: "abc".into(),
            kind: Some(Kind::Pe),
            key: None,
            image_id: None,
            etag: None,
            size: None,
            since: 0,
        };
        let with = |generation: u64, luns: bool| {
            let mut l = Ledger::new();
            l.generation = generation;
            if luns {
                l.luns.insert("abc".into(), record.clone());
            }
            l
        };
        let remote = with(5, true);
        assert!(
            remote_wins(&with(9, true), true, &remote),
            "no local ledger"
        );
        assert!(
            remote_wins(&with(9, false), false, &remote),
            "a local one with no record"
        );
        assert!(
            remote_wins(&with(4, true), false, &remote),
            "an older local one"
        );
        assert!(
            !remote_wins(&with(5, true), false, &remote),
            "the same generation"
        );
        assert!(
            !remote_wins(&with(6, true), false, &remote),
            "a newer local one"
        );
    }

    #[test]
    fn missing_file_is_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::load(&dir.path().join("state.json"), 1).unwrap();
        assert!(matches!(l, Loaded::Fresh(ref x) if x.luns.is_empty()));
    }

    #[test]
    fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let mut l = Ledger::new();
        l.luns.insert(
            "abc".into(),
            LunRecord {
                lun: 3,
                name: "abc".into(),
                kind: Some(Kind::Pe),
                key: Some("s3://b/PE/x".into()),
                image_id: None,
                etag: Some("e".into()),
                size: Some(4),
                since: 10,
            },
        );
        l.quarantine.insert(
            7,
            Quarantine {
                serial: Some("x".into()),
                etag: None,
                size: None,
                same_serial_may_return: true,
                until: 99,
            },
        );
        l.save(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Ledger::load(&p, 2).unwrap().into_ledger();
        assert_eq!(back, l);
        // no temp file left behind
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn corrupt_file_is_moved_aside_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        fs::write(&p, b"{ not json").unwrap();
        match Ledger::load(&p, 42).unwrap() {
            Loaded::Recovered {
                aside,
                detail,
                ledger,
            } => {
                assert!(ledger.luns.is_empty());
                assert!(!detail.is_empty());
                assert_eq!(fs::read(&aside).unwrap(), b"{ not json");
                assert!(aside.to_string_lossy().ends_with(".corrupt-42"));
                assert!(!p.exists());
            }
            other => panic!("expected Recovered, got {other:?}"),
        }
    }

    #[test]
    fn shared_copies_until_changed() {
        let mut a: Shared<BTreeMap<String, u64>> = Shared::default();
        a.insert("x".into(), 1);
        let mut b = a.clone();
        assert!(Shared::same(&a, &b));
        assert_eq!(a, b);
        b.insert("y".into(), 2);
        assert!(!Shared::same(&a, &b));
        assert_eq!(a.len(), 1, "the original is not changed through a copy");
        assert_eq!(b.len(), 2);
        assert_ne!(a, b);
        b.remove("y");
        assert_eq!(a, b, "equal by value after the copy");
        // Serialized exactly as the value itself.
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"x":1}"#);
        let back: Shared<BTreeMap<String, u64>> = serde_json::from_str(r#"{"x":1}"#).unwrap();
        assert_eq!(back, a);
        assert_eq!(format!("{a:?}"), r#"{"x": 1}"#);
        let keys: Vec<&String> = (&a).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["x"]);
    }

    #[test]
    fn old_agent_state_file_is_accepted() {
        // The original agent's /var/lib/sbps-marshal/state.json holds {"initialized": true}.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        fs::write(&p, br#"{"initialized": true}"#).unwrap();
        let l = Ledger::load(&p, 1).unwrap();
        assert!(matches!(l, Loaded::Existing(ref x) if x.luns.is_empty()));
    }
}
