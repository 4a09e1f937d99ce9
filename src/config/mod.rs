//! Settings: every key of the original agent, under the same `SBPS_MARSHAL_` names
//! and defaults, plus what the original hard-coded and what the new design needs.
//!
//! Layers, lowest to highest: built-in defaults ← TOML file (`--config PATH`, else
//! `/etc/sbps-marshal/config.toml` when it exists) ← environment
//! (`SBPS_MARSHAL_<KEY>`) ← command line (`--set KEY=VALUE`). Every value remembers
//! the layer it came from, so `sbps-marshal config` can say, and so a bad value is
//! reported with its key, value, origin and what was expected.
//!
//! Each setting is declared once, in the table of `keys.rs`; the rest is made from it:
//! - `keys`: the table, giving [`KEYS`] and the typed [`Settings`];
//! - `layers`: defaults ← file ← environment ← flags, as text with its origin;
//! - `parse`: text to typed values (`FromSetting`), and the cross-field rules;
//! - `docs`: the packaged config.toml and the README's table of settings.

#![warn(unreachable_pub)]

mod docs;
mod keys;
mod layers;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub(crate) use docs::default_file;
pub use docs::markdown_table;
pub(crate) use keys::ValueKind;
pub use keys::{Key, Settings, KEYS};
pub use layers::Layers;

/// Environment variable prefix, as the original.
pub(crate) const ENV_PREFIX: &str = "SBPS_MARSHAL_";
/// The configuration file read when `--config` is not given and it exists.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "/etc/sbps-marshal/config.toml";

/// Where the SPIRE join token comes from (`SPIRE_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpireProvider {
    /// The spire-agent CLI, as the original.
    Cli,
    /// The SPIFFE Workload API socket (cargo feature `spiffe`).
    WorkloadApi,
}

impl SpireProvider {
    /// The `SPIRE_PROVIDER` value that names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SpireProvider::Cli => "cli",
            SpireProvider::WorkloadApi => "workload-api",
        }
    }
}

impl fmt::Display for SpireProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SpireProvider {
    type Err = String;

    fn from_str(s: &str) -> Result<SpireProvider, String> {
        match s {
            "cli" => Ok(SpireProvider::Cli),
            "workload-api" => Ok(SpireProvider::WorkloadApi),
            other => Err(format!("{other:?} is neither cli nor workload-api")),
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "layer", content = "at")]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "env {v}"),
            Origin::Flag => write!(f, "flag --set"),
        }
    }
}

/// A configuration error: exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {key}={value:?} (from {origin}): expected {expected}")]
    Invalid {
        key: String,
        value: String,
        origin: Origin,
        expected: String,
    },
    #[error("unknown setting {key:?} (from {origin}); `sbps-marshal config` lists the keys")]
    UnknownKey { key: String, origin: Origin },
    #[error("cannot read config file {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("--set expects KEY=VALUE, got {0:?}")]
    BadFlag(String),
    #[error("{key}={value:?} (from {origin}) needs {needs}")]
    NotBuilt {
        key: String,
        value: String,
        origin: Origin,
        /// What is missing, and what to do instead.
        needs: &'static str,
    },
}

/// Looks a key up by its bare name (`SCAN_FREQUENCY`).
pub(crate) fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// No setting holds a secret itself (the S3 secret lives in its own file), but a URL
/// may carry `user:password@`; never print that.
fn redact(k: &Key, v: &str) -> String {
    if k.kind == ValueKind::Url {
        if let Some((scheme, rest)) = v.split_once("://") {
            if let Some((userinfo, host)) = rest.split_once('@') {
                if !userinfo.contains('/') {
                    return format!("{scheme}://<redacted>@{host}");
                }
            }
        }
    }
    v.to_string()
}

/// `v` as it may be shown for the key `name` (a URL's `user:password@` redacted).
pub(crate) fn shown(name: &str, v: &str) -> String {
    key(name).map_or_else(|| v.to_string(), |k| redact(k, v))
}

impl Settings {
    /// The ledger file inside STATE_DIR. Not the original's `state.json`, which is
    /// left alone so that switching back stays possible.
    pub fn ledger_file(&self) -> PathBuf {
        self.state_dir.join("ledger.json")
    }

    /// The S3 endpoint URL.
    pub(crate) fn s3_endpoint(&self) -> String {
        format!("{}://{}", self.s3_proto, self.s3_host)
    }
}
