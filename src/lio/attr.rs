//! Pure parsers for configfs names and attribute files.
//!
//! Kept free of I/O so they can be unit-tested and fuzzed: every function takes
//! whatever the kernel (or a corrupted file) gives and returns `None` rather than
//! panicking on anything unexpected.

use std::path::{Component, Path};

use super::model::BackstoreRef;

/// The plugins whose HBA directories `core/<plugin>_<N>` the kernel accepts.
pub const PLUGINS: &[&str] = &["fileio", "iblock", "rd_mcp", "pscsi", "user"];

/// The fields of a fileio backstore's `info` file that matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// `File:`; `None` when empty (not configured yet).
    pub file: Option<String>,
    /// `Size:`; `None` when no file is configured.
    pub size: Option<u64>,
    /// `Mode: Buffered-WCE` (fd_buffered_io=1, targetcli's write_back).
    pub buffered: bool,
    /// `Async: 1`.
    pub(crate) aio: bool,
    /// `Status: ACTIVATED`: the kernel reports an export (a LUN link), not enable.
    pub exported: bool,
}

/// Parses a fileio `info` file, e.g.
/// `Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 0  HwMaxSectors: 0\n        TCM FILEIO ID: 0        File: /p  Size: 45056  Mode: O_DSYNC Async: 0\n`.
/// The file name may contain spaces, so it is cut at the *last* `  Size: `.
pub fn parse_info(s: &str) -> Info {
    let mut info = Info {
        exported: s.contains("Status: ACTIVATED"),
        ..Info::default()
    };
    let Some(fpos) = s.find("File: ") else {
        return info;
    };
    let rest = &s[fpos + "File: ".len()..];
    let (file, after) = match rest.rfind("  Size: ") {
        Some(i) => (&rest[..i], &rest[i + "  Size: ".len()..]),
        None => (rest.trim_end(), ""),
    };
    let size = after
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<u64>().ok());
    if !file.trim().is_empty() {
        info.file = Some(file.to_string());
        info.size = size;
    }
    if let Some(m) = after.find("Mode: ") {
        info.buffered = after[m + "Mode: ".len()..].starts_with("Buffered-WCE");
    }
    if let Some(a) = after.find("Async: ") {
        info.aio = after[a + "Async: ".len()..].trim_start().starts_with('1');
    }
    info
}

/// Parses `wwn/vpd_unit_serial` (`T10 VPD Unit Serial Number: <serial>`); an empty
/// serial (the kernel's initial value) is `None`.
pub fn parse_serial(s: &str) -> Option<String> {
    let v = match s.split_once(':') {
        Some((_, v)) => v,
        None => s,
    };
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// Parses a 0/1 flag file such as `enable`.
pub fn parse_flag(s: &str) -> Option<bool> {
    match s.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Parses an HBA directory name `<plugin>_<index>` (the plugin may contain `_`, as in `rd_mcp_0`).
pub fn parse_hba_dir(name: &str) -> Option<(String, u32)> {
    let (plugin, idx) = name.rsplit_once('_')?;
    if plugin.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((plugin.to_string(), idx.parse().ok()?))
}

/// Parses a LUN directory name `lun_<N>`.
pub fn parse_lun_dir(name: &str) -> Option<u64> {
    let n = name.strip_prefix("lun_")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Parses a TPG directory name `tpgt_<tag>`.
pub fn parse_tpg_dir(name: &str) -> Option<u32> {
    let n = name.strip_prefix("tpgt_")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The backstore a LUN symlink points at: the last three components must be
/// `core/<plugin>_<hba>/<name>` (configfs reports it relative, `../../../../../core/...`).
pub fn parse_link_target(target: &Path) -> Option<BackstoreRef> {
    let comps: Vec<&str> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let [.., core, hba, name] = comps.as_slice() else {
        return None;
    };
    if *core != "core" {
        return None;
    }
    let (plugin, hba) = parse_hba_dir(hba)?;
    Some(BackstoreRef {
        plugin,
        hba,
        name: (*name).to_string(),
    })
}

/// A network portal directory `<ip>:<port>` (IPv6 in brackets) → (ip, port).
pub fn parse_portal(name: &str) -> Option<(String, u16)> {
    let (ip, port) = name.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    if ip.is_empty() {
        return None;
    }
    Some((ip.to_string(), port))
}

/// An attribute value as rtslib dumps it: an integer when the text is one, else the
/// trimmed text.
pub fn attr_value(s: &str) -> serde_json::Value {
    let t = s.trim();
    match t.parse::<i64>() {
        Ok(n) => serde_json::Value::from(n),
        Err(_) => serde_json::Value::from(t),
    }
}

/// rtslib's saveconfig path segment of a plugin (`/backstores/<segment>/<name>`).
pub(crate) fn backstore_segment(plugin: &str) -> &str {
    match plugin {
        "iblock" => "block",
        "rd_mcp" => "ramdisk",
        other => other,
    }
}

/// The plugin of a saveconfig `storage_object` path segment (inverse of [`backstore_segment`]).
pub(crate) fn plugin_of_segment(segment: &str) -> &str {
    match segment {
        "block" => "iblock",
        "ramdisk" => "rd_mcp",
        other => other,
    }
}

/// Why a backstore name cannot be used (rtslib's rule: no `/`, whitespace or newline;
/// the kernel takes up to 255 bytes).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("backstore name {name:?} must be 1..=255 bytes"));
    }
    if name.chars().any(|c| c == '/' || c.is_whitespace()) || name == "." || name == ".." {
        return Err(format!(
            "backstore name {name:?} contains '/', whitespace or is a dot name"
        ));
    }
    Ok(())
}

pub use sbps_core::paths::check_control_path;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_before_configuration() {
        let s = "Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 0  HwMaxSectors: 0\n        TCM FILEIO ID: 0        File:   Size: 0  Mode: O_DSYNC Async: 0\n";
        assert_eq!(parse_info(s), Info::default());
    }

    #[test]
    fn info_enabled_and_exported() {
        let s = "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 16384\n        TCM FILEIO ID: 0        File: /files/img1.squashfs  Size: 45056  Mode: O_DSYNC Async: 0\n";
        let i = parse_info(s);
        assert_eq!(i.file.as_deref(), Some("/files/img1.squashfs"));
        assert_eq!(i.size, Some(45056));
        assert!(!i.buffered && !i.aio && i.exported);
    }

    #[test]
    fn info_buffered_with_spaces_in_name() {
        let s = "Status: DEACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 16384\n        TCM FILEIO ID: 0        File: /a b/c  Size: x.img  Size: 7  Mode: Buffered-WCE Async: 1\n";
        let i = parse_info(s);
        assert_eq!(i.file.as_deref(), Some("/a b/c  Size: x.img"));
        assert_eq!(i.size, Some(7));
        assert!(i.buffered && i.aio && !i.exported);
    }

    #[test]
    fn info_garbage_does_not_panic() {
        for s in [
            "",
            "File: ",
            "File: x",
            "File:   Size: ",
            "Mode: Buffered-WCE",
            "File: é  Size: 1",
        ] {
            let _ = parse_info(s);
        }
        assert_eq!(parse_info("File: x").file.as_deref(), Some("x"));
    }

    #[test]
    fn serial() {
        assert_eq!(parse_serial("T10 VPD Unit Serial Number: \n"), None);
        assert_eq!(
            parse_serial("T10 VPD Unit Serial Number: serial-img1-0001\n").as_deref(),
            Some("serial-img1-0001")
        );
        assert_eq!(parse_serial(""), None);
    }

    #[test]
    fn names() {
        assert_eq!(parse_hba_dir("fileio_12"), Some(("fileio".into(), 12)));
        assert_eq!(parse_hba_dir("rd_mcp_0"), Some(("rd_mcp".into(), 0)));
        assert_eq!(parse_hba_dir("alua"), None);
        assert_eq!(parse_hba_dir("fileio_"), None);
        assert_eq!(parse_hba_dir("_1"), None);
        assert_eq!(parse_hba_dir("fileio_99999999999"), None);
        assert_eq!(parse_lun_dir("lun_65536"), Some(65536));
        assert_eq!(parse_lun_dir("lun0"), None);
        assert_eq!(parse_lun_dir("lun_+1"), None);
        assert_eq!(parse_tpg_dir("tpgt_1"), Some(1));
        assert_eq!(parse_tpg_dir("tpg_1"), None);
    }

    #[test]
    fn link_targets() {
        assert_eq!(
            parse_link_target(Path::new("../../../../../core/fileio_3/abc")),
            Some(BackstoreRef::fileio(3, "abc"))
        );
        assert_eq!(
            parse_link_target(Path::new("/sys/kernel/config/target/core/iblock_0/d")),
            Some(BackstoreRef {
                plugin: "iblock".into(),
                hba: 0,
                name: "d".into()
            })
        );
        assert_eq!(parse_link_target(Path::new("core/fileio_3")), None);
        assert_eq!(parse_link_target(Path::new("x/fileio_3/abc")), None);
        assert_eq!(parse_link_target(Path::new("")), None);
    }

    #[test]
    fn portals_and_values() {
        assert_eq!(
            parse_portal("127.0.0.1:3260"),
            Some(("127.0.0.1".into(), 3260))
        );
        assert_eq!(parse_portal("[::1]:3260"), Some(("::1".into(), 3260)));
        assert_eq!(parse_portal("bogus"), None);
        assert_eq!(attr_value("128\n"), serde_json::json!(128));
        assert_eq!(attr_value("-1\n"), serde_json::json!(-1));
        assert_eq!(
            attr_value("CRC32C,None\n"),
            serde_json::json!("CRC32C,None")
        );
    }

    #[test]
    fn checks() {
        assert!(check_name("a50dd52157e1636").is_ok());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("").is_err());
        assert!(check_control_path("/m/x.squashfs").is_ok());
        assert!(check_control_path("/m/a,fd_buffered_io=1").is_err());
    }
}
