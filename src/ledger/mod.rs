//! The ledger on this node's disk: one JSON file in STATE_DIR, the fast path and the
//! copy that works without the Kubernetes API.
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory), mode 0600. A
//! corrupt file is renamed aside and reported, never silently replaced. The values and
//! their rules are [`sbps_core::ledger`]'s; the copy in the API is [`remote`]'s.

#![warn(unreachable_pub)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use sbps_core::ledger::*;

pub mod kube;
pub mod remote;

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

/// Loads the ledger at `path`. A missing file is a fresh start; a corrupt one is
/// moved aside (`<path>.corrupt-<now>`) and reported in the result.
pub fn load(path: &Path, now: u64) -> Result<Loaded, LedgerError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Fresh(Ledger::new())),
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
        Ok(l) => set_aside(path, now, format!("unknown version {}", l.version)),
        Err(e) => set_aside(path, now, e.to_string()),
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
pub fn save(ledger: &Ledger, path: &Path) -> Result<(), LedgerError> {
    let mut bytes = serde_json::to_vec_pretty(ledger).map_err(|e| LedgerError::Write {
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    bytes.push(b'\n');
    crate::atomic_file::write(path, &bytes).map_err(|source| LedgerError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Kind;
    use std::os::unix::fs::PermissionsExt;
    #[test]
    fn missing_file_is_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let l = load(&dir.path().join("state.json"), 1).unwrap();
        assert!(matches!(l, Loaded::Fresh(ref x) if x.luns.is_empty()));
    }

    #[test]
    fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let mut l = Ledger::new();
        l.luns.insert(
            "abc".into(),
            std::sync::Arc::new(LunRecord {
                lun: 3,
                name: "abc".into(),
                kind: Some(Kind::Pe),
                key: Some("s3://b/PE/x".into()),
                image_id: None,
                etag: Some("e".into()),
                size: Some(4),
                since: 10,
            }),
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
        save(&l, &p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&p, 2).unwrap().into_ledger();
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
        match load(&p, 42).unwrap() {
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
    fn old_agent_state_file_is_accepted() {
        // The original agent's /var/lib/sbps-marshal/state.json holds {"initialized": true}.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        fs::write(&p, br#"{"initialized": true}"#).unwrap();
        let l = load(&p, 1).unwrap();
        assert!(matches!(l, Loaded::Existing(ref x) if x.luns.is_empty()));
    }
}
