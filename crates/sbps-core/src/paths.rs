//! The rules an object key and its backing path must pass before a backend is handed
//! the path: one key names one file of the mount, the path stays inside the mount,
//! and whatever reads the path (the kernel's `control` parser, targetcli's command
//! line) reads exactly the path that was checked.
//!
//! Pure functions of the letters only; what the mount really holds (symlinks) is the
//! mount adapter's business (`sbps_marshal::inventory::mount`) and the backends' last check
//! before `enable` (`sbps_marshal::lio::configfs::check_backing_file`). `desired` refuses a
//! candidate with the same rules a backend would refuse its create with, so a projection
//! is never planned that fails every scan (and keeps a fresh target's TPG disabled).

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

/// Longest backing path the kernel accepts in `fd_dev_name=` (FD_MAX_DEV_NAME = 256, with NUL).
pub(crate) const MAX_KERNEL_PATH: usize = 255;

/// The LIO backend a backing path is handed to (`LIO_BACKEND`): each reads the path its
/// own way, so each refuses a different set of paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Direct configfs writes: the kernel's `control` parser reads the path.
    #[default]
    Configfs,
    /// targetcli commands: configshell-fb's command-line grammar reads it first.
    Targetcli,
}

impl Backend {
    /// The `LIO_BACKEND` value that names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Backend::Configfs => "configfs",
            Backend::Targetcli => "targetcli",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    /// `configfs` or `targetcli`, as `LIO_BACKEND` spells them; anything else is an
    /// error, never a silent default.
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "configfs" => Ok(Backend::Configfs),
            "targetcli" => Ok(Backend::Targetcli),
            other => Err(format!("{other:?} is neither configfs nor targetcli")),
        }
    }
}

/// Rejects object keys that would leave the mount by their letters alone: absolute
/// components, `..`, empty, NUL. Symlinks are the mount adapter's business.
pub fn lexically_inside(object_key: &str) -> Result<(), String> {
    if object_key.is_empty() {
        return Err("empty key".into());
    }
    if object_key.contains('\0') {
        return Err("key contains NUL".into());
    }
    if object_key.starts_with('/') {
        return Err(format!("key {object_key:?} is absolute"));
    }
    for c in Path::new(object_key).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(format!("key {object_key:?} contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("key {object_key:?} is absolute"))
            }
        }
    }
    Ok(())
}

/// One key, one file: refuses a key with an empty segment (`PE//x`, a trailing `/`) or
/// a `.` segment (`PE/./x`). The filesystem reads such a key as another, cleaner key
/// (`PE/x`), so two S3 objects, two identities and two LUNs would export one file's
/// bytes, and a key would export another object's. A key that passes is the one
/// spelling of its file's name: distinct keys name distinct paths.
pub fn one_name(object_key: &str) -> Result<(), String> {
    match object_key.split('/').find(|s| s.is_empty() || *s == ".") {
        None => Ok(()),
        Some("") => Err(format!(
            "key {object_key:?} has an empty segment ('//' or a trailing '/'): the mount reads it as another key's file"
        )),
        Some(_) => Err(format!(
            "key {object_key:?} has a '.' segment: the mount reads it as another key's file"
        )),
    }
}

/// The kernel splits `control` into `key=value` pairs on `,` and newline
/// (`fd_set_configfs_dev_params`), and bounds `fd_dev_name` to 255 bytes. A path that breaks that
/// parser would configure a different file than the one checked.
///
/// `=` is fine: the kernel's `fd_dev_name=%s` takes everything after the first one, and
/// [`check_control_path`] (the configfs backend's check) takes it too.
/// Whatever passes here passes that check.
pub fn kernel_safe_path(path: &Path) -> Result<(), String> {
    let s = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    if s.len() > MAX_KERNEL_PATH {
        return Err(format!(
            "{} bytes, the kernel accepts at most {MAX_KERNEL_PATH}",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| *c == ',' || c.is_control()) {
        return Err(format!("contains {c:?}"));
    }
    Ok(())
}

/// The punctuation every configshell-fb release reads as part of one command-line
/// parameter, besides ASCII letters and digits.
///
/// targetcli joins its arguments into one line and parses it with configshell-fb's
/// pyparsing grammar: a positional parameter is a `Word` of ASCII letters, digits and a
/// fixed set of punctuation. Whitespace splits the path into two parameters; any other
/// character ends the parse *silently* (the rest of the line, with the size and the serial,
/// is dropped), so for `PE/it's.squashfs` targetcli opens `PE/it`. The set has grown over
/// the releases (`[` later, `?;&*$!#,=` later still), so this is the set all of them share,
/// less two characters no release can be trusted with:
/// - `%`: with `auto_use_daemon`, targetcli sends the line to targetclid, which splits
///   it into several commands at every `%`;
/// - `\`: it is in the set only through an invalid escape in configshell-fb's Python
///   source (`'\+'`), which a release may fix either way.
///
/// No quoting helps: the releases in use have no quoted form of a parameter.
pub const TARGETCLI_PUNCTUATION: &str = "_+/.<>()~@:-]";

/// Whether targetcli reads `c` as part of a parameter in every release (see
/// [`TARGETCLI_PUNCTUATION`]).
pub fn targetcli_reads(c: char) -> bool {
    c.is_ascii_alphanumeric() || TARGETCLI_PUNCTUATION.contains(c)
}

/// A path targetcli would read back byte for byte as one parameter, or why not: absolute
/// (a relative one would be read against targetcli's working directory, and one
/// starting with a word and `=` as a keyword parameter), and made only of the characters
/// of [`targetcli_reads`].
pub fn targetcli_safe_path(path: &Path) -> Result<(), String> {
    let s = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    if !s.starts_with('/') {
        return Err(format!(
            "{s:?} is not absolute; targetcli needs an absolute path"
        ));
    }
    match s.chars().find(|c| !targetcli_reads(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "contains {c:?}, which targetcli's command line does not read as part of a path (it would open another file)"
        )),
    }
}

/// All the checks the backing path of a projection must pass for `backend`.
pub fn backend_safe_path(path: &Path, backend: Backend) -> Result<(), String> {
    kernel_safe_path(path)?;
    match backend {
        Backend::Configfs => Ok(()),
        Backend::Targetcli => targetcli_safe_path(path),
    }
}

/// The object key `path` names under `root`, by its letters: `path` with `root` and one
/// `/` removed (`root` may end in `/`). `None` when `path` is not spelled under `root`.
pub fn key_under<'a>(path: &'a Path, root: &Path) -> Option<&'a str> {
    let r = root.to_str()?.trim_end_matches('/');
    path.to_str()?.strip_prefix(r)?.strip_prefix('/')
}

/// Why a value cannot go into `control` (the kernel splits on `,` and newlines and
/// takes at most 255 bytes of `fd_dev_name`).
pub fn check_control_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 255 {
        return Err(format!("path {path:?} must be 1..=255 bytes"));
    }
    if path.contains([',', '\n', '\r', '\0']) {
        return Err(format!("path {path:?} contains ',', a newline or NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_named_as_lio_backend_spells_it() {
        for b in [Backend::Configfs, Backend::Targetcli] {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
            assert_eq!(
                serde_json::to_string(&b).unwrap(),
                format!("{:?}", b.as_str())
            );
        }
        assert!("rtslib".parse::<Backend>().is_err());
        assert!("Configfs".parse::<Backend>().is_err());
    }

    /// Regression: this check and the configfs backend's must agree, or a key is
    /// projected and its create fails every scan (keeping a fresh target's TPG from
    /// ever being enabled). `=` passes both: the kernel's `fd_dev_name=%s` takes the
    /// rest of the pair, and the original agent projected such keys.
    #[test]
    fn kernel_safe_path_agrees_with_the_backend() {
        let eq = "/m/PE/a=b.squashfs";
        assert!(kernel_safe_path(Path::new(eq)).is_ok());
        assert!(check_control_path(eq).is_ok());
        for p in [
            "/m/PE/a,b.squashfs",
            "/m/PE/a\nb",
            "/m/PE/a\rb",
            "/m/PE/a\0b",
        ] {
            assert!(kernel_safe_path(Path::new(p)).is_err(), "{p:?}");
            assert!(check_control_path(p).is_err(), "{p:?}");
        }
        let ok = "/m/PE/with space/\u{2025}.squashfs";
        assert!(kernel_safe_path(Path::new(ok)).is_ok());
        assert!(check_control_path(ok).is_ok());
    }

    #[test]
    fn one_name_refuses_empty_and_dot_segments() {
        for k in ["PE/x.squashfs", "img/rootfs", "PE/..x", "PE/.hidden", "a"] {
            assert_eq!(one_name(k), Ok(()), "{k:?}");
        }
        for k in [
            "PE//x.squashfs",
            "PE/./x.squashfs",
            "./img/rootfs",
            "img/rootfs/",
            "img/rootfs/.",
            "",
        ] {
            let e = one_name(k).unwrap_err();
            assert!(e.contains("another key's file"), "{k:?}: {e}");
        }
    }

    #[test]
    fn targetcli_paths() {
        let ok = "/var/lib/cps-local/boot-images/PE/CPE-base.x86_64-25.09_a+b(c)~@:<>].squashfs";
        assert_eq!(targetcli_safe_path(Path::new(ok)), Ok(()));
        for p in [
            "/m/PE/a b.squashfs",
            "/m/PE/evil;x.squashfs",
            "/m/PE/a#b.squashfs",
            "/m/PE/it's.squashfs",
            "/m/PE/say\"hi\".squashfs",
            "/m/PE/a=b.squashfs",
            "/m/PE/a%b.squashfs",
            "/m/PE/a\\b.squashfs",
            "/m/PE/\u{2025}.squashfs",
            "m/PE/x.squashfs",
        ] {
            assert!(targetcli_safe_path(Path::new(p)).is_err(), "{p:?}");
            assert!(backend_safe_path(Path::new(p), Backend::Targetcli).is_err());
        }
        assert!(backend_safe_path(Path::new("/m/PE/a b=c"), Backend::Configfs).is_ok());
    }

    #[test]
    fn keys_under_a_root() {
        let p = Path::new("/m/r/PE/x");
        assert_eq!(key_under(p, Path::new("/m/r")), Some("PE/x"));
        assert_eq!(key_under(p, Path::new("/m/r/")), Some("PE/x"));
        assert_eq!(key_under(Path::new("/PE/x"), Path::new("/")), Some("PE/x"));
        assert_eq!(
            key_under(Path::new("/m/r/./PE//x"), Path::new("/m/r")),
            Some("./PE//x")
        );
        assert_eq!(key_under(Path::new("/m/rr/x"), Path::new("/m/r")), None);
        assert_eq!(key_under(Path::new("/m/r"), Path::new("/m/r")), None);
    }
}
