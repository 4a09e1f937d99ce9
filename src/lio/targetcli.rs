//! The compatibility backend: the same ops through the `targetcli` commands the
//! original Python agent ran (one process per command, `argv[1]` one string).
//!
//! targetcli parses that string with configshell-fb's grammar, which has no quoting:
//! a parameter is a run of the characters it knows, whitespace splits it, and any
//! other character silently ends the command line (for `PE/it's.squashfs` it creates
//! a backstore on `PE/it`, with no size and no serial). So every word put on a line is
//! checked to be one targetcli reads back byte for byte ([`crate::paths::targetcli_reads`]),
//! and an op with any other is refused before targetcli runs; `desired` skips such
//! paths (`unsafe-path`) with this backend, so none is planned.
//!
//! Not the default: every targetcli run takes seconds (it refreshes its view of all
//! of configfs), it cannot choose LUN aliases or HBA numbers, and it needs D-Bus on
//! some distributions. It is kept as a fallback for hosts where writing configfs
//! directly is not wanted. Observing runs `saveconfig <temp file>` and reads it back;
//! saving after an observation with no command since writes that same dump, so a scan
//! runs `saveconfig` once when it changes nothing.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::configfs::check_backing_file;
use super::model::{Actual, Op};
use super::{saveconfig, LioError, Target};
use crate::paths;

/// Settings of the targetcli backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetcliSettings {
    /// The binary (`TARGETCLI_BIN` of the original, default `targetcli`).
    pub bin: PathBuf,
    pub iqn: String,
    pub tag: u32,
    pub mount: PathBuf,
    /// Where observe's temporary saveconfig dumps go.
    pub tmp_dir: PathBuf,
    /// How long one targetcli run may take before it is killed (COMMAND_TIMEOUT).
    pub timeout: Duration,
}

/// LIO through targetcli.
#[derive(Debug)]
pub struct TargetcliTarget {
    s: TargetcliSettings,
    /// The dump the last observation read, while no command has run since.
    observed: Mutex<Option<String>>,
}

impl TargetcliTarget {
    pub fn new(s: TargetcliSettings) -> Self {
        TargetcliTarget {
            s,
            observed: Mutex::new(None),
        }
    }

    fn observed(&self) -> MutexGuard<'_, Option<String>> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `targetcli <command>`.
    pub fn run(&self, command: &str) -> Result<String, LioError> {
        tracing::debug!(command, "targetcli");
        // Whatever it does, the last dump may no longer be LIO's state.
        self.observed().take();
        let out = output_within(Command::new(&self.s.bin).arg(command), self.s.timeout)
            .map_err(|e| LioError::Targetcli {
                command: command.to_string(),
                status: "not started".into(),
                stderr: e.to_string(),
            })?
            .ok_or_else(|| LioError::Targetcli {
                command: command.to_string(),
                status: format!(
                    "killed after {} s (COMMAND_TIMEOUT)",
                    self.s.timeout.as_secs()
                ),
                stderr: String::new(),
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // targetcli reports many errors on stdout with status 0 ("No such path", ...);
        // treat its error markers as failures too.
        let failed = !out.status.success()
            || stdout.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with("No such") || l.starts_with("Could not") || l.contains("Error")
            });
        if failed {
            return Err(LioError::Targetcli {
                command: command.to_string(),
                status: out.status.to_string(),
                stderr: format!("{}{}", String::from_utf8_lossy(&out.stderr), stdout)
                    .trim()
                    .to_string(),
            });
        }
        Ok(stdout)
    }

    fn tpg(&self) -> String {
        format!("/iscsi/{}/tpg{}", self.s.iqn, self.s.tag)
    }

    /// The command for one op (pure, for tests and logs); `None` when targetcli has
    /// nothing to do. Refused when a word of it would not reach targetcli as written.
    pub fn command(&self, op: &Op) -> Result<Option<String>, LioError> {
        let tpg = || -> Result<String, LioError> {
            node_path("target IQN", &self.s.iqn)?;
            Ok(self.tpg())
        };
        Ok(Some(match op {
            Op::CreateBackstore {
                at, path, serial, ..
            } => {
                paths::targetcli_safe_path(path).map_err(|reason| LioError::BackingFile {
                    path: path.clone(),
                    reason,
                })?;
                format!(
                    "/backstores/fileio create {} {} 0 false true {}",
                    word("backstore name", &at.name)?,
                    path.display(),
                    word("unit serial", serial)?
                )
            }
            Op::MapLun { lun, at, .. } => format!(
                "{}/luns create /backstores/fileio/{} lun={lun} add_mapped_luns=false",
                tpg()?,
                word("backstore name", &at.name)?
            ),
            Op::UnmapLun { lun, .. } => format!("{}/luns delete lun={lun}", tpg()?),
            Op::DeleteBackstore { at } => {
                format!(
                    "/backstores/fileio delete {}",
                    word("backstore name", &at.name)?
                )
            }
            // rtslib removes an object's HBA with it: never left empty by targetcli.
            Op::RemoveEmptyHba { .. } => return Ok(None),
            Op::EnableTpg => format!("{} enable", tpg()?),
            Op::DisableTpg => format!("{} disable", tpg()?),
        }))
    }

    /// `saveconfig` into a temporary file of `tmp_dir`, read back.
    fn dump(&self, what: &str) -> Result<String, LioError> {
        let tmp = self.s.tmp_dir.join(format!(
            "sbps-marshal-{what}-{}-{:?}.json",
            std::process::id(),
            std::thread::current().id()
        ));
        let result = self.saveconfig_to(&tmp).and_then(|_| {
            std::fs::read_to_string(&tmp).map_err(|e| LioError::from_io("read", &tmp, e))
        });
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// `saveconfig <file>` into `tmp_dir`, refused when targetcli would misread the file.
    fn saveconfig_to(&self, tmp: &Path) -> Result<String, LioError> {
        paths::targetcli_safe_path(tmp).map_err(|e| {
            LioError::Refused(format!(
                "temporary directory {} unusable with targetcli: {e}",
                self.s.tmp_dir.display()
            ))
        })?;
        self.run(&format!("saveconfig {}", tmp.display()))
    }
}

/// `s` as one targetcli parameter, or why it cannot be one.
fn word<'a>(what: &str, s: &'a str) -> Result<&'a str, LioError> {
    if !s.is_empty() && s.chars().all(paths::targetcli_reads) {
        Ok(s)
    } else {
        Err(LioError::Refused(format!(
            "{what} {s:?} cannot be passed to targetcli: it reads only ASCII letters, digits and {:?} as a parameter",
            paths::TARGETCLI_PUNCTUATION
        )))
    }
}

/// `s` as one component of a targetcli node path (`/iscsi/<iqn>/tpg1`), whose grammar
/// takes ASCII letters, digits, `:`, `_`, `.` and `-`.
fn node_path<'a>(what: &str, s: &'a str) -> Result<&'a str, LioError> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.-".contains(c))
    {
        Ok(s)
    } else {
        Err(LioError::Refused(format!(
            "{what} {s:?} cannot be passed to targetcli: a node path takes only ASCII letters, digits, ':', '_', '.' and '-'"
        )))
    }
}

impl Target for TargetcliTarget {
    /// `targetcli saveconfig` into a temporary file (unless the last observation's dump
    /// is still LIO's state: no command ran since), then the same write-if-changed (with
    /// backups) as the native backend, so a steady scan rewrites nothing.
    fn save_config(&self, path: &Path) -> Result<bool, LioError> {
        let observed = self.observed().take();
        let text = match observed {
            Some(text) => text,
            None => self.dump("save")?,
        };
        let doc = serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
            LioError::Refused(format!("targetcli saveconfig output is not JSON: {e}"))
        })?;
        saveconfig::write(path, &doc, saveconfig::MAX_BACKUPS)
    }

    fn observe(&self) -> Result<Actual, LioError> {
        let text = self.dump("observe")?;
        let saved = saveconfig::parse(&text).map_err(|detail| LioError::Saveconfig {
            path: self.s.tmp_dir.clone(),
            detail,
        })?;
        *self.observed() = Some(text);
        Ok(saved.to_actual(&self.s.iqn, self.s.tag))
    }

    fn execute(&self, op: &Op) -> Result<(), LioError> {
        // First the line, so that what is checked below is what targetcli will read.
        let command = self.command(op)?;
        if let Op::CreateBackstore { path, size, .. } = op {
            // targetcli also creates a missing file: check first, as the native backend does.
            check_backing_file(path, *size, &self.s.mount)?;
        }
        match command {
            Some(c) => self.run(&c).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Runs `cmd` to its end, or kills it at `timeout` (then `None`): a targetcli that hangs
/// (a D-Bus that never answers, a lock never released) must not hold the scan forever.
fn output_within(cmd: &mut Command, timeout: Duration) -> io::Result<Option<Output>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(Output {
                status,
                stdout: stdout.join().unwrap_or_default(),
                stderr: stderr.join().unwrap_or_default(),
            }));
        }
        let now = Instant::now();
        if now >= deadline {
            // The readers end when the pipes close; they are not waited for.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lio::BackstoreRef;
    use std::os::unix::fs::PermissionsExt;

    fn stand_in(dir: &Path, fixture: &Path) -> PathBuf {
        let script = dir.join("targetcli");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$#:$1\" >> {log}\ncase \"$1\" in\n  'saveconfig '*) cp {fixture} \"${{1#saveconfig }}\" ;;\n  *fail*) echo 'No such path /x'; exit 0 ;;\nesac\n",
                log = dir.join("argv.log").display(),
                fixture = fixture.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    #[test]
    fn runs_the_original_commands_and_observes_via_saveconfig() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/saveconfig-with-targetcli-lun.json");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        std::fs::write(mount.join("img"), vec![0u8; 4096]).unwrap();
        let t = TargetcliTarget::new(TargetcliSettings {
            bin: stand_in(dir.path(), &fixture),
            iqn: "iqn.2023-06.csm.iscsi:testhost".into(),
            tag: 1,
            mount: mount.clone(),
            tmp_dir: dir.path().to_path_buf(),
            timeout: Duration::from_secs(60),
        });
        let a = t.observe().unwrap();
        assert_eq!(a.backstores.len(), 3);
        assert_eq!(a.tpg.as_ref().unwrap().luns.len(), 3);
        let at = BackstoreRef::fileio(7, "a50dd52157e1636");
        let ops = [
            Op::CreateBackstore {
                at: at.clone(),
                path: mount.join("img"),
                size: 4096,
                serial: "a50dd52157e1636aaaaaaaaaaaaaaaa".into(),
            },
            Op::MapLun {
                lun: 9,
                at: at.clone(),
                alias: "x".into(),
            },
            Op::UnmapLun {
                lun: 9,
                serial: None,
            },
            Op::DeleteBackstore { at },
            Op::RemoveEmptyHba {
                plugin: "fileio".into(),
                hba: 7,
            },
            Op::DisableTpg,
            Op::EnableTpg,
        ];
        for op in &ops {
            t.execute(op).unwrap();
        }
        let log = std::fs::read_to_string(dir.path().join("argv.log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines[0].starts_with("1:saveconfig "));
        assert_eq!(
            &lines[1..],
            &[
                format!("1:/backstores/fileio create a50dd52157e1636 {}/img 0 false true a50dd52157e1636aaaaaaaaaaaaaaaa", mount.display()).as_str(),
                "1:/iscsi/iqn.2023-06.csm.iscsi:testhost/tpg1/luns create /backstores/fileio/a50dd52157e1636 lun=9 add_mapped_luns=false",
                "1:/iscsi/iqn.2023-06.csm.iscsi:testhost/tpg1/luns delete lun=9",
                "1:/backstores/fileio delete a50dd52157e1636",
                "1:/iscsi/iqn.2023-06.csm.iscsi:testhost/tpg1 disable",
                "1:/iscsi/iqn.2023-06.csm.iscsi:testhost/tpg1 enable",
            ]
        );
        // A wrong path never reaches targetcli (which would create the file).
        let e = t
            .execute(&Op::CreateBackstore {
                at: BackstoreRef::fileio(1, "b"),
                path: mount.join("typo"),
                size: 1,
                serial: "s".into(),
            })
            .unwrap_err();
        assert!(matches!(e, LioError::BackingFile { .. }));
        assert!(!mount.join("typo").exists());
        // targetcli's "No such path" on stdout with status 0 is a failure.
        let e = t.run("fail please").unwrap_err();
        assert!(matches!(e, LioError::Targetcli { .. }), "{e}");
    }

    #[test]
    fn a_targetcli_that_never_returns_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("targetcli");
        let pid_file = dir.path().join("pid");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho $$ > {}\nexec sleep 600\n",
                pid_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = TargetcliTarget::new(TargetcliSettings {
            bin: script,
            iqn: "iqn.2023-06.csm.iscsi:testhost".into(),
            tag: 1,
            mount: dir.path().to_path_buf(),
            tmp_dir: dir.path().to_path_buf(),
            timeout: Duration::from_secs(1),
        });
        let started = Instant::now();
        let e = t.execute(&Op::EnableTpg).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(
            e.to_string().contains("killed after 1 s (COMMAND_TIMEOUT)"),
            "{e}"
        );
        // The stand-in is gone, not left running.
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(!Path::new(&format!("/proc/{}", pid.trim())).exists());
    }
}
