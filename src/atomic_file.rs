//! Files replaced whole or not at all: the ledger, saveconfig.json, the metrics
//! textfile. A crash leaves the old file or the new one, never a torn one.

#![warn(unreachable_pub)]

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temp file in the same directory created
/// 0600, fsync, rename over `path`, fsync of the directory. A crash leaves either
/// the old or the new file, never a torn one; the temp file such a crash leaves
/// (`<file>.tmp-<pid>`) is removed by the next successful write.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_mode(path, bytes, 0o600)
}

/// [`write()`] with the file's permission bits: a file other local readers need
/// (node-exporter's textfile collector) is written 0644.
pub(crate) fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, mode, |f| f.write_all(bytes).map(Some)).map(drop)
}

/// [`write_mode()`] of what `fill` writes into the temp file (opened for reading too),
/// so a file of megabytes need not be held whole in memory. `fill` returns `None` to
/// keep the old file: the temp file is removed and nothing renamed.
pub(crate) fn write_with<T>(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut fs::File) -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        let Some(out) = fill(&mut f)? else {
            return Ok(None);
        };
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()?;
        Ok(Some(out))
    })();
    match &result {
        Ok(Some(_)) => remove_stale_temps(dir, path),
        _ => {
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
        write(&p, b"{}\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{}\n");
        assert!(!stale.exists(), "the dead writer's temp file is gone");
        assert!(other.exists() && odd.exists(), "other files are left alone");
    }
}
