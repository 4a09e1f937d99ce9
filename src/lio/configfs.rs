//! The native backend: LIO through the kernel's configfs, the way rtslib does it.
//!
//! Layout (root `/sys/kernel/config/target`):
//! `core/<plugin>_<hba>/<name>/{control,udev_path,enable,info,wwn/vpd_unit_serial,attrib/*}`
//! and `iscsi/<iqn>/tpgt_<tag>/{enable,lun/lun_<N>/<alias> -> core/...}`.
//!
//! Observing lists only `core/`, each HBA and the TPG's `lun/` (a full-tree walk of
//! configfs with 500 LUNs takes seconds), and reads a backstore's attributes only when
//! the kernel cannot vouch that they are those read before (see `lio::seen`).
//! Every change takes the targetcli/rtslib lock files (see [`super::lock`]); hold
//! [`Target::lock`] for a whole apply.
//! Ops are safe to run in parallel: HBA directories are created idempotently and
//! a create that loses a race against the removal of an empty HBA retries.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::attr;
use super::fs::{FileKind, Fs, RealFs};
use super::layout::{self, Layout};
use super::lock::{LockGuard, Locker};
use super::model::{Actual, Backstore, BackstoreRef, Lun, Op, Tpg};
use super::seen::Seen;
use super::{LioError, OpResult, Target};
use crate::paths;

/// Where and what the backend manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigfsSettings {
    /// configfs target root, normally `/sys/kernel/config/target`.
    pub root: PathBuf,
    /// The iSCSI target IQN (created by csm-config, not by the agent).
    pub iqn: String,
    /// The TPG tag (1).
    pub tag: u32,
    /// Backing files must lie (after symlinks) inside this directory.
    pub mount: PathBuf,
    /// Where `targetcli.lock` and `rtslib_backstore.lock` live (`/var/run`);
    /// `None` takes no locks (a private fake in tests).
    pub lock_dir: Option<PathBuf>,
    /// How long to wait for those locks (LOCK_TIMEOUT).
    pub lock_timeout: Duration,
}

impl ConfigfsSettings {
    /// The production defaults for `iqn` and `mount`.
    pub(crate) fn new(iqn: &str, mount: &Path) -> ConfigfsSettings {
        ConfigfsSettings {
            root: PathBuf::from("/sys/kernel/config/target"),
            iqn: iqn.to_string(),
            tag: 1,
            mount: mount.to_path_buf(),
            lock_dir: Some(PathBuf::from("/var/run")),
            lock_timeout: super::lock::DEFAULT_TIMEOUT,
        }
    }
}

/// LIO through configfs, over any [`Fs`].
#[derive(Debug)]
pub struct ConfigfsTarget<F: Fs = RealFs> {
    fs: F,
    s: ConfigfsSettings,
    /// Where the objects are (from `s`).
    layout: Layout,
    locker: Locker,
    seen: Mutex<Seen>,
    /// saveconfig.json as last written (see [`super::saved`]).
    saved: Mutex<Option<super::saved::Document>>,
    /// Operations started so far, and how many had started when the observation `seen`
    /// holds began: when they differ, `seen` may not be the kernel's state.
    ops: AtomicU64,
    seen_after: AtomicU64,
}

impl ConfigfsTarget<RealFs> {
    /// The backend on the real configfs.
    pub fn real(s: ConfigfsSettings) -> Self {
        Self::new(RealFs, s)
    }
}

impl<F: Fs> ConfigfsTarget<F> {
    pub fn new(fs: F, s: ConfigfsSettings) -> Self {
        let locker = Locker::new(s.lock_dir.clone(), s.lock_timeout);
        let layout = Layout::new(&s.root, &s.iqn, s.tag);
        ConfigfsTarget {
            fs,
            s,
            layout,
            locker,
            seen: Mutex::default(),
            saved: Mutex::default(),
            ops: AtomicU64::new(0),
            seen_after: AtomicU64::new(u64::MAX),
        }
    }

    pub fn settings(&self) -> &ConfigfsSettings {
        &self.s
    }

    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Writes the live configfs into `path` in rtslib's saveconfig.json format (with
    /// targetcli's backups), only if the content changed. Returns whether it wrote.
    /// What the last observation vouches for is copied from the file last written, the
    /// rest dumped (see [`super::saved`]); after an operation it observes first.
    pub(crate) fn save_config(&self, path: &Path) -> Result<bool, LioError> {
        let _g = self.locker.acquire()?;
        if self.seen_after.load(Ordering::SeqCst) != self.ops.load(Ordering::SeqCst) {
            self.observe_locked()?;
        }
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let seen = self.seen();
        let (written, doc) = super::saved::save(&self.fs, &self.layout, &seen, saved.take(), path)?;
        *saved = doc;
        Ok(written)
    }

    fn core(&self) -> PathBuf {
        self.layout.core()
    }
    fn hba_dir(&self, plugin: &str, hba: u32) -> PathBuf {
        self.layout.hba_dir(plugin, hba)
    }
    fn so_dir(&self, at: &BackstoreRef) -> PathBuf {
        self.layout.so_dir(at)
    }
    /// `iscsi/<iqn>/tpgt_<tag>`.
    pub(crate) fn tpg_dir(&self) -> PathBuf {
        self.layout.tpg_dir().to_path_buf()
    }
    fn lun_dir(&self, lun: u64) -> PathBuf {
        self.layout.lun_dir(lun)
    }

    fn write(&self, what: &'static str, path: &Path, value: &str) -> Result<(), LioError> {
        tracing::trace!(path = %path.display(), value, "configfs write");
        self.fs
            .write(path, value)
            .map_err(|e| LioError::from_io(what, path, e))
    }

    fn read(&self, what: &'static str, path: &Path) -> Result<String, LioError> {
        self.fs
            .read(path)
            .map_err(|e| LioError::from_io(what, path, e))
    }

    // ----------------------------------------------------------------- observe

    fn seen(&self) -> MutexGuard<'_, Seen> {
        // A panic while it was held leaves at worst a stale entry that the next
        // comparison of inodes refuses: the memory stays usable.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe_locked(&self) -> Result<Actual, LioError> {
        self.seen_after.store(u64::MAX, Ordering::SeqCst);
        let ops = self.ops.load(Ordering::SeqCst);
        let actual = self.observe_unmarked()?;
        self.seen_after.store(ops, Ordering::SeqCst);
        Ok(actual)
    }

    fn observe_unmarked(&self) -> Result<Actual, LioError> {
        let mut actual = Actual::default();
        let core = self.core();
        let hbas = self
            .fs
            .read_dir(&core)
            .map_err(|e| LioError::from_io("list backstores", &core, e))?;
        let mut listed: Vec<(BackstoreRef, u64)> = Vec::new();
        for h in hbas.iter().filter(|e| e.kind == FileKind::Dir) {
            let Some((plugin, hba)) = attr::parse_hba_dir(&h.name) else {
                continue; // core/alua
            };
            let dir = core.join(&h.name);
            let sos = match self.fs.read_dir(&dir) {
                Ok(v) => v,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // vanished
                Err(e) => return Err(LioError::from_io("list HBA", &dir, e)),
            };
            actual.hbas.insert((plugin.clone(), hba));
            for so in sos.into_iter().filter(|e| e.kind == FileKind::Dir) {
                let at = BackstoreRef {
                    plugin: plugin.clone(),
                    hba,
                    name: so.name,
                };
                listed.push((at, so.ino));
            }
        }
        let mut seen = self.seen();
        seen.begin();
        let (tpg, links) = self.read_tpg(&mut seen)?;
        actual.tpg = tpg;
        actual.backstores.reserve(listed.len());
        for (at, ino) in listed {
            let links = links.get(&at).map_or(&[][..], Vec::as_slice);
            if let Some(b) = seen.backstore(&at, ino, links) {
                actual.backstores.push(b);
                continue;
            }
            match self.read_backstore(&at) {
                Ok(b) => {
                    seen.saw_backstore(ino, links, &b);
                    actual.backstores.push(b);
                }
                Err(LioError::NotFound { .. }) => {} // removed while we looked
                Err(e) => return Err(e),
            }
        }
        seen.end();
        Ok(actual)
    }

    fn read_backstore(&self, at: &BackstoreRef) -> Result<Backstore, LioError> {
        let dir = self.so_dir(at);
        let [info, udev, serial, enable] = super::fs::read_files(
            &self.fs,
            &dir,
            [
                ("read info", "info"),
                ("read udev_path", "udev_path"),
                ("read serial", "wwn/vpd_unit_serial"),
                ("read enable", "enable"),
            ],
        )?;
        let info = attr::parse_info(&info);
        let udev = udev.trim_end_matches('\n');
        let serial = attr::parse_serial(&serial);
        let enabled = attr::parse_flag(&enable).unwrap_or(false);
        // The kernel opens `fd_dev_name` (info's File:); udev_path is only what
        // rtslib wrote for display. Prefer the truth, fall back for other plugins.
        let dev = info
            .file
            .clone()
            .or_else(|| (!udev.is_empty()).then(|| udev.to_string()))
            .map(PathBuf::from);
        Ok(Backstore {
            at: at.clone(),
            dev,
            size: info.size,
            serial,
            enabled,
            write_back: info.buffered,
        })
    }

    /// The TPG, and the inodes of its links by the backstore each links (sorted).
    #[allow(clippy::type_complexity)]
    fn read_tpg(
        &self,
        seen: &mut Seen,
    ) -> Result<(Option<Tpg>, FxHashMap<BackstoreRef, Vec<u64>>), LioError> {
        let mut links: FxHashMap<BackstoreRef, Vec<u64>> = FxHashMap::default();
        let tpg = self.tpg_dir();
        let enable = match self.fs.read(&tpg.join("enable")) {
            Ok(s) => attr::parse_flag(&s).unwrap_or(false),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                seen.keep_luns(|_| false);
                return Ok((None, links));
            }
            Err(e) => return Err(LioError::from_io("read TPG enable", &tpg, e)),
        };
        let lun_root = self.layout.luns_dir();
        let mut luns = std::collections::BTreeMap::new();
        let entries = self
            .fs
            .read_dir(&lun_root)
            .map_err(|e| LioError::from_io("list LUNs", &lun_root, e))?;
        for e in entries.iter().filter(|e| e.kind == FileKind::Dir) {
            let Some(index) = attr::parse_lun_dir(&e.name) else {
                continue;
            };
            let dir = lun_root.join(&e.name);
            let inner = match self.fs.read_dir(&dir) {
                Ok(v) => v,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(LioError::from_io("list LUN", &dir, e)),
            };
            let mut lun = Lun {
                index,
                alias: None,
                backstore: None,
            };
            let link = inner.iter().find(|e| e.kind == FileKind::Symlink);
            if link.is_none() {
                seen.forget_lun(index);
            }
            if let Some(link) = link {
                lun.backstore = match seen.lun(index, e.ino, link.ino, &link.name) {
                    Some(b) => b,
                    None => {
                        let p = dir.join(&link.name);
                        let target = self
                            .fs
                            .readlink(&p)
                            .map_err(|e| LioError::from_io("read LUN link", &p, e))?;
                        let b = attr::parse_link_target(&target);
                        seen.saw_lun(index, e.ino, link.ino, &link.name, b.as_ref());
                        b
                    }
                };
                if let Some(b) = &lun.backstore {
                    links.entry(b.clone()).or_default().push(link.ino);
                }
                lun.alias = Some(link.name.clone());
            }
            luns.insert(index, lun);
        }
        seen.keep_luns(|i| luns.contains_key(&i));
        for v in links.values_mut() {
            v.sort_unstable();
        }
        let tpg = Tpg {
            iqn: self.s.iqn.clone(),
            tag: self.s.tag,
            enabled: enable,
            luns,
        };
        Ok((Some(tpg), links))
    }

    /// [`Target::observe_after`]: when every op of `applied` succeeded and no other ran
    /// since the observation `before`, that observation with the ops' effects (the model
    /// the contract suite holds the kernel to), each object an op made read back, and the
    /// memory of observations brought up to date. Otherwise a whole observation.
    /// A change behind the backend's back meanwhile is in the next scan's observation.
    fn refresh(&self, before: Actual, applied: &[OpResult]) -> Result<Actual, LioError> {
        let since = self.seen_after.load(Ordering::SeqCst);
        let ops = self.ops.load(Ordering::SeqCst);
        let ours = since != u64::MAX && ops.checked_sub(since) == Some(applied.len() as u64);
        if !ours || applied.iter().any(|r| r.result.is_err()) {
            return self.observe_locked();
        }
        let mut after = before;
        let creates = applied
            .iter()
            .filter(|r| matches!(r.op, Op::CreateBackstore { .. }));
        after.backstores.reserve_exact(creates.count());
        let mut seen = self.seen();
        let mut lun_dirs: Option<Vec<super::fs::Entry>> = None;
        for r in applied {
            after.apply(&r.op);
            match &r.op {
                Op::CreateBackstore { at, .. } => {
                    let hba = self.hba_dir(&at.plugin, at.hba);
                    let listed = self
                        .fs
                        .read_dir(&hba)
                        .map_err(|e| LioError::from_io("list HBA", &hba, e))?;
                    let ino = listed.iter().find(|e| e.name == at.name).map(|e| e.ino);
                    let b = self.read_backstore(at)?;
                    seen.saw_backstore(ino.unwrap_or(0), &[], &b);
                    // `after.apply` put it last (a create that found it there failed).
                    if let Some(m) = after.backstores.last_mut().filter(|x| &x.at == at) {
                        *m = b;
                    }
                }
                Op::DeleteBackstore { at } => seen.forget_backstore(at),
                Op::MapLun { lun, at, alias } => {
                    let lun_root = self.layout.luns_dir();
                    if lun_dirs.is_none() {
                        let v = self
                            .fs
                            .read_dir(&lun_root)
                            .map_err(|e| LioError::from_io("list LUNs", &lun_root, e))?;
                        lun_dirs = Some(v);
                    }
                    let name = layout::lun_dir_name(*lun);
                    let dir = lun_dirs.iter().flatten().find(|e| e.name == name);
                    let path = lun_root.join(&name);
                    let inner = self
                        .fs
                        .read_dir(&path)
                        .map_err(|e| LioError::from_io("list LUN", &path, e))?;
                    let link = inner.iter().find(|e| e.kind == FileKind::Symlink);
                    match (dir, link) {
                        (Some(d), Some(l)) if &l.name == alias => {
                            seen.saw_lun(*lun, d.ino, l.ino, alias, Some(at))
                        }
                        _ => seen.forget_lun(*lun),
                    }
                }
                Op::UnmapLun { lun, .. } => seen.forget_lun(*lun),
                Op::RemoveEmptyHba { .. } | Op::EnableTpg | Op::DisableTpg => {}
            }
        }
        // In the order an observation lists them (by HBA directory name, then name).
        after
            .backstores
            .sort_by_cached_key(|b| (b.at.hba_dir(), b.at.name.clone()));
        self.seen_after.store(ops, Ordering::SeqCst);
        Ok(after)
    }

    // ----------------------------------------------------------------- execute

    fn create_backstore(
        &self,
        at: &BackstoreRef,
        path: &Path,
        size: u64,
        serial: &str,
    ) -> Result<(), LioError> {
        attr::check_name(&at.name).map_err(LioError::Refused)?;
        if at.plugin != "fileio" {
            return Err(LioError::Refused(format!(
                "only fileio backstores are created, not {at}"
            )));
        }
        let path_str = path.to_str().ok_or_else(|| LioError::BackingFile {
            path: path.to_path_buf(),
            reason: "not valid UTF-8".into(),
        })?;
        attr::check_control_path(path_str).map_err(|reason| LioError::BackingFile {
            path: path.to_path_buf(),
            reason,
        })?;
        if serial.is_empty() || serial.len() > 254 || serial.contains(['\n', '\0']) {
            return Err(LioError::Refused(format!(
                "unusable unit serial {serial:?}"
            )));
        }
        let hba = self.hba_dir(&at.plugin, at.hba);
        let so = self.so_dir(at);
        // mkdir HBA (idempotent) → mkdir SO; a parallel removal of the then-empty
        // HBA between the two makes the second ENOENT: create the HBA again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fs.mkdir(&hba) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(LioError::from_io("create HBA", &hba, e)),
            }
            match self.fs.mkdir(&so) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && attempt < 3 => continue,
                Err(e) => {
                    let err = LioError::from_io("create backstore", &so, e);
                    if !matches!(err, LioError::Exists { .. }) {
                        self.remove_hba_if_empty(&hba);
                    }
                    return Err(err);
                }
            }
        }
        let configure = || -> Result<(), LioError> {
            self.write(
                "configure backstore",
                &so.join("control"),
                &format!("fd_dev_name={path_str},fd_dev_size={size}"),
            )?;
            self.write("set udev_path", &so.join("udev_path"), path_str)?;
            self.write(
                "set unit serial",
                &so.join("wwn").join("vpd_unit_serial"),
                serial,
            )?;
            self.write(
                "set emulate_model_alias",
                &so.join("attrib").join("emulate_model_alias"),
                "1",
            )?;
            // Immediately before enable: LIO opens the file O_RDWR|O_CREAT, so a
            // wrong path would silently become a new empty file.
            check_backing_file(path, size, &self.s.mount)?;
            self.write("enable backstore", &so.join("enable"), "1")
        };
        if let Err(e) = configure() {
            tracing::warn!(backstore = %at, error = %e, "create failed; rolling back");
            if let Err(re) = self.fs.rmdir(&so) {
                tracing::warn!(path = %so.display(), error = %re, "rollback: cannot remove backstore");
            }
            self.remove_hba_if_empty(&hba);
            return Err(e);
        }
        Ok(())
    }

    fn remove_hba_if_empty(&self, hba: &Path) {
        match self.fs.rmdir(hba) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::ENOENT)) => {}
            Err(e) => {
                tracing::warn!(path = %hba.display(), error = %e, "cannot remove HBA directory")
            }
        }
    }

    fn map_lun(&self, lun: u64, at: &BackstoreRef, alias: &str) -> Result<(), LioError> {
        if alias.is_empty() || alias.contains('/') || alias == "." || alias == ".." {
            return Err(LioError::Refused(format!("unusable LUN alias {alias:?}")));
        }
        let dir = self.lun_dir(lun);
        let created = match self.fs.mkdir(&dir) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // An empty lun_N left by an interrupted create is reused.
                let inner = self
                    .fs
                    .read_dir(&dir)
                    .map_err(|e| LioError::from_io("list LUN", &dir, e))?;
                if inner.iter().any(|e| e.kind == FileKind::Symlink) {
                    return Err(LioError::Exists {
                        what: "map LUN (already linked)",
                        path: dir,
                    });
                }
                false
            }
            Err(e) => return Err(LioError::from_io("create LUN", &dir, e)),
        };
        let link = dir.join(alias);
        if let Err(e) = self.fs.symlink(&self.so_dir(at), &link) {
            if created {
                if let Err(re) = self.fs.rmdir(&dir) {
                    tracing::warn!(path = %dir.display(), error = %re, "rollback: cannot remove LUN directory");
                }
            }
            return Err(LioError::from_io("link LUN", &link, e));
        }
        Ok(())
    }

    fn unmap_lun(&self, lun: u64, serial: Option<&str>) -> Result<(), LioError> {
        let dir = self.lun_dir(lun);
        let inner = self
            .fs
            .read_dir(&dir)
            .map_err(|e| LioError::from_io("list LUN", &dir, e))?;
        for link in inner.iter().filter(|e| e.kind == FileKind::Symlink) {
            let p = dir.join(&link.name);
            if let Some(want) = serial {
                // The plan was made from an earlier observation: never unmap a LUN
                // that meanwhile carries something else.
                let target = self
                    .fs
                    .readlink(&p)
                    .map_err(|e| LioError::from_io("read LUN link", &p, e))?;
                if let Some(at) = attr::parse_link_target(&target) {
                    let sp = self.so_dir(&at).join("wwn").join("vpd_unit_serial");
                    let have = attr::parse_serial(&self.read("read serial", &sp)?);
                    if have.as_deref() != Some(want) {
                        return Err(LioError::Refused(format!(
                            "LUN {lun} now links {at} (serial {have:?}), not serial {want}; not unmapping"
                        )));
                    }
                }
            }
            self.fs
                .unlink(&p)
                .map_err(|e| LioError::from_io("unlink LUN", &p, e))?;
        }
        self.fs
            .rmdir(&dir)
            .map_err(|e| LioError::from_io("remove LUN", &dir, e))
    }

    fn delete_backstore(&self, at: &BackstoreRef) -> Result<(), LioError> {
        let so = self.so_dir(at);
        self.fs
            .rmdir(&so)
            .map_err(|e| LioError::from_io("delete backstore", &so, e))?;
        self.remove_hba_if_empty(&self.hba_dir(&at.plugin, at.hba));
        Ok(())
    }

    fn set_tpg_enabled(&self, on: bool) -> Result<(), LioError> {
        let p = self.tpg_dir().join("enable");
        let now = attr::parse_flag(&self.read("read TPG enable", &p)?);
        if now == Some(on) {
            return Ok(());
        }
        self.write(
            if on { "enable TPG" } else { "disable TPG" },
            &p,
            if on { "1" } else { "0" },
        )
    }
}

/// Rule 6 of the design, checked right before `enable`: `path` is `<mount>/<key>`
/// and the key names, on the mount, a regular file of exactly `size` bytes, by the same
/// check the inventory's mount answers come from ([`crate::inventory::mount::check`]):
/// one name (no empty, `.` or `..` segment), inside the mount root, no symlink between
/// the key and its file (that would be another key's file).
pub fn check_backing_file(path: &Path, size: u64, mount: &Path) -> Result<(), LioError> {
    use crate::inventory::MountEntry;
    let bad = |reason: String| LioError::BackingFile {
        path: path.to_path_buf(),
        reason,
    };
    let key = paths::key_under(path, mount)
        .ok_or_else(|| bad(format!("not under the mount root {}", mount.display())))?;
    let root = std::fs::canonicalize(mount)
        .map_err(|e| bad(format!("mount root {} unusable: {e}", mount.display())))?;
    match crate::inventory::mount::check(&root, key) {
        MountEntry::File { size: have } if have == size => Ok(()),
        MountEntry::File { size: have } => Err(bad(format!(
            "has {have} bytes, expected {size} (upload in progress?)"
        ))),
        MountEntry::Missing => Err(bad(
            "does not exist (the kernel would create an empty file there)".into(),
        )),
        MountEntry::NotRegular => Err(bad("is not a regular file".into())),
        MountEntry::Outside(why) | MountEntry::Indirect(why) => Err(bad(why)),
        MountEntry::Error(why) => Err(bad(format!("cannot resolve: {why}"))),
    }
}

impl<F: Fs> Target for ConfigfsTarget<F> {
    fn save_config(&self, path: &Path) -> Result<bool, LioError> {
        ConfigfsTarget::save_config(self, path)
    }

    fn observe(&self) -> Result<Actual, LioError> {
        let _g = self.locker.acquire()?;
        self.observe_locked()
    }

    fn execute(&self, op: &Op) -> Result<(), LioError> {
        let _g = self.locker.acquire()?;
        self.ops.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(%op, "configfs");
        match op {
            Op::CreateBackstore {
                at,
                path,
                size,
                serial,
            } => self.create_backstore(at, path, *size, serial),
            Op::MapLun { lun, at, alias } => self.map_lun(*lun, at, alias),
            Op::UnmapLun { lun, serial } => self.unmap_lun(*lun, serial.as_deref()),
            Op::DeleteBackstore { at } => self.delete_backstore(at),
            Op::RemoveEmptyHba { plugin, hba } => {
                let p = self.hba_dir(plugin, *hba);
                self.fs
                    .rmdir(&p)
                    .map_err(|e| LioError::from_io("remove HBA", &p, e))
            }
            Op::EnableTpg => self.set_tpg_enabled(true),
            Op::DisableTpg => self.set_tpg_enabled(false),
        }
    }

    fn lock(&self) -> Result<LockGuard, LioError> {
        self.locker.acquire()
    }

    fn observe_after(&self, before: Actual, applied: &[OpResult]) -> Result<Actual, LioError> {
        let _g = self.locker.acquire()?;
        self.refresh(before, applied)
    }
}
