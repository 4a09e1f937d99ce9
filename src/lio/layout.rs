//! Where LIO's objects live under configfs, spelled once. The configfs backend, the
//! saveconfig.json patch and the per-LUN statistics behind the metrics build their
//! paths here; the dump walks the same two roots (`core`, `iscsi`); the test kit's fake
//! configfs parses the same shapes back (`attr::parse_*`).
//!
//! ```text
//! <root>/core/<plugin>_<hba>/<name>            a backstore (StorageObject)
//! <root>/iscsi/<iqn>/tpgt_<tag>                our target portal group
//! <root>/iscsi/<iqn>/tpgt_<tag>/lun/lun_<n>    one LUN (a link to its backstore)
//! ```

use std::path::{Path, PathBuf};

use super::model::BackstoreRef;

/// The configfs paths of one target portal group and the backstores it can map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    root: PathBuf,
    iqn: String,
    tag: u32,
    tpg: PathBuf,
}

impl Layout {
    /// The layout under `root` (normally `/sys/kernel/config/target`) of the TPG
    /// `tag` of the target `iqn`.
    pub(crate) fn new(root: &Path, iqn: &str, tag: u32) -> Layout {
        Layout {
            root: root.to_path_buf(),
            iqn: iqn.to_string(),
            tag,
            tpg: iscsi_dir(root).join(iqn).join(format!("tpgt_{tag}")),
        }
    }

    /// The configfs root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The target's IQN.
    pub(crate) fn iqn(&self) -> &str {
        &self.iqn
    }

    /// The TPG's tag.
    pub(crate) fn tag(&self) -> u32 {
        self.tag
    }

    /// `<root>/core`: the HBAs and their backstores.
    pub(crate) fn core(&self) -> PathBuf {
        core_dir(&self.root)
    }

    /// `<root>/core/<plugin>_<hba>`.
    pub(crate) fn hba_dir(&self, plugin: &str, hba: u32) -> PathBuf {
        self.core().join(format!("{plugin}_{hba}"))
    }

    /// `<root>/core/<plugin>_<hba>/<name>`.
    pub(crate) fn so_dir(&self, at: &BackstoreRef) -> PathBuf {
        self.core().join(at.hba_dir()).join(&at.name)
    }

    /// `<root>/iscsi/<iqn>/tpgt_<tag>`.
    pub(crate) fn tpg_dir(&self) -> &Path {
        &self.tpg
    }

    /// `<tpg>/lun`: the LUNs of the TPG.
    pub(crate) fn luns_dir(&self) -> PathBuf {
        self.tpg.join("lun")
    }

    /// `<tpg>/lun/lun_<n>`.
    pub(crate) fn lun_dir(&self, lun: u64) -> PathBuf {
        self.luns_dir().join(lun_dir_name(lun))
    }
}

/// `<root>/core`.
pub(crate) fn core_dir(root: &Path) -> PathBuf {
    root.join("core")
}

/// `<root>/iscsi`: the iSCSI fabric's targets.
pub(crate) fn iscsi_dir(root: &Path) -> PathBuf {
    root.join("iscsi")
}

/// The name of LUN `n`'s directory (`lun_<n>`; `attr::parse_lun_dir` reads it back).
pub(crate) fn lun_dir_name(lun: u64) -> String {
    format!("lun_{lun}")
}

/// Where the kernel counts a LUN's traffic (`read_mbytes`, `in_cmds` …), below its
/// directory.
pub(crate) const LUN_PORT_STATISTICS: &str = "statistics/scsi_tgt_port";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_kernel_s() {
        let l = Layout::new(Path::new("/sys/kernel/config/target"), "iqn.x:w1", 1);
        let at = BackstoreRef::fileio(3, "img");
        assert_eq!(
            l.so_dir(&at),
            Path::new("/sys/kernel/config/target/core/fileio_3/img")
        );
        assert_eq!(
            l.hba_dir("fileio", 3),
            Path::new("/sys/kernel/config/target/core/fileio_3")
        );
        assert_eq!(
            l.tpg_dir(),
            Path::new("/sys/kernel/config/target/iscsi/iqn.x:w1/tpgt_1")
        );
        assert_eq!(
            l.lun_dir(7),
            Path::new("/sys/kernel/config/target/iscsi/iqn.x:w1/tpgt_1/lun/lun_7")
        );
        assert_eq!(super::super::attr::parse_lun_dir(&lun_dir_name(7)), Some(7));
    }
}
