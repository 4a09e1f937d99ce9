//! The LIO objects as values: what `observe()` returns and what `apply()` executes.
//!
//! Modelled on rtslib-fb's StorageObject / TPG / LUN, reduced to what the agent
//! decides on. A backstore lives in an "HBA" directory `core/<plugin>_<index>`; a
//! LUN is a `lun_<N>` directory of the target portal group holding one symlink to
//! a backstore.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a backstore lives: `core/<plugin>_<hba>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackstoreRef {
    pub plugin: String,
    pub hba: u32,
    pub name: String,
}

impl BackstoreRef {
    pub fn fileio(hba: u32, name: &str) -> BackstoreRef {
        BackstoreRef {
            plugin: "fileio".into(),
            hba,
            name: name.into(),
        }
    }

    /// The HBA directory name, e.g. `fileio_3`.
    pub fn hba_dir(&self) -> String {
        format!("{}_{}", self.plugin, self.hba)
    }
}

impl fmt::Display for BackstoreRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}/{}", self.plugin, self.hba, self.name)
    }
}

/// One storage object as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backstore {
    pub at: BackstoreRef,
    /// Backing file (`udev_path`, else the `File:` of `info`), if any was configured.
    pub dev: Option<PathBuf>,
    /// Size in bytes (`Size:` of `info`), if configured.
    pub size: Option<u64>,
    /// VPD unit serial, if set.
    pub serial: Option<String>,
    /// `enable` reads 1: the kernel opened the backing file.
    pub enabled: bool,
    /// `fd_buffered_io` (targetcli's write_back), as far as it can be read.
    pub write_back: bool,
}

/// One LUN of the target portal group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lun {
    pub index: u64,
    /// The symlink's name, if the LUN links a backstore.
    pub alias: Option<String>,
    /// The backstore it links, if any (an empty `lun_N` is left by an interrupted create).
    pub backstore: Option<BackstoreRef>,
}

/// The iSCSI target portal group the agent manages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tpg {
    pub iqn: String,
    pub tag: u32,
    pub enabled: bool,
    pub luns: BTreeMap<u64, Lun>,
}

/// What LIO holds now.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Actual {
    pub backstores: Vec<Backstore>,
    /// Every HBA directory, including empty ones, as (plugin, index).
    pub hbas: BTreeSet<(String, u32)>,
    /// The configured target's TPG, if it exists.
    pub tpg: Option<Tpg>,
}

/// One change to LIO. Ops of one [`Phase`] are independent of each other and may
/// run in parallel; phases run in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    DisableTpg,
    UnmapLun {
        lun: u64,
        serial: Option<String>,
    },
    DeleteBackstore {
        at: BackstoreRef,
    },
    RemoveEmptyHba {
        plugin: String,
        hba: u32,
    },
    CreateBackstore {
        at: BackstoreRef,
        path: PathBuf,
        size: u64,
        serial: String,
    },
    MapLun {
        lun: u64,
        at: BackstoreRef,
        alias: String,
    },
    EnableTpg,
}

/// Execution order of ops; see [`Op::phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    Disable,
    Unmap,
    Delete,
    Create,
    Map,
    Enable,
}

impl Op {
    pub fn phase(&self) -> Phase {
        match self {
            Op::DisableTpg => Phase::Disable,
            Op::UnmapLun { .. } => Phase::Unmap,
            Op::DeleteBackstore { .. } | Op::RemoveEmptyHba { .. } => Phase::Delete,
            Op::CreateBackstore { .. } => Phase::Create,
            Op::MapLun { .. } => Phase::Map,
            Op::EnableTpg => Phase::Enable,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::DisableTpg => write!(f, "disable TPG"),
            Op::EnableTpg => write!(f, "enable TPG"),
            Op::UnmapLun { lun, serial } => match serial {
                Some(s) => write!(f, "unmap LUN {lun} (serial {s})"),
                None => write!(f, "remove empty LUN {lun}"),
            },
            Op::DeleteBackstore { at } => write!(f, "delete backstore {at}"),
            Op::RemoveEmptyHba { plugin, hba } => write!(f, "remove empty HBA {plugin}_{hba}"),
            Op::CreateBackstore {
                at,
                path,
                size,
                serial,
            } => write!(
                f,
                "create backstore {at} serial {serial} file {} ({size} bytes)",
                path.display()
            ),
            Op::MapLun { lun, at, .. } => write!(f, "map LUN {lun} -> {at}"),
        }
    }
}

impl Actual {
    /// The LIO state after `op` succeeds: the model of the kernel's semantics that
    /// the fake backend and the real one both implement (the contract suite checks it).
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::DisableTpg => {
                if let Some(t) = &mut self.tpg {
                    t.enabled = false;
                }
            }
            Op::EnableTpg => {
                if let Some(t) = &mut self.tpg {
                    t.enabled = true;
                }
            }
            Op::UnmapLun { lun, .. } => {
                if let Some(t) = &mut self.tpg {
                    t.luns.remove(lun);
                }
            }
            Op::DeleteBackstore { at } => {
                self.backstores.retain(|b| &b.at != at);
                let used = self
                    .backstores
                    .iter()
                    .any(|b| b.at.plugin == at.plugin && b.at.hba == at.hba);
                if !used {
                    self.hbas.remove(&(at.plugin.clone(), at.hba));
                }
            }
            Op::RemoveEmptyHba { plugin, hba } => {
                self.hbas.remove(&(plugin.clone(), *hba));
            }
            Op::CreateBackstore {
                at,
                path,
                size,
                serial,
            } => {
                self.hbas.insert((at.plugin.clone(), at.hba));
                self.backstores.push(Backstore {
                    at: at.clone(),
                    dev: Some(path.clone()),
                    size: Some(*size),
                    serial: Some(serial.clone()),
                    enabled: true,
                    write_back: false,
                });
            }
            Op::MapLun { lun, at, alias } => {
                if let Some(t) = &mut self.tpg {
                    t.luns.insert(
                        *lun,
                        Lun {
                            index: *lun,
                            alias: Some(alias.clone()),
                            backstore: Some(at.clone()),
                        },
                    );
                }
            }
        }
    }

    /// The lowest LUN number exporting each unit serial: one pass over backstores and
    /// LUNs, for callers that ask about many serials (status, metrics, explain).
    pub fn lun_by_serial(&self) -> rustc_hash::FxHashMap<&str, u64> {
        let serial_of: rustc_hash::FxHashMap<&BackstoreRef, &str> = self
            .backstores
            .iter()
            .filter_map(|b| Some((&b.at, b.serial.as_deref()?)))
            .collect();
        let mut m: rustc_hash::FxHashMap<&str, u64> = Default::default();
        for l in self.tpg.iter().flat_map(|t| t.luns.values()) {
            if let Some(serial) = l.backstore.as_ref().and_then(|b| serial_of.get(b)) {
                let e = m.entry(*serial).or_insert(l.index);
                *e = (*e).min(l.index);
            }
        }
        m
    }
}
