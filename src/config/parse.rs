//! From layered text to [`Settings`]: each key's value is checked against its
//! [`ValueKind`], then parsed to its field's type by [`FromSetting`]; the few rules
//! that look at more than one value come last, in [`Settings::from_layers`].

use std::path::PathBuf;
use std::time::Duration;

use super::keys::{Settings, ValueKind};
use super::{shown, ConfigError, Layers, SpireProvider, ENV_PREFIX};
use crate::paths::Backend;

/// A field type of [`Settings`], parsed from a key's value. The value is trimmed and
/// has passed its kind's lexical check; the error is what was expected, as the
/// refusal says it (usually [`expected`] of the kind).
pub(crate) trait FromSetting: Sized {
    fn from_setting(v: &str, kind: ValueKind) -> Result<Self, String>;
}

impl FromSetting for String {
    fn from_setting(v: &str, _: ValueKind) -> Result<String, String> {
        Ok(v.to_string())
    }
}

/// Empty is off.
impl FromSetting for Option<String> {
    fn from_setting(v: &str, _: ValueKind) -> Result<Option<String>, String> {
        Ok(Some(v.to_string()).filter(|s| !s.is_empty()))
    }
}

impl FromSetting for PathBuf {
    fn from_setting(v: &str, _: ValueKind) -> Result<PathBuf, String> {
        Ok(PathBuf::from(v))
    }
}

/// Empty is off.
impl FromSetting for Option<PathBuf> {
    fn from_setting(v: &str, _: ValueKind) -> Result<Option<PathBuf>, String> {
        Ok(Some(v).filter(|s| !s.is_empty()).map(PathBuf::from))
    }
}

/// A `key=value` label; empty is none.
impl FromSetting for Option<(String, String)> {
    fn from_setting(v: &str, _: ValueKind) -> Result<Option<(String, String)>, String> {
        if v.is_empty() {
            return Ok(None);
        }
        let (a, b) = v.split_once('=').ok_or("key=value")?;
        Ok(Some((a.to_string(), b.to_string())))
    }
}

impl FromSetting for bool {
    fn from_setting(v: &str, kind: ValueKind) -> Result<bool, String> {
        parse_bool(v).ok_or_else(|| expected(kind))
    }
}

/// A whole number, at least 1 unless the kind allows 0.
impl FromSetting for u64 {
    fn from_setting(v: &str, kind: ValueKind) -> Result<u64, String> {
        let min = match kind {
            ValueKind::SecondsOrZero | ValueKind::CountOrZero => 0,
            _ => 1,
        };
        match v.parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(expected(kind)),
        }
    }
}

impl FromSetting for usize {
    fn from_setting(v: &str, kind: ValueKind) -> Result<usize, String> {
        usize::try_from(u64::from_setting(v, kind)?).map_err(|_| expected(kind))
    }
}

/// The one u32 setting is TPG_TAG (LIO's tags are 32 bits), and the refusal says so.
impl FromSetting for u32 {
    fn from_setting(v: &str, kind: ValueKind) -> Result<u32, String> {
        u32::try_from(u64::from_setting(v, kind)?).map_err(|_| "a TPG tag below 2^32".into())
    }
}

impl FromSetting for Duration {
    fn from_setting(v: &str, kind: ValueKind) -> Result<Duration, String> {
        u64::from_setting(v, kind).map(Duration::from_secs)
    }
}

/// A ratio, in [0, 1].
impl FromSetting for f64 {
    fn from_setting(v: &str, kind: ValueKind) -> Result<f64, String> {
        match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(expected(kind)),
        }
    }
}

/// The enums named by a `OneOf` key's words: their `FromStr` is the one spelling.
macro_rules! from_str_setting {
    ($($t:ty),*) => {$(
        impl FromSetting for $t {
            fn from_setting(v: &str, kind: ValueKind) -> Result<$t, String> {
                v.parse().map_err(|_| expected(kind))
            }
        }
    )*};
}

from_str_setting!(Backend, SpireProvider);

impl Settings {
    /// Validates every layer value; `hostname` fills NODE_NAME and TARGET_IQN when empty.
    ///
    /// The table ([`super::KEYS`]) parses each value on its own; the rules below are
    /// the ones it cannot say, checked after it, in this order:
    /// - NODE_NAME empty → this host's name; TARGET_IQN empty → derived from it;
    /// - METRICS_TEXTFILE must end in `.prom`, the only files node-exporter reads;
    /// - SPIRE_PROVIDER=workload-api is refused at start when this build left the
    ///   Workload API client out (cargo feature `spiffe`), rather than failing every
    ///   scan later: [`ConfigError::NotBuilt`], exit status 2 like any bad setting.
    pub fn from_layers(l: &Layers, hostname: &str) -> Result<Settings, ConfigError> {
        let p = Parser { l };
        let mut s = Settings::parse_each(&p)?;
        if s.node_name.is_empty() {
            s.node_name = hostname.to_string();
        }
        if s.target_iqn.is_empty() {
            s.target_iqn = format!("iqn.2023-06.csm.iscsi:{}", s.node_name);
        }
        if let Some(f) = &s.metrics_textfile {
            if f.extension().is_none_or(|e| e != "prom") {
                return Err(p.invalid(
                    "METRICS_TEXTFILE",
                    "an absolute path of a file ending in .prom (node-exporter reads only those), or empty",
                ));
            }
        }
        if s.spire_provider == SpireProvider::WorkloadApi
            && !crate::inventory::spire::WORKLOAD_API_BUILT
        {
            return Err(ConfigError::NotBuilt {
                key: format!("{ENV_PREFIX}SPIRE_PROVIDER"),
                value: s.spire_provider.to_string(),
                origin: l.get("SPIRE_PROVIDER").1.clone(),
                needs: "the SPIFFE Workload API client, which this build of sbps-marshal \
                        leaves out (cargo feature `spiffe`): use SPIRE_PROVIDER=cli (the \
                        spire-agent binary), or a build with the feature (the RPM has it)",
            });
        }
        Ok(s)
    }
}

/// Reads the layers on behalf of the table's generated parse.
pub(super) struct Parser<'a> {
    l: &'a Layers,
}

impl Parser<'_> {
    /// The key `name` (of kind `kind`) as its field's type.
    pub(super) fn field<T: FromSetting>(
        &self,
        name: &str,
        kind: ValueKind,
    ) -> Result<T, ConfigError> {
        let v = self.checked(name, kind)?;
        T::from_setting(v, kind).map_err(|e| self.invalid(name, &e))
    }

    fn invalid(&self, name: &str, expected: &str) -> ConfigError {
        let (v, o) = self.l.get(name);
        ConfigError::Invalid {
            key: format!("{ENV_PREFIX}{name}"),
            // A URL's `user:password@` is not shown, valid or not.
            value: shown(name, v),
            origin: o.clone(),
            expected: expected.to_string(),
        }
    }

    /// The trimmed value, if its text is of the kind; numbers, ratios and booleans
    /// are left to their types.
    fn checked(&self, name: &str, kind: ValueKind) -> Result<&str, ConfigError> {
        let v = self.l.get(name).0.trim();
        let ok = match kind {
            ValueKind::Text => !v.is_empty(),
            ValueKind::OptText => true,
            ValueKind::Url => {
                (v.starts_with("http://") || v.starts_with("https://"))
                    && v.split_once("://").is_some_and(|(_, h)| !h.is_empty())
            }
            ValueKind::Proto => v == "http" || v == "https",
            ValueKind::OneOf(words) => words.contains(&v),
            ValueKind::Label => {
                v.is_empty() || v.split_once('=').is_some_and(|(a, _)| !a.is_empty())
            }
            ValueKind::ListenAddr => v.is_empty() || v.parse::<std::net::SocketAddr>().is_ok(),
            ValueKind::AbsPath => v.starts_with('/'),
            ValueKind::OptAbsPath => v.is_empty() || v.starts_with('/'),
            ValueKind::Seconds
            | ValueKind::SecondsOrZero
            | ValueKind::Count
            | ValueKind::CountOrZero
            | ValueKind::Ratio
            | ValueKind::Bool => true,
        };
        if ok {
            Ok(v)
        } else {
            Err(self.invalid(name, &expected(kind)))
        }
    }
}

/// true/false/1/0/yes/no in any case (also on/off).
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// What a value of `kind` must look like, as a refusal says it.
pub(crate) fn expected(kind: ValueKind) -> String {
    match kind {
        ValueKind::Seconds => "a whole number of seconds greater than 0".into(),
        ValueKind::SecondsOrZero => "a whole number, 0 or more".into(),
        ValueKind::Count => "a whole number greater than 0".into(),
        ValueKind::CountOrZero => "a whole number, 0 or more".into(),
        ValueKind::Ratio => "a number from 0 to 1".into(),
        ValueKind::Bool => "true/false, 1/0 or yes/no".into(),
        ValueKind::AbsPath => "an absolute path".into(),
        ValueKind::OptAbsPath => "an absolute path, or empty".into(),
        ValueKind::Url => "an http:// or https:// URL".into(),
        ValueKind::Proto => "http or https".into(),
        ValueKind::OneOf(words) => format!("one of {}", words.join(", ")),
        ValueKind::ListenAddr => "an address like 127.0.0.1:9180, or empty to turn it off".into(),
        ValueKind::Label => "key=value, or empty".into(),
        ValueKind::Text => "a non-empty value".into(),
        ValueKind::OptText => "any text".into(),
    }
}
