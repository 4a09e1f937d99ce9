//! The raw layered values: defaults ← TOML file ← environment ← `--set` flags, each
//! value as text with the layer it came from. Parsing is [`super::parse`]'s.

use std::collections::BTreeMap;
use std::path::Path;

use super::{key, redact, ConfigError, Origin, DEFAULT_CONFIG_FILE, ENV_PREFIX, KEYS};

/// The raw layered values: key → (value, origin).
#[derive(Debug, Clone)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl Layers {
    /// Defaults ← `file` (or the default file if it exists) ← `env` ← `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[String],
    ) -> Result<Layers, ConfigError> {
        let mut l = Layers {
            values: KEYS
                .iter()
                .map(|k| (k.name, (k.default.to_string(), Origin::Default)))
                .collect(),
        };
        let default = Path::new(DEFAULT_CONFIG_FILE);
        let file = match file {
            Some(f) => Some(f),
            None if default.exists() => Some(default),
            None => None,
        };
        if let Some(path) = file {
            l.read_file(path)?;
        }
        for (var, value) in env {
            let Some(name) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == "CONFIG" {
                continue;
            }
            // Unknown SBPS_MARSHAL_* variables are ignored (the environment is shared),
            // but a known one is always validated.
            if let Some(k) = key(name) {
                l.values.insert(k.name, (value, Origin::Env(var.clone())));
            }
        }
        for f in flags {
            let (name, value) = f
                .split_once('=')
                .ok_or_else(|| ConfigError::BadFlag(f.clone()))?;
            let k =
                key(&name.trim().to_ascii_uppercase()).ok_or_else(|| ConfigError::UnknownKey {
                    key: name.to_string(),
                    origin: Origin::Flag,
                })?;
            l.values.insert(k.name, (value.to_string(), Origin::Flag));
        }
        Ok(l)
    }

    fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: path.to_path_buf(),
                detail: e.message().to_string(),
            })?;
        let origin = Origin::File(path.to_path_buf());
        for (name, v) in table {
            let upper = name.to_ascii_uppercase();
            let k = key(&upper).ok_or_else(|| ConfigError::UnknownKey {
                key: name.clone(),
                origin: origin.clone(),
            })?;
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::Invalid {
                        key: k.name.into(),
                        value: format!("{other:?}"),
                        origin,
                        expected: "a string, number or boolean".into(),
                    })
                }
            };
            self.values.insert(k.name, (value, origin.clone()));
        }
        Ok(())
    }

    /// The value and origin of `name`.
    pub(crate) fn get(&self, name: &str) -> (&str, &Origin) {
        match self.values.get(name) {
            Some((v, o)) => (v.as_str(), o),
            None => ("", &Origin::Default),
        }
    }

    /// Every key with its value (redacted where needed) and origin, for `config`.
    pub(crate) fn describe(&self) -> Vec<(&'static str, String, &Origin)> {
        KEYS.iter()
            .map(|k| {
                let (v, o) = self.get(k.name);
                (k.name, redact(k, v), o)
            })
            .collect()
    }
}
