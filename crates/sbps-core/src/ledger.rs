//! The ledger: what the agent must remember between scans and restarts.
//!
//! * the LUN number of every projection, so an image keeps its number for life,
//!   also after the target was cleared or the agent restarted;
//! * quarantined LUN numbers, so a number an initiator may still hold is not given
//!   to other content (Linux does not notice a LUN's content changing);
//! * when each absence began, for the removal grace period.
//!
//! Only the values and the rules that read them live here; where a ledger is kept (a
//! local file, a ConfigMap in the Kubernetes API) is the adapters' business.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::desired::Kind;

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
    /// Each record is shared too, so a scan that changes one copies the map's keys and
    /// pointers, not thousands of records.
    #[serde(default)]
    pub luns: Shared<BTreeMap<String, Arc<LunRecord>>>,
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
    pub(crate) fn new(value: T) -> Shared<T> {
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

impl Ledger {
    pub fn new() -> Ledger {
        Ledger {
            version: VERSION,
            ..Ledger::default()
        }
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

#[cfg(test)]
mod tests {
    use super::*;
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
                l.luns
                    .insert("abc".into(), std::sync::Arc::new(record.clone()));
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
}
