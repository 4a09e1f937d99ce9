//! The LIO test rig: a target on the fake configfs (always) or on the kernel's (when
//! `SBPS_LIO_CONFIGFS` names its root), so the same tests hold both to one contract.
//! The LIO suites, the agent's scans and the hardening suite stand on it.
//!
//! Each [`Rig`] stands up its own target, TPG 1 and portal 127.0.0.1:3260, a fresh
//! directory of backing files (the "mount root") and a lock directory, and tears
//! all of it down again (also leftovers of an earlier, crashed run).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::FakeConfigfs;
use sbps_marshal::desired::{Desired, Kind as PKind, Projection};
use sbps_marshal::identity::Identity;
use sbps_marshal::lio::fs::{FileKind, Fs, RealFs};
use sbps_marshal::lio::{attr, Actual, ConfigfsSettings, ConfigfsTarget};
use sbps_marshal::plan::Policy;

pub const IQN: &str = "iqn.2023-06.csm.iscsi:contract";
pub const PORTAL: &str = "127.0.0.1:3260";
/// Prefix of every images directory, so teardown recognises leftovers.
pub const IMAGES_PREFIX: &str = "sbps-contract-";
pub const NOW: u64 = 1_700_000_000;

pub type DynFs = Arc<dyn Fs>;

pub struct Rig {
    pub fs: DynFs,
    pub root: PathBuf,
    pub real: bool,
    pub images: tempfile::TempDir,
    pub locks: tempfile::TempDir,
}

pub fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn ignore_missing(r: io::Result<()>) {
    if let Err(e) = r {
        if e.raw_os_error() != Some(libc::ENOENT) {
            eprintln!("teardown: {e}");
        }
    }
}

impl Rig {
    pub fn new() -> Rig {
        let (fs, root, real): (DynFs, PathBuf, bool) = match std::env::var_os("SBPS_LIO_CONFIGFS") {
            Some(r) => (Arc::new(RealFs), PathBuf::from(r), true),
            None => {
                let root = PathBuf::from("/fake/sys/kernel/config/target");
                (Arc::new(FakeConfigfs::new(root.clone())), root, false)
            }
        };
        let base = std::env::var_os("SBPS_LIO_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let images = tempfile::Builder::new()
            .prefix(IMAGES_PREFIX)
            .tempdir_in(base)
            .expect("images dir");
        let locks = tempfile::tempdir().expect("lock dir");
        let rig = Rig {
            fs,
            root,
            real,
            images,
            locks,
        };
        rig.teardown();
        rig.setup();
        rig
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn tpg(&self) -> PathBuf {
        self.p(&format!("iscsi/{IQN}/tpgt_1"))
    }

    fn mkdir_ok(&self, p: &Path) {
        match self.fs.mkdir(p) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => panic!("setup mkdir {}: {e}", p.display()),
        }
    }

    fn setup(&self) {
        self.mkdir_ok(&self.p("iscsi"));
        self.mkdir_ok(&self.p(&format!("iscsi/{IQN}")));
        self.mkdir_ok(&self.tpg());
        self.mkdir_ok(&self.tpg().join("np").join(PORTAL));
        for (a, v) in [
            ("authentication", "0"),
            ("generate_node_acls", "1"),
            ("demo_mode_write_protect", "1"),
            ("cache_dynamic_acls", "1"),
        ] {
            self.fs
                .write(&self.tpg().join("attrib").join(a), v)
                .unwrap_or_else(|e| panic!("setup attrib {a}: {e}"));
        }
    }

    /// Removes our target and every backstore whose file lies in an images dir of
    /// this suite (or has none: an interrupted create).
    pub fn teardown(&self) {
        let fs = &self.fs;
        let iscsi = self.p("iscsi");
        if let Ok(iqns) = fs.read_dir(&iscsi) {
            for t in iqns.iter().filter(|e| {
                e.kind == FileKind::Dir
                    && (e.name == IQN || e.name.starts_with("iqn.2023-06.csm.iscsi:testhost"))
            }) {
                let td = iscsi.join(&t.name);
                for g in fs.read_dir(&td).unwrap_or_default() {
                    if attr::parse_tpg_dir(&g.name).is_none() {
                        continue;
                    }
                    let gd = td.join(&g.name);
                    let _ = fs.write(&gd.join("enable"), "0");
                    for l in fs.read_dir(&gd.join("lun")).unwrap_or_default() {
                        let ld = gd.join("lun").join(&l.name);
                        for e in fs.read_dir(&ld).unwrap_or_default() {
                            if e.kind == FileKind::Symlink {
                                ignore_missing(fs.unlink(&ld.join(&e.name)));
                            }
                        }
                        ignore_missing(fs.rmdir(&ld));
                    }
                    for n in fs.read_dir(&gd.join("np")).unwrap_or_default() {
                        ignore_missing(fs.rmdir(&gd.join("np").join(&n.name)));
                    }
                    ignore_missing(fs.rmdir(&gd));
                }
                ignore_missing(fs.rmdir(&td));
            }
        }
        let core = self.p("core");
        for h in fs.read_dir(&core).unwrap_or_default() {
            if attr::parse_hba_dir(&h.name).is_none() {
                continue;
            }
            let hd = core.join(&h.name);
            for so in fs.read_dir(&hd).unwrap_or_default() {
                if so.kind != FileKind::Dir {
                    continue; // hba_info, hba_mode
                }
                let sd = hd.join(&so.name);
                let info = attr::parse_info(&fs.read(&sd.join("info")).unwrap_or_default());
                let ours = match &info.file {
                    None => true,
                    Some(f) => f.contains(IMAGES_PREFIX),
                };
                if ours {
                    ignore_missing(fs.rmdir(&sd));
                }
            }
            if fs
                .read_dir(&hd)
                .map(|v| v.iter().all(|e| e.kind != FileKind::Dir))
                .unwrap_or(false)
            {
                ignore_missing(fs.rmdir(&hd));
            }
        }
    }

    pub fn settings(&self) -> ConfigfsSettings {
        ConfigfsSettings {
            root: self.root.clone(),
            iqn: IQN.into(),
            tag: 1,
            mount: self.images.path().to_path_buf(),
            lock_dir: Some(self.locks.path().to_path_buf()),
            lock_timeout: sbps_marshal::lio::lock::DEFAULT_TIMEOUT,
        }
    }

    pub fn target(&self) -> ConfigfsTarget<DynFs> {
        ConfigfsTarget::new(self.fs.clone(), self.settings())
    }

    pub fn target_with<F: Fs>(&self, fs: F) -> ConfigfsTarget<F> {
        ConfigfsTarget::new(fs, self.settings())
    }

    /// A backing file of `size` bytes in the images dir.
    pub fn image(&self, rel: &str, size: u64) -> PathBuf {
        let p = self.images.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("image dir");
        }
        let f = std::fs::File::create(&p).expect("image");
        f.set_len(size).expect("image size");
        p
    }

    /// A PE projection named after `key` with a fresh image file.
    pub fn projection(&self, key: &str, size: u64) -> Projection {
        let identity = Identity::of_key(key);
        let object_key = format!("PE/{}.squashfs", identity.name);
        let path = self.image(&object_key, size);
        Projection {
            kind: PKind::Pe,
            key: key.to_string(),
            identity,
            object_key,
            path,
            size,
            etag: "etag".into(),
            image_id: None,
            image_name: None,
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            mount: self.images.path().to_path_buf(),
            grace_secs: 0,
            ..Policy::default()
        }
    }

    /// Files in the images dir (recursively), relative.
    pub fn image_files(&self) -> Vec<String> {
        fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else if let Ok(r) = p.strip_prefix(base) {
                    out.push(r.to_string_lossy().into_owned());
                }
            }
        }
        let mut v = Vec::new();
        walk(self.images.path(), self.images.path(), &mut v);
        v.sort();
        v
    }
}

/// [`Rig::new`]: a rig has no settings of its own; the environment picks the configfs.
impl Default for Rig {
    fn default() -> Rig {
        Rig::new()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.teardown();
    }
}

pub fn desired(ps: &[Projection]) -> Desired {
    Desired {
        projections: ps
            .iter()
            .map(|p| (p.identity.serial.clone(), p.clone()))
            .collect(),
        ..Desired::default()
    }
}

/// Sorted, so two observations compare equal regardless of listing order.
pub fn norm(mut a: Actual) -> Actual {
    a.backstores.sort_by(|x, y| x.at.cmp(&y.at));
    a
}

pub fn keys_of(v: &serde_json::Value) -> Vec<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

pub type Map = BTreeMap<String, String>;
