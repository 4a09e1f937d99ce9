//! The testbed's stores: the test kit's S3 and IMS doubles over a directory the VM
//! suites edit while the agent runs, so every request reads the files afresh.
//!
//! * `DIR/bucket/<key>`: the objects (md5 ETags, `LastModified` from the mtime);
//! * `DIR/ims.json`: the IMS records; `DIR/token`: the one bearer token IMS accepts;
//! * `DIR/faults/<name>`: `ims` = a status or `empty`; `s3-list` = a status;
//!   `manifest-<image-id>` and `object-<key with / as _>` = a status for that GetObject.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::StatusCode;
use sbps_testkit::ims::{self, Answer};
use sbps_testkit::s3::{self, Call, Listed, S3Error};
use serde_json::{json, Value};

use crate::md5::md5_hex;

/// A fault file's content, trimmed; `None` when there is none.
fn fault(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join("faults").join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A fault file's status, when it holds one.
fn fault_status(dir: &Path, name: &str) -> Option<StatusCode> {
    fault(dir, name)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|n| StatusCode::from_u16(n).ok())
}

fn injected(status: StatusCode) -> S3Error {
    S3Error::new(status, "InternalError", "injected fault")
}

/// md5 of object files, by path, kept while (size, mtime) stay the same.
type Md5Cache = BTreeMap<PathBuf, (u64, SystemTime, String)>;

/// The bucket: the files under `DIR/bucket`.
pub struct DirBucket {
    pub dir: PathBuf,
    md5s: Mutex<Md5Cache>,
}

impl DirBucket {
    pub fn new(dir: PathBuf) -> DirBucket {
        DirBucket {
            dir,
            md5s: Mutex::default(),
        }
    }

    fn etag(&self, path: &Path, size: u64, mtime: SystemTime) -> std::io::Result<String> {
        let mut cache = self.md5s.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, m, e)) = cache.get(path) {
            if *s == size && *m == mtime {
                return Ok(e.clone());
            }
        }
        let e = md5_hex(&std::fs::read(path)?);
        cache.insert(path.to_path_buf(), (size, mtime, e.clone()));
        Ok(e)
    }

    fn object_path(&self, key: &[u8]) -> Result<PathBuf, S3Error> {
        let key = std::str::from_utf8(key)
            .map_err(|_| S3Error::new(StatusCode::BAD_REQUEST, "InvalidArgument", "bad key"))?;
        if key
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "bad key",
            ));
        }
        Ok(self.dir.join("bucket").join(key))
    }
}

impl s3::Store for DirBucket {
    fn page(
        &self,
        prefix: &[u8],
        after: &[u8],
        max: usize,
    ) -> Result<(Vec<Listed>, bool), S3Error> {
        let mut entries = Vec::new();
        for (key, path) in walk(&self.dir.join("bucket")) {
            let key = key.into_bytes();
            if !key.starts_with(prefix) || key.as_slice() <= after {
                continue;
            }
            if entries.len() == max {
                return Ok((entries, true));
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let Ok(etag) = self.etag(&path, meta.len(), mtime) else {
                continue;
            };
            entries.push(Listed {
                key,
                etag,
                size: meta.len(),
                modified: iso8601(mtime),
            });
        }
        Ok((entries, false))
    }

    fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, String)>, S3Error> {
        let path = self.object_path(key)?;
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|_| {
            S3Error::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "read failed",
            )
        })?;
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let etag = self.etag(&path, meta.len(), mtime).unwrap_or_default();
        Ok(Some((bytes, etag)))
    }

    fn fault(&self, call: Call<'_>) -> Option<S3Error> {
        match call {
            Call::List => fault_status(&self.dir, "s3-list").map(injected),
            Call::Get(key) => {
                let key = String::from_utf8_lossy(key);
                if let Some((id, "manifest.json")) = key.split_once('/') {
                    if let Some(s) = fault_status(&self.dir, &format!("manifest-{id}")) {
                        return Some(injected(s));
                    }
                }
                fault_status(&self.dir, &format!("object-{}", key.replace('/', "_"))).map(injected)
            }
        }
    }
}

/// IMS: `DIR/ims.json`, `DIR/token` and the `ims` fault.
pub struct DirIms {
    pub dir: PathBuf,
}

impl ims::Source for DirIms {
    fn answer(&self) -> Answer {
        match fault(&self.dir, "ims").as_deref() {
            Some("empty") => return Answer::records(&json!([])),
            Some(s) => {
                if let Some(st) = s
                    .parse::<u16>()
                    .ok()
                    .and_then(|n| StatusCode::from_u16(n).ok())
                {
                    return Answer::problem(st, "injected fault");
                }
            }
            None => {}
        }
        let records = std::fs::read_to_string(self.dir.join("ims.json"))
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
        match records {
            Ok(v) => Answer::records(&v),
            Err(e) => Answer::problem(StatusCode::INTERNAL_SERVER_ERROR, &format!("ims.json: {e}")),
        }
    }

    fn token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("token"))
            .ok()
            .map(|t| t.trim().to_string())
    }
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

/// `LastModified` as S3 writes it, from a file's mtime.
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
