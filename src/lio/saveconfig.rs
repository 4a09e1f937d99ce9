//! rtslib's `saveconfig.json`: a writer that dumps the live configfs, and a lenient
//! reader that turns a file back into the model.
//!
//! `target.service` (`targetctl restore`) rebuilds LIO from this file at boot and
//! ops tooling reads it, so the writer follows rtslib's `RTSRoot.dump()` and
//! `save_to_file`: sorted keys, indent 2, ASCII escapes, trailing newline, mode
//! 0600, temp + fsync + rename + directory fsync; before replacing the file, the
//! previous one is gzipped into `backup/saveconfig-YYYYmmdd-HH:MM:SS-json.gz`
//! when it differs from the newest backup, keeping the newest `MAX_BACKUPS`, as
//! targetcli does. Nothing is written when the content did not change, so a
//! steady scan touches no file.
//!
//! The reader never panics on malformed input (it is fuzzed): unusable entries are
//! skipped, only a document that is not a JSON object is an error.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::attr;
use super::fs::{read_files, Entry, FileKind, Fs};
use super::layout;
use super::model::{Actual, Backstore, BackstoreRef, Lun, Tpg};
use super::savefile::{self, Segment};
use super::LioError;

/// targetcli's default `max_backup_files`.
pub(crate) const MAX_BACKUPS: usize = 10;

/// rtslib's `alua_types` / `alua_statuses`: the kernel shows names, the file stores indexes.
const ALUA_TYPES: [&str; 4] = ["None", "Implicit", "Explicit", "Implicit and Explicit"];
const ALUA_STATUSES: [&str; 3] = [
    "None",
    "Altered by Explicit STPG",
    "Altered by Implicit ALUA",
];
/// rtslib's `alua_rw_params`, then `tg_pt_gp_id`: what is dumped of an ALUA group with
/// its `name`.
const ALUA_FILES: [&str; 15] = [
    "alua_access_state",
    "alua_access_status",
    "alua_write_metadata",
    "alua_access_type",
    "preferred",
    "nonop_delay_msecs",
    "trans_delay_msecs",
    "implicit_trans_secs",
    "alua_support_offline",
    "alua_support_standby",
    "alua_support_transitioning",
    "alua_support_active_nonoptimized",
    "alua_support_unavailable",
    "alua_support_active_optimized",
    "tg_pt_gp_id",
];

// ------------------------------------------------------------------------ dump

fn io<'a>(what: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> LioError + 'a {
    move |e| LioError::from_io(what, p, e)
}

fn read<F: Fs + ?Sized>(fs: &F, p: &Path) -> Result<String, LioError> {
    fs.read(p).map_err(io("read", p))
}

/// Every file of `dir` that is readable and writable by its owner (rtslib's rule
/// for `attributes`), as ints when numeric.
fn rw_files<F: Fs + ?Sized>(
    fs: &F,
    dir: &Path,
    numeric: bool,
) -> Result<Map<String, Value>, LioError> {
    let mut m = Map::new();
    let files = match fs.read_owner_rw(dir) {
        Ok(v) => v,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(m),
        Err(e) => return Err(LioError::from_io("list", dir, e)),
    };
    for (name, text) in files {
        let v = text.map_err(|e| LioError::from_io("read", &dir.join(&name), e))?;
        let v = if numeric {
            attr::attr_value(&v)
        } else {
            Value::from(v.trim_end_matches('\n'))
        };
        m.insert(name, v);
    }
    Ok(m)
}

fn dump_alua<F: Fs + ?Sized>(fs: &F, so: &Path) -> Result<Vec<Value>, LioError> {
    let dir = so.join("alua");
    let mut out = Vec::new();
    let Ok(groups) = fs.read_dir(&dir) else {
        return Ok(out);
    };
    for g in groups.iter().filter(|e| e.kind == FileKind::Dir) {
        let gd = dir.join(&g.name);
        let mut m = Map::new();
        m.insert("name".into(), Value::from(g.name.clone()));
        // A group gone meanwhile is dumped by its name alone, as each file unread.
        let texts = fs.read_each(&gd, &ALUA_FILES).unwrap_or_default();
        for (f, raw) in ALUA_FILES.iter().zip(texts) {
            let Ok(raw) = raw else {
                continue;
            };
            let t = raw.trim();
            let v = match *f {
                "alua_access_type" => ALUA_TYPES
                    .iter()
                    .position(|n| *n == t)
                    .map_or_else(|| attr::attr_value(t), Value::from),
                "alua_access_status" => ALUA_STATUSES
                    .iter()
                    .position(|n| *n == t)
                    .map_or_else(|| attr::attr_value(t), Value::from),
                _ => attr::attr_value(t),
            };
            m.insert((*f).to_string(), v);
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

/// One storage object as rtslib dumps it.
pub(crate) fn dump_so<F: Fs + ?Sized>(
    fs: &F,
    dir: &Path,
    at: &BackstoreRef,
) -> Result<Value, LioError> {
    let mut m = Map::new();
    m.insert("plugin".into(), Value::from(at.plugin.clone()));
    m.insert("name".into(), Value::from(at.name.clone()));
    let attributes = rw_files(fs, &dir.join("attrib"), true)?;
    // `info` is dumped for fileio only: another plugin's object is not read for it.
    const SERIAL: (&str, &str) = ("read", "wwn/vpd_unit_serial");
    const UDEV: (&str, &str) = ("read", "udev_path");
    let (serial, udev, info) = if at.plugin == "fileio" {
        let [serial, udev, info] = read_files(fs, dir, [SERIAL, UDEV, ("read", "info")])?;
        (serial, udev, Some(info))
    } else {
        let [serial, udev] = read_files(fs, dir, [SERIAL, UDEV])?;
        (serial, udev, None)
    };
    if let Some(s) = attr::parse_serial(&serial) {
        m.insert("wwn".into(), Value::from(s));
    }
    let udev = udev.trim_end_matches('\n');
    if let Some(info) = info {
        let info = attr::parse_info(&info);
        let dev = if udev.is_empty() {
            info.file.clone().unwrap_or_default()
        } else {
            udev.to_string()
        };
        m.insert("dev".into(), Value::from(dev));
        m.insert("size".into(), Value::from(info.size.unwrap_or(0)));
        // rtslib: write_back is the emulate_write_cache attribute.
        let wb = attributes.get("emulate_write_cache") == Some(&json!(1));
        m.insert("write_back".into(), Value::from(wb));
        m.insert("aio".into(), Value::from(info.aio));
    } else if !udev.is_empty() {
        m.insert("dev".into(), Value::from(udev));
    }
    m.insert("attributes".into(), Value::Object(attributes));
    m.insert("alua_tpgs".into(), Value::Array(dump_alua(fs, dir)?));
    Ok(Value::Object(m))
}

/// One LUN of a TPG read from its `lun_N` entry in `lun_root`: its link and its entry
/// in the file, or `None` for one rtslib cannot restore (empty, or linking no backstore).
pub(crate) fn dump_lun<F: Fs + ?Sized>(
    fs: &F,
    lun_root: &Path,
    e: &Entry,
) -> Result<Option<(DumpedLun, Value)>, LioError> {
    let Some(index) = attr::parse_lun_dir(&e.name) else {
        return Ok(None);
    };
    let ld = lun_root.join(&e.name);
    let inner = fs.read_dir(&ld).map_err(io("list", &ld))?;
    let Some(link) = inner.iter().find(|e| e.kind == FileKind::Symlink) else {
        return Ok(None); // an empty lun_N cannot be restored
    };
    let target = fs
        .readlink(&ld.join(&link.name))
        .map_err(io("readlink", &ld))?;
    let Some(at) = attr::parse_link_target(&target) else {
        return Ok(None);
    };
    let gp = fs
        .read(&ld.join("alua_tg_pt_gp"))
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default_tg_pt_gp".into());
    let v = json!({
        "index": index,
        "storage_object": format!("/backstores/{}/{}", attr::backstore_segment(&at.plugin), at.name),
        "alias": link.name,
        "alua_tg_pt_gp_name": gp,
    });
    let lun = DumpedLun {
        dir: e.ino,
        link: link.ino,
        lun: Lun {
            index,
            alias: Some(link.name.clone()),
            backstore: Some(at),
        },
    };
    Ok(Some((lun, v)))
}

/// A LUN as [`dump_lun`] read it, with the inodes of its directory and link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DumpedLun {
    pub(crate) dir: u64,
    pub(crate) link: u64,
    pub(crate) lun: Lun,
}

/// A TPG's LUNs in the order rtslib dumps them (by number), each handed to `each` as
/// it is read: thousands of LUNs are not all held as JSON trees at once.
pub(crate) fn dump_luns<F: Fs + ?Sized, T>(
    fs: &F,
    tpg_dir: &Path,
    mut each: impl FnMut(DumpedLun, Value) -> T,
) -> Result<Vec<T>, LioError> {
    let lun_root = tpg_dir.join("lun");
    let mut entries = fs.read_dir(&lun_root).map_err(io("list", &lun_root))?;
    entries.sort_by_key(|e| attr::parse_lun_dir(&e.name));
    let mut luns = Vec::new();
    for e in &entries {
        if let Some((d, v)) = dump_lun(fs, &lun_root, e)? {
            luns.push(each(d, v));
        }
    }
    Ok(luns)
}

/// One TPG; its `luns` are read, or `given` (see [`dump_targets`]).
fn dump_tpg<F: Fs + ?Sized>(
    fs: &F,
    dir: &Path,
    tag: u32,
    given: Option<Value>,
) -> Result<Value, LioError> {
    let enable = attr::parse_flag(&read(fs, &dir.join("enable"))?).unwrap_or(false);
    let luns = match given {
        Some(v) => v,
        None => Value::Array(dump_luns(fs, dir, |_, v| v)?),
    };
    let mut portals = Vec::new();
    let np = dir.join("np");
    for e in fs.read_dir(&np).map_err(io("list", &np))? {
        let Some((ip, port)) = attr::parse_portal(&e.name) else {
            continue;
        };
        let flag = |f: &str| {
            fs.read(&np.join(&e.name).join(f))
                .ok()
                .and_then(|s| attr::parse_flag(&s))
                .unwrap_or(false)
        };
        portals.push(json!({"ip_address": ip, "port": port, "iser": flag("iser"), "offload": flag("cxgbit")}));
    }
    let mut acls = Vec::new();
    let ad = dir.join("acls");
    for e in fs.read_dir(&ad).unwrap_or_default() {
        if e.kind == FileKind::Dir {
            acls.push(json!({
                "node_wwn": e.name,
                "attributes": rw_files(fs, &ad.join(&e.name).join("attrib"), true)?,
                "mapped_luns": [],
            }));
        }
    }
    Ok(json!({
        "tag": tag,
        "enable": enable,
        "attributes": rw_files(fs, &dir.join("attrib"), true)?,
        "parameters": rw_files(fs, &dir.join("param"), false)?,
        "luns": luns,
        "portals": portals,
        "node_acls": acls,
    }))
}

/// Every storage object under `core/`, in rtslib's order (by plugin, HBA, name).
pub(crate) fn dump_objects<F: Fs + ?Sized>(fs: &F, root: &Path) -> Result<Vec<Value>, LioError> {
    find_objects(fs, root)?
        .iter()
        .map(|o| dump_so(fs, &o.dir, &o.at))
        .collect()
}

/// A storage object of [`find_objects`], not dumped yet.
pub(crate) struct FoundObject {
    pub(crate) at: BackstoreRef,
    /// The inode of its directory.
    pub(crate) ino: u64,
    /// Its directory, as listed (the HBA's directory name is not rebuilt from its number).
    pub(crate) dir: PathBuf,
}

/// The storage objects under `core/` in [`dump_objects`]' order, without their
/// attributes: a caller that dumps each when it writes it holds one object's text at a
/// time, not 5,000 (the pieces of a whole dump were the agent's peak memory).
pub(crate) fn find_objects<F: Fs + ?Sized>(
    fs: &F,
    root: &Path,
) -> Result<Vec<FoundObject>, LioError> {
    let mut found = Vec::new();
    let core = layout::core_dir(root);
    for h in fs.read_dir(&core).map_err(io("list", &core))? {
        let Some((plugin, hba)) = attr::parse_hba_dir(&h.name) else {
            continue;
        };
        let hd = core.join(&h.name);
        for s in fs.read_dir(&hd).map_err(io("list", &hd))? {
            if s.kind != FileKind::Dir {
                continue;
            }
            let dir = hd.join(&s.name);
            let at = BackstoreRef {
                plugin: plugin.clone(),
                hba,
                name: s.name,
            };
            found.push(FoundObject {
                at,
                ino: s.ino,
                dir,
            });
        }
    }
    found.sort_by(|a, b| a.at.cmp(&b.at));
    Ok(found)
}

/// The iSCSI targets; the LUNs of TPG `tag` of target `iqn` are `given` instead of read
/// when `managed` says so (what [`super::saved`] splices in).
pub(crate) fn dump_targets<F: Fs + ?Sized>(
    fs: &F,
    root: &Path,
    mut managed: Option<(&str, u32, Value)>,
) -> Result<Vec<Value>, LioError> {
    let mut targets = Vec::new();
    let iscsi = layout::iscsi_dir(root);
    if let Ok(iqns) = fs.read_dir(&iscsi) {
        for t in iqns
            .iter()
            .filter(|e| e.kind == FileKind::Dir && e.name != "discovery_auth")
        {
            let td = iscsi.join(&t.name);
            let mut tpgs = Vec::new();
            for g in fs.read_dir(&td).map_err(io("list", &td))? {
                if let Some(tag) = attr::parse_tpg_dir(&g.name) {
                    let given = match &managed {
                        Some((iqn, m, _)) if *iqn == t.name && *m == tag => {
                            managed.take().map(|(_, _, v)| v)
                        }
                        _ => None,
                    };
                    tpgs.push(dump_tpg(fs, &td.join(&g.name), tag, given)?);
                }
            }
            targets.push(json!({
                "fabric": "iscsi",
                "wwn": t.name,
                "tpgs": tpgs,
                "parameters": rw_files(fs, &td.join("param"), false)?,
            }));
        }
    }
    Ok(targets)
}

/// The document of `objects` and `targets`.
pub(crate) fn document(objects: Vec<Value>, targets: Vec<Value>) -> Value {
    json!({
        "fabric_modules": [],
        "storage_objects": objects,
        "targets": targets,
    })
}

/// Dumps the whole live configfs under `root` (as targetcli's `saveconfig` does:
/// it never merges). Only the iSCSI fabric is dumped.
pub fn dump<F: Fs + ?Sized>(fs: &F, root: &Path) -> Result<Value, LioError> {
    let objects = dump_objects(fs, root)?;
    let targets = dump_targets(fs, root, None)?;
    Ok(document(objects, targets))
}

/// Python's `json.dumps(sort_keys=True, indent=2)` + newline: serde_json's maps are
/// sorted and its pretty printer indents by 2; non-ASCII is escaped like Python's
/// default `ensure_ascii`.
pub fn to_text(doc: &Value) -> String {
    let s = serde_json::to_string_pretty(doc).unwrap_or_else(|_| "{}".into());
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out.push('\n');
    out
}

/// Writes `doc` to `path` if its text differs from the file's, backing up the
/// previous file first (the same writer as every save: `lio::savefile`). Returns
/// whether it wrote.
pub fn write(path: &Path, doc: &Value, max_backups: usize) -> Result<bool, LioError> {
    let text = to_text(doc);
    let state = std::collections::hash_map::RandomState::new();
    let written = savefile::write(path, &[Segment::Text(&text)], None, &state, max_backups)?;
    Ok(written.is_some_and(|w| w.changed))
}

fn backup_dir(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new(".")).join("backup")
}

/// Existing backups, oldest first (their names sort by time).
pub(crate) fn backups(path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(backup_dir(path))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("saveconfig-") && n.ends_with("-json.gz"))
        })
        .collect();
    v.sort();
    v
}

/// Whether the newest backup holds exactly the `len` bytes of the file at `path`
/// (targetcli then makes none): the size in its gzip trailer tells most differences
/// before either is read.
pub(crate) fn newest_backup_holds(path: &Path, len: u64) -> std::io::Result<bool> {
    let Some(newest) = backups(path).last().cloned() else {
        return Ok(false);
    };
    if gzip_size(&newest)? != Some(len & 0xffff_ffff) {
        return Ok(false);
    }
    let mut content = Vec::with_capacity(len as usize);
    let readable = flate2::read::GzDecoder::new(fs::File::open(&newest)?)
        .read_to_end(&mut content)
        .is_ok();
    Ok(readable && content == fs::read(path)?)
}

/// Writes the gzipped previous file `gz` as the newest backup, keeping the newest `max`.
pub(crate) fn store_backup(path: &Path, gz: &[u8], max: usize) -> std::io::Result<()> {
    let dir = backup_dir(path);
    fs::create_dir_all(&dir)?;
    let name = format!("saveconfig-{}-json.gz", local_timestamp());
    crate::atomic_file::write(&dir.join(name), gz)?;
    let all = backups(path);
    for p in all.iter().take(all.len().saturating_sub(max)) {
        fs::remove_file(p)?;
    }
    Ok(())
}

/// The uncompressed size (modulo 2^32) a gzip file's trailer records.
fn gzip_size(gz: &Path) -> std::io::Result<Option<u64>> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(gz)?;
    let mut isize = [0u8; 4];
    if f.seek(SeekFrom::End(-4)).is_err() || f.read_exact(&mut isize).is_err() {
        return Ok(None);
    }
    Ok(Some(u64::from(u32::from_le_bytes(isize))))
}

/// `YYYYmmdd-HH:MM:SS` in local time, as targetcli names its backups.
fn local_timestamp() -> String {
    // SAFETY: time(NULL) and localtime_r on stack values we own.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return format!("{t}");
        }
        format!(
            "{:04}{:02}{:02}-{:02}:{:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    }
}

// ---------------------------------------------------------------------- reader

/// One storage object of a saveconfig file.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedObject {
    pub plugin: String,
    pub name: String,
    pub dev: Option<String>,
    pub size: Option<u64>,
    pub wwn: Option<String>,
    pub write_back: bool,
    pub(crate) aio: bool,
    pub attributes: BTreeMap<String, Value>,
}

/// One TPG LUN of a saveconfig file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedLun {
    pub index: u64,
    /// `(plugin, name)` from `/backstores/<segment>/<name>`.
    pub object: Option<(String, String)>,
    pub alias: Option<String>,
}

/// One TPG of a saveconfig file.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedTpg {
    pub tag: u32,
    pub enable: bool,
    pub attributes: BTreeMap<String, Value>,
    pub(crate) parameters: BTreeMap<String, String>,
    pub luns: Vec<SavedLun>,
    pub portals: Vec<(String, u16)>,
}

/// One target of a saveconfig file.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedTarget {
    pub fabric: String,
    pub wwn: String,
    pub tpgs: Vec<SavedTpg>,
}

/// What a saveconfig file describes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Saved {
    pub objects: Vec<SavedObject>,
    pub targets: Vec<SavedTarget>,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}
fn b(v: &Value, k: &str) -> bool {
    match v.get(k) {
        Some(Value::Bool(x)) => *x,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}
fn map(v: &Value, k: &str) -> BTreeMap<String, Value> {
    v.get(k)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
        .unwrap_or_default()
}
fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Parses a saveconfig.json text. Lenient: entries without the fields that identify
/// them are skipped; only text that is not a JSON object is an error.
pub fn parse(text: &str) -> Result<Saved, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !doc.is_object() {
        return Err("not a JSON object".into());
    }
    let mut saved = Saved::default();
    for o in arr(&doc, "storage_objects") {
        let (Some(plugin), Some(name)) = (s(o, "plugin"), s(o, "name")) else {
            continue;
        };
        saved.objects.push(SavedObject {
            plugin,
            name,
            dev: s(o, "dev"),
            size: o.get("size").and_then(Value::as_u64),
            wwn: s(o, "wwn").filter(|w| !w.is_empty()),
            write_back: b(o, "write_back"),
            aio: b(o, "aio"),
            attributes: map(o, "attributes"),
        });
    }
    for t in arr(&doc, "targets") {
        let Some(wwn) = s(t, "wwn") else { continue };
        let mut tpgs = Vec::new();
        for g in arr(t, "tpgs") {
            let Some(tag) = g
                .get("tag")
                .and_then(Value::as_u64)
                .and_then(|x| u32::try_from(x).ok())
            else {
                continue;
            };
            let luns = arr(g, "luns")
                .iter()
                .filter_map(|l| {
                    let index = l.get("index").and_then(Value::as_u64)?;
                    let object = s(l, "storage_object").and_then(|p| {
                        let mut it = p.trim_start_matches('/').split('/');
                        match (it.next(), it.next(), it.next(), it.next()) {
                            (Some("backstores"), Some(seg), Some(name), None)
                                if !name.is_empty() =>
                            {
                                Some((attr::plugin_of_segment(seg).to_string(), name.to_string()))
                            }
                            _ => None,
                        }
                    });
                    Some(SavedLun {
                        index,
                        object,
                        alias: s(l, "alias"),
                    })
                })
                .collect();
            let portals = arr(g, "portals")
                .iter()
                .filter_map(|p| {
                    let port = p.get("port").and_then(Value::as_u64)?;
                    Some((s(p, "ip_address")?, u16::try_from(port).ok()?))
                })
                .collect();
            tpgs.push(SavedTpg {
                tag,
                enable: g.get("enable").is_none_or(|_| b(g, "enable")),
                attributes: map(g, "attributes"),
                parameters: map(g, "parameters")
                    .into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|x| (k, x.to_string())))
                    .collect(),
                luns,
                portals,
            });
        }
        saved.targets.push(SavedTarget {
            fabric: s(t, "fabric").unwrap_or_else(|| "iscsi".into()),
            wwn,
            tpgs,
        });
    }
    Ok(saved)
}

impl Saved {
    /// The model a `targetctl restore` of this file into an empty LIO would produce:
    /// HBA indexes are not saved, so objects get 0, 1, 2… in file order (rtslib's
    /// first-free rule on an empty tree); the TPG is `iqn`'s `tag`.
    pub fn to_actual(&self, iqn: &str, tag: u32) -> Actual {
        let mut a = Actual::default();
        let mut refs: BTreeMap<(String, String), BackstoreRef> = BTreeMap::new();
        for (i, o) in self.objects.iter().enumerate() {
            let hba = u32::try_from(i).unwrap_or(u32::MAX);
            let at = BackstoreRef {
                plugin: o.plugin.clone(),
                hba,
                name: o.name.clone(),
            };
            a.hbas.insert((o.plugin.clone(), hba));
            refs.insert((o.plugin.clone(), o.name.clone()), at.clone());
            a.backstores.push(Backstore {
                at,
                dev: o.dev.as_ref().filter(|d| !d.is_empty()).map(PathBuf::from),
                size: o.size,
                serial: o.wwn.clone(),
                enabled: true,
                write_back: o.write_back,
            });
        }
        let tpg = self
            .targets
            .iter()
            .filter(|t| t.fabric == "iscsi" && t.wwn == iqn)
            .flat_map(|t| t.tpgs.iter())
            .find(|g| g.tag == tag);
        a.tpg = tpg.map(|g| Tpg {
            iqn: iqn.to_string(),
            tag,
            enabled: g.enable,
            luns: g
                .luns
                .iter()
                .map(|l| {
                    let backstore = l.object.as_ref().and_then(|o| refs.get(o).cloned());
                    (
                        l.index,
                        Lun {
                            index: l.index,
                            alias: l.alias.clone().filter(|_| backstore.is_some()),
                            backstore,
                        },
                    )
                })
                .collect(),
        });
        a
    }
}

/// Reads and parses a saveconfig.json file.
pub fn load(path: &Path) -> Result<Saved, LioError> {
    let text = fs::read_to_string(path).map_err(|e| LioError::Saveconfig {
        path: path.to_path_buf(),
        detail: format!("cannot read: {e}"),
    })?;
    parse(&text).map_err(|detail| LioError::Saveconfig {
        path: path.to_path_buf(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_is_skipped_not_fatal() {
        for t in [
            "",
            "[]",
            "null",
            "{",
            r#"{"storage_objects": 3}"#,
            r#"{"storage_objects": [{"name": 1}, {"plugin": "fileio"}, 7]}"#,
            r#"{"targets": [{"wwn": "x", "tpgs": [{"tag": -1}, {"tag": 99999999999}, {"tag": 1, "luns": [{"index": "a"}, {"index": 1, "storage_object": "/x"}], "portals": [{"port": 70000, "ip_address": "a"}]}]}]}"#,
        ] {
            if let Ok(s) = parse(t) {
                let _ = s.to_actual("x", 1);
            }
        }
        let s = parse(r#"{"targets": [{"wwn": "x", "tpgs": [{"tag": 1, "luns": [{"index": 1, "storage_object": "/x"}]}]}]}"#).unwrap();
        let a = s.to_actual("x", 1);
        let lun = &a.tpg.unwrap().luns[&1];
        assert_eq!(lun.backstore, None);
    }

    #[test]
    fn text_is_python_compatible() {
        let t = to_text(&json!({"b": [], "a": {"z": 1, "y": "é"}}));
        assert_eq!(
            t,
            "{\n  \"a\": {\n    \"y\": \"\\u00e9\",\n    \"z\": 1\n  },\n  \"b\": []\n}\n"
        );
    }

    #[test]
    fn samples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        for f in [
            "saveconfig-with-targetcli-lun.json",
            "saveconfig-rawsetup.json",
        ] {
            let saved = load(&dir.join(f)).unwrap();
            let a = saved.to_actual("iqn.2023-06.csm.iscsi:testhost", 1);
            assert!(!a.backstores.is_empty());
            let tpg = a.tpg.unwrap();
            assert!(tpg.enabled && tpg.luns.values().all(|l| l.backstore.is_some()));
        }
    }

    #[test]
    fn write_only_on_change_with_backups() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("saveconfig.json");
        assert!(write(&p, &json!({"a": 1}), 2).unwrap());
        assert!(!write(&p, &json!({"a": 1}), 2).unwrap());
        assert!(backups(&p).is_empty());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write(&p, &json!({"a": 2}), 2).unwrap());
        let b = backups(&p);
        assert_eq!(b.len(), 1);
        let mut text = String::new();
        flate2::read::GzDecoder::new(fs::File::open(&b[0]).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{\n  \"a\": 1\n}\n");
        // Same second, same previous content as the newest backup: no new backup.
        fs::write(&p, "{\n  \"a\": 1\n}\n").unwrap();
        assert!(write(&p, &json!({"a": 3}), 2).unwrap());
        assert_eq!(backups(&p).len(), 1);
        // Pruning keeps the newest `max`.
        let bd = dir.path().join("backup");
        for n in [
            "saveconfig-20000101-00:00:00-json.gz",
            "saveconfig-20000102-00:00:00-json.gz",
        ] {
            fs::copy(&b[0], bd.join(n)).unwrap();
        }
        assert!(write(&p, &json!({"a": 4}), 2).unwrap());
        let names: Vec<String> = backups(&p)
            .iter()
            .map(|x| x.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2);
        assert!(!names.iter().any(|n| n.starts_with("saveconfig-20000101")));
    }
}
