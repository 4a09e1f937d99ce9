//! An in-memory configfs that behaves like the kernel's LIO target tree.
//!
//! It reproduces what lio-kernel-observed.md records for Linux 6.1, so the
//! contract suite can run everywhere and the VM run proves the fake right:
//!
//! * `mkdir core/<plugin>_<N>` creates an HBA; `mkdir core/<hba>/<name>` creates a
//!   storage object with its attribute files and the observed initial values;
//! * `control` is write-only (EACCES on read) and parses `fd_dev_name`,
//!   `fd_dev_size`, `fd_buffered_io`; unknown keys are ignored;
//! * `enable` ← 1 opens the backing file on the **host** filesystem
//!   O_RDWR|O_CREAT (a missing file in an existing directory is really created,
//!   a missing directory is ENOENT), EEXIST when already enabled, EINVAL without
//!   name/size and for any other value;
//! * `wwn/vpd_unit_serial` reads `T10 VPD Unit Serial Number: <s>`, EINVAL while
//!   exported, EOVERFLOW above 254 bytes; `emulate_model_alias`/`block_size`
//!   refuse changes while exported;
//! * LUN links: ENODEV for a not enabled backstore, EFAULT for a non-backstore,
//!   EEXIST for a second link in one `lun_N`; `lun_N` naming (EINVAL otherwise);
//! * rmdir: EBUSY for a linked backstore, ENOTEMPTY for a `lun_N` with its link,
//!   an HBA with devices, a TPG with LUNs/portals;
//! * TPG `enable`, portals (`ip:port`, unique across TPGs of a target), LUN
//!   statistics files (`read_mbytes`, `in_cmds`, ...).
//!
//! Fault injection lives in [`crate::faults::Faulty`], which wraps this or the real fs.

use std::collections::BTreeMap;
use std::io;

use rustc_hash::FxHashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use sbps_marshal::lio::attr;
use sbps_marshal::lio::fs::{Entry, FileKind, Fs, Meta};

type Key = Vec<String>;

#[derive(Debug, Clone)]
enum Node {
    /// `user`: made by mkdir (removable by rmdir), not a default group.
    Dir {
        user: bool,
        ino: u64,
    },
    File {
        value: String,
        mode: u32,
    },
    Link {
        target: Key,
        ino: u64,
    },
}

/// State of one storage object beyond its plain attribute files.
#[derive(Debug, Clone, Default)]
struct Dev {
    name: Option<String>,
    size: Option<u64>,
    buffered: bool,
    enabled: bool,
    exports: u32,
    serial: String,
}

#[derive(Debug, Default)]
struct State {
    nodes: FxHashMap<Key, Node>,
    /// What each directory lists (kind and inode by name): a readdir without a walk of
    /// the tree, as cheap as the kernel's.
    kids: FxHashMap<Key, BTreeMap<String, (FileKind, u64)>>,
    devs: BTreeMap<Key, Dev>,
    hba_count: u32,
    /// The last inode number handed out (configfs: `get_next_ino()` for directories and
    /// links, which keep theirs; a fresh `iunique()` for attribute files at each listing).
    last_ino: u64,
}

/// The fake configfs; `root` plays `/sys/kernel/config/target`.
#[derive(Debug)]
pub struct FakeConfigfs {
    root: PathBuf,
    st: Mutex<State>,
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn k(parts: &[&str]) -> Key {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Storage object attributes: (name, initial value, writable).
const SO_ATTRIBS: &[(&str, &str, bool)] = &[
    ("alua_support", "1", true),
    ("block_size", "0", true),
    ("emulate_3pc", "1", true),
    ("emulate_caw", "1", true),
    ("emulate_dpo", "1", true),
    ("emulate_fua_read", "1", true),
    ("emulate_fua_write", "1", true),
    ("emulate_model_alias", "0", true),
    ("emulate_pr", "1", true),
    ("emulate_rest_reord", "0", true),
    ("emulate_tas", "1", true),
    ("emulate_tpu", "0", true),
    ("emulate_tpws", "0", true),
    ("emulate_ua_intlck_ctrl", "0", true),
    ("emulate_write_cache", "0", true),
    ("enforce_pr_isids", "1", true),
    ("force_pr_aptpl", "0", true),
    ("hw_block_size", "0", false),
    ("hw_max_sectors", "0", false),
    ("hw_pi_prot_type", "0", false),
    ("hw_queue_depth", "0", false),
    ("is_nonrot", "0", true),
    ("max_unmap_block_desc_count", "1", true),
    ("max_unmap_lba_count", "8192", true),
    ("max_write_same_len", "4096", true),
    ("optimal_sectors", "16384", true),
    ("pgr_support", "1", true),
    ("pi_prot_format", "0", true),
    ("pi_prot_type", "0", true),
    ("pi_prot_verify", "0", true),
    ("queue_depth", "0", true),
    ("unmap_granularity", "1", true),
    ("unmap_granularity_alignment", "0", true),
    ("unmap_zeroes_data", "0", true),
];

const ALUA_TG_PT_GP: &[(&str, &str, bool)] = &[
    ("alua_access_state", "0", true),
    ("alua_access_status", "None", true),
    ("alua_access_type", "Implicit and Explicit", true),
    ("alua_support_active_nonoptimized", "1", true),
    ("alua_support_active_optimized", "1", true),
    ("alua_support_lba_dependent", "0", false),
    ("alua_support_offline", "1", true),
    ("alua_support_standby", "1", true),
    ("alua_support_transitioning", "1", true),
    ("alua_support_unavailable", "1", true),
    ("alua_write_metadata", "0", true),
    ("implicit_trans_secs", "0", true),
    ("members", "", false),
    ("nonop_delay_msecs", "100", true),
    ("preferred", "0", true),
    ("tg_pt_gp_id", "0", false),
    ("trans_delay_msecs", "0", true),
];

const WWN: &[(&str, &str, bool)] = &[
    ("company_id", "0x001405", true),
    ("product_id", "FILEIO", true),
    ("revision", "4.0", true),
    ("vendor_id", "LIO-ORG", true),
    ("vpd_assoc_logical_unit", "", false),
    ("vpd_assoc_scsi_target_device", "", false),
    ("vpd_assoc_target_port", "", false),
    ("vpd_protocol_identifier", "", false),
];

const PR: &[&str] = &[
    "res_aptpl_active",
    "res_aptpl_metadata",
    "res_holder",
    "res_pr_all_tgt_pts",
    "res_pr_generation",
    "res_pr_holder_tg_port",
    "res_pr_registered_i_pts",
    "res_pr_type",
    "res_type",
];

/// TPG attributes and their kernel defaults; the boolean ones reject values other than 0/1.
const TPG_ATTRIBS: &[(&str, &str, bool)] = &[
    ("authentication", "1", true),
    ("cache_dynamic_acls", "0", true),
    ("default_cmdsn_depth", "64", false),
    ("default_erl", "0", false),
    ("demo_mode_discovery", "1", true),
    ("demo_mode_write_protect", "1", true),
    ("fabric_prot_type", "0", false),
    ("generate_node_acls", "0", true),
    ("login_keys_workaround", "1", true),
    ("login_timeout", "15", false),
    ("netif_timeout", "2", false),
    ("prod_mode_write_protect", "0", true),
    ("t10_pi", "0", true),
    ("tpg_enabled_sendtargets", "1", true),
];

const TPG_PARAMS: &[(&str, &str)] = &[
    ("AuthMethod", "CHAP,None"),
    ("DataDigest", "CRC32C,None"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("DefaultTime2Retain", "20"),
    ("DefaultTime2Wait", "2"),
    ("ErrorRecoveryLevel", "0"),
    ("FirstBurstLength", "65536"),
    ("HeaderDigest", "CRC32C,None"),
    ("IFMarkInt", "Reject"),
    ("IFMarker", "No"),
    ("ImmediateData", "Yes"),
    ("InitialR2T", "Yes"),
    ("MaxBurstLength", "262144"),
    ("MaxConnections", "1"),
    ("MaxOutstandingR2T", "1"),
    ("MaxRecvDataSegmentLength", "8192"),
    ("MaxXmitDataSegmentLength", "262144"),
    ("OFMarkInt", "Reject"),
    ("OFMarker", "No"),
    ("TargetAlias", "LIO Target"),
];

const LUN_STATS: &[&str] = &[
    "hs_in_cmds",
    "in_cmds",
    "indx",
    "inst",
    "name",
    "port_index",
    "read_mbytes",
    "write_mbytes",
];

impl State {
    fn next_ino(&mut self) -> u64 {
        self.last_ino += 1;
        self.last_ino
    }

    /// Adds a node, listed in its parent.
    fn put(&mut self, key: Key, node: Node) {
        if let Some((name, parent)) = key.split_last() {
            let listed = match &node {
                Node::Dir { ino, .. } => (FileKind::Dir, *ino),
                Node::File { .. } => (FileKind::File, 0),
                Node::Link { ino, .. } => (FileKind::Symlink, *ino),
            };
            let siblings = match self.kids.get_mut(parent) {
                Some(v) => v,
                None => self.kids.entry(parent.to_vec()).or_default(),
            };
            siblings.insert(name.clone(), listed);
        }
        self.nodes.insert(key, node);
    }

    /// Removes a node (not its subtree) and its listing.
    fn take(&mut self, key: &Key) {
        self.nodes.remove(key);
        self.kids.remove(key);
        if let Some((name, parent)) = key.split_last() {
            if let Some(siblings) = self.kids.get_mut(parent) {
                siblings.remove(name);
            }
        }
    }

    fn dir(&mut self, key: Key, user: bool) {
        let ino = self.next_ino();
        self.put(key, Node::Dir { user, ino });
    }

    fn file(&mut self, mut key: Key, name: &str, value: &str, mode: u32) {
        key.push(name.to_string());
        self.put(
            key,
            Node::File {
                value: value.to_string(),
                mode,
            },
        );
    }

    fn sub(&mut self, base: &Key, name: &str) -> Key {
        let mut key = base.clone();
        key.push(name.to_string());
        self.dir(key.clone(), false);
        key
    }

    /// The entries of directory `key`, in name order.
    fn children<'a>(
        &'a self,
        key: &Key,
    ) -> impl Iterator<Item = (&'a String, (FileKind, u64))> + 'a {
        self.kids
            .get(key)
            .into_iter()
            .flat_map(|m| m.iter().map(|(n, e)| (n, *e)))
    }

    /// Every node below `key` (not `key` itself), depth first.
    fn below(&self, key: &Key) -> Vec<Key> {
        let mut out = Vec::new();
        let mut todo = vec![key.clone()];
        while let Some(dir) = todo.pop() {
            for (name, (kind, _)) in self.children(&dir) {
                let mut child = dir.clone();
                child.push(name.clone());
                if kind == FileKind::Dir {
                    todo.push(child.clone());
                }
                out.push(child);
            }
        }
        out
    }

    fn has_user_dir_below(&self, key: &Key) -> bool {
        self.below(key)
            .iter()
            .any(|k| matches!(self.nodes.get(k), Some(Node::Dir { user: true, .. })))
    }

    fn has_link_below(&self, key: &Key) -> bool {
        self.below(key)
            .iter()
            .any(|k| matches!(self.nodes.get(k), Some(Node::Link { .. })))
    }

    fn remove_subtree(&mut self, key: &Key) {
        for d in self.below(key) {
            self.take(&d);
        }
        self.take(key);
    }

    fn is_so(&self, key: &Key) -> bool {
        key.len() == 3 && key[0] == "core" && self.devs.contains_key(key)
    }

    fn make_hba(&mut self, key: Key, plugin: &str) {
        self.hba_count += 1;
        let info = format!(
            "HBA Index: {} plugin: {plugin} version: v5.0\n",
            self.hba_count
        );
        self.dir(key.clone(), true);
        self.file(key.clone(), "hba_info", &info, 0o444);
        self.file(key, "hba_mode", "0\n", 0o644);
    }

    fn make_so(&mut self, key: Key) {
        self.dir(key.clone(), true);
        for (f, v, m) in [
            ("action", "", 0o200),
            ("alias", "", 0o644),
            (
                "alua_lu_gp",
                "LU Group Alias: default_lu_gp\nLU Group ID: 0\n",
                0o644,
            ),
            ("control", "", 0o200),
            ("enable", "", 0o644),
            ("info", "", 0o444),
            ("lba_map", "", 0o644),
            ("udev_path", "", 0o644),
        ] {
            self.file(key.clone(), f, v, m);
        }
        let alua = self.sub(&key, "alua");
        let gp = self.sub(&alua, "default_tg_pt_gp");
        for (f, v, w) in ALUA_TG_PT_GP {
            self.file(
                gp.clone(),
                f,
                &format!("{v}\n"),
                if *w { 0o644 } else { 0o444 },
            );
        }
        let at = self.sub(&key, "attrib");
        for (f, v, w) in SO_ATTRIBS {
            self.file(
                at.clone(),
                f,
                &format!("{v}\n"),
                if *w { 0o644 } else { 0o444 },
            );
        }
        let pr = self.sub(&key, "pr");
        for f in PR {
            self.file(pr.clone(), f, "0\n", 0o444);
        }
        let st = self.sub(&key, "statistics");
        for d in ["scsi_dev", "scsi_lu", "scsi_tgt_dev"] {
            self.sub(&st, d);
        }
        let wwn = self.sub(&key, "wwn");
        for (f, v, w) in WWN {
            self.file(
                wwn.clone(),
                f,
                &format!("{v}\n"),
                if *w { 0o644 } else { 0o444 },
            );
        }
        self.file(wwn, "vpd_unit_serial", "", 0o644);
        self.devs.insert(key, Dev::default());
    }

    fn make_tpg(&mut self, key: Key) {
        self.dir(key.clone(), true);
        for d in ["acls", "auth", "lun", "np"] {
            self.sub(&key, d);
        }
        let at = self.sub(&key, "attrib");
        for (f, v, _) in TPG_ATTRIBS {
            self.file(at.clone(), f, &format!("{v}\n"), 0o644);
        }
        let pa = self.sub(&key, "param");
        for (f, v) in TPG_PARAMS {
            self.file(pa.clone(), f, &format!("{v}\n"), 0o644);
        }
        self.file(key.clone(), "enable", "0\n", 0o644);
        self.file(key, "dynamic_sessions", "", 0o444);
    }

    fn make_lun(&mut self, key: Key) {
        self.dir(key.clone(), true);
        self.file(
            key.clone(),
            "alua_tg_pt_gp",
            "TG Port Alua Group: default_tg_pt_gp\nTG Port Group ID: 0\n",
            0o644,
        );
        self.file(key.clone(), "alua_tg_pt_offline", "0\n", 0o644);
        self.file(key.clone(), "alua_tg_pt_status", "0\n", 0o644);
        self.file(key.clone(), "alua_tg_pt_write_md", "0\n", 0o644);
        let st = self.sub(&key, "statistics");
        for d in ["scsi_port", "scsi_transport"] {
            self.sub(&st, d);
        }
        let tp = self.sub(&st, "scsi_tgt_port");
        for f in LUN_STATS {
            self.file(tp.clone(), f, "0\n", 0o444);
        }
    }

    fn info(&self, dev: &Dev) -> String {
        let (qd, bs, hms) = if dev.enabled {
            (128, 512, 16384)
        } else {
            (0, 0, 0)
        };
        format!(
            "Status: {}  Max Queue Depth: {qd}  SectorSize: {bs}  HwMaxSectors: {hms}\n        TCM FILEIO ID: 0        File: {}  Size: {}  Mode: {} Async: 0\n",
            if dev.exports > 0 { "ACTIVATED" } else { "DEACTIVATED" },
            dev.name.as_deref().unwrap_or(""),
            dev.size.unwrap_or(0),
            if dev.buffered { "Buffered-WCE" } else { "O_DSYNC" },
        )
    }
}

impl FakeConfigfs {
    /// An empty target tree (`core/`, `core/alua`, `dbroot`, `version`) at `root`.
    pub fn new(root: impl Into<PathBuf>) -> FakeConfigfs {
        let mut st = State::default();
        st.dir(Vec::new(), false);
        let core = st.sub(&Vec::new(), "core");
        let alua = st.sub(&core, "alua");
        st.sub(&alua, "lu_gps");
        st.file(Vec::new(), "dbroot", "/etc/target\n", 0o644);
        st.file(
            Vec::new(),
            "version",
            "Target Engine Core ConfigFS Infrastructure v5.0 on Linux/x86_64 on 6.1.0 (fake)\n",
            0o444,
        );
        FakeConfigfs {
            root: root.into(),
            st: Mutex::new(st),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn key(&self, p: &Path) -> io::Result<Key> {
        let rel = p.strip_prefix(&self.root).map_err(|_| err(libc::ENOENT))?;
        let mut key = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => key.push(s.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => return Err(err(libc::EINVAL)),
            }
        }
        Ok(key)
    }

    fn state(&self) -> io::Result<std::sync::MutexGuard<'_, State>> {
        self.st
            .lock()
            .map_err(|_| io::Error::other("fake configfs state poisoned"))
    }

    /// Resolves a link target (absolute inside the root, or relative to `base`).
    fn resolve(&self, target: &Path, base: &Key) -> io::Result<Key> {
        if target.is_absolute() {
            // A link out of configfs is refused by the kernel.
            return self.key(target).map_err(|_| err(libc::EPERM));
        }
        let mut key = base.clone();
        for c in target.components() {
            match c {
                Component::ParentDir => {
                    key.pop().ok_or_else(|| err(libc::ENOENT))?;
                }
                Component::Normal(s) => key.push(s.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => return Err(err(libc::EINVAL)),
            }
        }
        Ok(key)
    }

    fn mkdir_key(st: &mut State, key: Key) -> io::Result<()> {
        let parent = key[..key.len().saturating_sub(1)].to_vec();
        match st.nodes.get(&parent) {
            Some(Node::Dir { .. }) => {}
            Some(_) => return Err(err(libc::ENOTDIR)),
            None => return Err(err(libc::ENOENT)),
        }
        if st.nodes.contains_key(&key) {
            return Err(err(libc::EEXIST));
        }
        let s: Vec<&str> = key.iter().map(String::as_str).collect();
        match s.as_slice() {
            ["core", hba] => match attr::parse_hba_dir(hba) {
                Some((plugin, _)) if attr::PLUGINS.contains(&plugin.as_str()) => {
                    st.make_hba(key.clone(), &plugin);
                    Ok(())
                }
                _ => Err(err(libc::EINVAL)),
            },
            ["core", hba, _name] if attr::parse_hba_dir(hba).is_some() => {
                st.make_so(key);
                Ok(())
            }
            ["iscsi"] => {
                st.dir(key.clone(), true);
                st.sub(&key, "discovery_auth");
                st.file(
                    key,
                    "lio_version",
                    "Datera Inc. iSCSI Target v4.1.0\n",
                    0o444,
                );
                Ok(())
            }
            ["iscsi", _iqn] => {
                st.dir(key.clone(), true);
                st.sub(&key, "fabric_statistics");
                let pa = st.sub(&key, "param");
                st.file(pa, "cmd_completion_affinity", "-1\n", 0o644);
                Ok(())
            }
            ["iscsi", _iqn, tpgt] => {
                if attr::parse_tpg_dir(tpgt).is_none() {
                    return Err(err(libc::EINVAL));
                }
                st.make_tpg(key);
                Ok(())
            }
            ["iscsi", iqn, tpgt, "np", portal] => {
                if attr::parse_portal(portal).is_none() {
                    return Err(err(libc::EINVAL));
                }
                let tpgs: Vec<Key> = st
                    .children(&k(&["iscsi", iqn]))
                    .filter(|(name, _)| name.as_str() != *tpgt && name.starts_with("tpgt_"))
                    .map(|(name, _)| k(&["iscsi", iqn, name]))
                    .collect();
                for t in tpgs {
                    let mut np = t.clone();
                    np.push("np".into());
                    np.push(portal.to_string());
                    if st.nodes.contains_key(&np) {
                        return Err(err(libc::EINVAL));
                    }
                }
                st.dir(key.clone(), true);
                st.file(key.clone(), "iser", "0\n", 0o644);
                st.file(key, "cxgbit", "0\n", 0o644);
                Ok(())
            }
            ["iscsi", _iqn, _tpgt, "lun", lun] => {
                if attr::parse_lun_dir(lun).is_none() {
                    return Err(err(libc::EINVAL));
                }
                st.make_lun(key);
                Ok(())
            }
            ["iscsi", _iqn, _tpgt, "acls", _initiator] => {
                st.dir(key.clone(), true);
                for d in ["attrib", "auth", "param"] {
                    st.sub(&key, d);
                }
                Ok(())
            }
            _ => Err(err(libc::EPERM)),
        }
    }

    fn rmdir_key(st: &mut State, key: Key) -> io::Result<()> {
        match st.nodes.get(&key) {
            Some(Node::Dir { user: true, .. }) => {}
            Some(Node::Dir { user: false, .. }) => return Err(err(libc::EPERM)),
            Some(_) => return Err(err(libc::ENOTDIR)),
            None => return Err(err(libc::ENOENT)),
        }
        if st.is_so(&key) {
            if st.devs.get(&key).is_some_and(|d| d.exports > 0) {
                return Err(err(libc::EBUSY));
            }
            st.devs.remove(&key);
        } else if st.has_user_dir_below(&key) || st.has_link_below(&key) {
            return Err(err(libc::ENOTEMPTY));
        }
        st.remove_subtree(&key);
        Ok(())
    }

    fn write_key(st: &mut State, key: &Key, data: &str) -> io::Result<()> {
        match st.nodes.get(key) {
            Some(Node::File { mode, .. }) if mode & 0o200 == 0 => return Err(err(libc::EACCES)),
            Some(Node::File { .. }) => {}
            Some(Node::Dir { .. }) => return Err(err(libc::EISDIR)),
            Some(Node::Link { .. }) => return Err(err(libc::EISDIR)),
            None => return Err(err(libc::ENOENT)),
        }
        let v = data.trim_end_matches('\n');
        let s: Vec<&str> = key.iter().map(String::as_str).collect();
        let so = key.get(..3).map(|x| x.to_vec()).unwrap_or_default();
        let store = |st: &mut State, value: String| {
            if let Some(Node::File { value: old, .. }) = st.nodes.get_mut(key) {
                *old = value;
            }
        };
        match s.as_slice() {
            ["core", _, _, "control"] => {
                let dev = st.devs.get_mut(&so).ok_or_else(|| err(libc::ENOENT))?;
                for tok in data.split([',', '\n']) {
                    let Some((kk, vv)) = tok.split_once('=') else {
                        continue;
                    };
                    match kk.trim() {
                        "fd_dev_name" => dev.name = Some(vv.to_string()),
                        "fd_dev_size" => {
                            dev.size = Some(vv.trim().parse().map_err(|_| err(libc::EINVAL))?)
                        }
                        "fd_buffered_io" => {
                            if vv.trim() != "1" {
                                return Err(err(libc::EINVAL));
                            }
                            dev.buffered = true;
                        }
                        _ => {} // the kernel ignores unknown keys
                    }
                }
                Ok(())
            }
            ["core", _, _, "enable"] => {
                let dev = st.devs.get(&so).cloned().ok_or_else(|| err(libc::ENOENT))?;
                if v.trim() != "1" {
                    return Err(err(libc::EINVAL));
                }
                if dev.enabled {
                    return Err(err(libc::EEXIST));
                }
                let Some(name) = dev.name.clone() else {
                    return Err(err(libc::EINVAL));
                };
                let is_blk = std::fs::metadata(&name).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_block_device()
                });
                if dev.size.is_none() && !is_blk {
                    return Err(err(libc::EINVAL));
                }
                // What fd_configure_device does: filp_open(O_RDWR|O_CREAT|O_LARGEFILE|O_DSYNC).
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&name)?;
                if let Some(d) = st.devs.get_mut(&so) {
                    d.enabled = true;
                }
                let mut set = |attrname: &str, val: &str| {
                    let mut kk = so.clone();
                    kk.push("attrib".into());
                    kk.push(attrname.into());
                    if let Some(Node::File { value, .. }) = st.nodes.get_mut(&kk) {
                        *value = format!("{val}\n");
                    }
                };
                set("block_size", "512");
                set("hw_block_size", "512");
                set("hw_max_sectors", "16384");
                set("hw_queue_depth", "128");
                set("queue_depth", "128");
                if dev.buffered {
                    set("emulate_write_cache", "1");
                }
                Ok(())
            }
            ["core", _, _, "wwn", "vpd_unit_serial"] => {
                let dev = st.devs.get_mut(&so).ok_or_else(|| err(libc::ENOENT))?;
                if dev.exports > 0 {
                    return Err(err(libc::EINVAL));
                }
                if v.len() > 254 {
                    return Err(err(libc::EOVERFLOW));
                }
                dev.serial = v.trim().to_string();
                Ok(())
            }
            ["core", _, _, "attrib", a @ ("emulate_model_alias" | "block_size")] => {
                if st.devs.get(&so).is_some_and(|d| d.exports > 0) {
                    return Err(err(libc::EINVAL));
                }
                if *a == "emulate_model_alias" && !matches!(v.trim(), "0" | "1") {
                    return Err(err(libc::EINVAL));
                }
                store(st, format!("{}\n", v.trim()));
                Ok(())
            }
            ["core", _, _, "udev_path"] => {
                store(st, format!("{v}\n"));
                Ok(())
            }
            ["iscsi", _, _, "enable"] => match v.trim() {
                "0" | "1" => {
                    store(st, format!("{}\n", v.trim()));
                    Ok(())
                }
                _ => Err(err(libc::EINVAL)),
            },
            ["iscsi", _, _, "attrib", a] => {
                let boolean = TPG_ATTRIBS.iter().any(|(n, _, b)| n == a && *b);
                if boolean && !matches!(v.trim(), "0" | "1") {
                    return Err(err(libc::EINVAL));
                }
                if v.trim().parse::<i64>().is_err() {
                    return Err(err(libc::EINVAL));
                }
                store(st, format!("{}\n", v.trim()));
                Ok(())
            }
            _ => {
                store(st, format!("{v}\n"));
                Ok(())
            }
        }
    }
}

impl Fs for FakeConfigfs {
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        let key = self.key(p)?;
        if key.is_empty() {
            return Err(err(libc::EEXIST));
        }
        Self::mkdir_key(&mut *self.state()?, key)
    }

    fn rmdir(&self, p: &Path) -> io::Result<()> {
        let key = self.key(p)?;
        Self::rmdir_key(&mut *self.state()?, key)
    }

    fn read(&self, p: &Path) -> io::Result<String> {
        let key = self.key(p)?;
        let st = self.state()?;
        let (value, mode) = match st.nodes.get(&key) {
            Some(Node::File { value, mode }) => (value, *mode),
            Some(_) => return Err(err(libc::EISDIR)),
            None => return Err(err(libc::ENOENT)),
        };
        if mode & 0o400 == 0 {
            return Err(err(libc::EACCES));
        }
        let s: Vec<&str> = key.iter().map(String::as_str).collect();
        let dev = key.get(..3).and_then(|so| st.devs.get(so));
        Ok(match (s.as_slice(), dev) {
            (["core", _, _, "info"], Some(d)) => st.info(d),
            (["core", _, _, "enable"], Some(d)) => format!("{}\n", u8::from(d.enabled)),
            (["core", _, _, "wwn", "vpd_unit_serial"], Some(d)) => {
                format!("T10 VPD Unit Serial Number: {}\n", d.serial)
            }
            _ => value.clone(),
        })
    }

    fn write(&self, p: &Path, data: &str) -> io::Result<()> {
        let key = self.key(p)?;
        Self::write_key(&mut *self.state()?, &key, data)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        let lkey = self.key(link)?;
        let mut st = self.state()?;
        let parent = lkey[..lkey.len().saturating_sub(1)].to_vec();
        let ps: Vec<&str> = parent.iter().map(String::as_str).collect();
        match st.nodes.get(&parent) {
            Some(Node::Dir { .. }) => {}
            Some(_) => return Err(err(libc::ENOTDIR)),
            None => return Err(err(libc::ENOENT)),
        }
        if !matches!(ps.as_slice(), ["iscsi", _, _, "lun", _]) {
            return Err(err(libc::EPERM));
        }
        if st.nodes.contains_key(&lkey) {
            return Err(err(libc::EEXIST));
        }
        let tkey = self.resolve(target, &parent)?;
        match st.nodes.get(&tkey) {
            Some(Node::Dir { .. }) => {}
            Some(_) => return Err(err(libc::EFAULT)),
            None => return Err(err(libc::ENOENT)),
        }
        if !st.is_so(&tkey) {
            return Err(err(libc::EFAULT));
        }
        if st.has_link_below(&parent) {
            return Err(err(libc::EEXIST));
        }
        let dev = st.devs.get_mut(&tkey).ok_or_else(|| err(libc::EFAULT))?;
        if !dev.enabled {
            return Err(err(libc::ENODEV));
        }
        dev.exports += 1;
        let ino = st.next_ino();
        st.put(lkey, Node::Link { target: tkey, ino });
        Ok(())
    }

    fn readlink(&self, p: &Path) -> io::Result<PathBuf> {
        let key = self.key(p)?;
        let st = self.state()?;
        match st.nodes.get(&key) {
            Some(Node::Link { target, .. }) => {
                let mut out = PathBuf::new();
                for _ in 0..key.len().saturating_sub(1) {
                    out.push("..");
                }
                for c in target {
                    out.push(c);
                }
                Ok(out)
            }
            Some(_) => Err(err(libc::EINVAL)),
            None => Err(err(libc::ENOENT)),
        }
    }

    fn unlink(&self, p: &Path) -> io::Result<()> {
        let key = self.key(p)?;
        let mut st = self.state()?;
        let target = match st.nodes.get(&key) {
            Some(Node::Link { target, .. }) => target.clone(),
            Some(Node::Dir { .. }) => return Err(err(libc::EISDIR)),
            Some(Node::File { .. }) => return Err(err(libc::EPERM)),
            None => return Err(err(libc::ENOENT)),
        };
        st.take(&key);
        if let Some(d) = st.devs.get_mut(&target) {
            d.exports = d.exports.saturating_sub(1);
        }
        Ok(())
    }

    fn read_dir(&self, p: &Path) -> io::Result<Vec<Entry>> {
        let key = self.key(p)?;
        let mut st = self.state()?;
        match st.nodes.get(&key) {
            Some(Node::Dir { .. }) => {}
            Some(_) => return Err(err(libc::ENOTDIR)),
            None => return Err(err(libc::ENOENT)),
        }
        let mut v: Vec<Entry> = st
            .children(&key)
            .map(|(name, (kind, ino))| Entry {
                name: name.clone(),
                kind,
                ino,
            })
            .collect();
        for e in v.iter_mut().filter(|e| e.kind == FileKind::File) {
            e.ino = st.next_ino();
        }
        Ok(v)
    }

    fn metadata(&self, p: &Path) -> io::Result<Meta> {
        let key = self.key(p)?;
        let st = self.state()?;
        match st.nodes.get(&key) {
            Some(Node::Dir { .. }) => Ok(Meta {
                kind: FileKind::Dir,
                mode: 0o755,
            }),
            Some(Node::File { mode, .. }) => Ok(Meta {
                kind: FileKind::File,
                mode: *mode,
            }),
            Some(Node::Link { .. }) => Ok(Meta {
                kind: FileKind::Symlink,
                mode: 0o777,
            }),
            None => Err(err(libc::ENOENT)),
        }
    }
}
