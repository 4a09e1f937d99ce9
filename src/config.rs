//! Settings: every key of the original agent, under the same `SBPS_MARSHAL_` names
//! and defaults, plus what the original hard-coded and what the new design needs.
//!
//! Layers, lowest to highest: built-in defaults ← TOML file (`--config PATH`, else
//! `/etc/sbps-marshal/config.toml` when it exists) ← environment
//! (`SBPS_MARSHAL_<KEY>`) ← command line (`--set KEY=VALUE`). Every value remembers
//! the layer it came from, so `sbps-marshal config` can say, and so a bad value is
//! reported with its key, value, origin and what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// Environment variable prefix, as the original.
pub const ENV_PREFIX: &str = "SBPS_MARSHAL_";
/// The configuration file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/sbps-marshal/config.toml";

/// How a key's value is checked and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Whole seconds, > 0.
    Seconds,
    /// Whole seconds, ≥ 0.
    SecondsOrZero,
    /// Positive integer.
    Count,
    /// Integer, ≥ 0.
    CountOrZero,
    /// A number in [0, 1].
    Ratio,
    /// true/false/1/0/yes/no, any case.
    Bool,
    /// An absolute path.
    AbsPath,
    /// An absolute path or empty (off).
    OptAbsPath,
    /// An http(s) URL.
    Url,
    /// `http` or `https`.
    Proto,
    /// One of the listed words.
    OneOf(&'static [&'static str]),
    /// `host:port`, or empty (off).
    ListenAddr,
    /// `key=value`.
    Label,
    /// Any non-empty text.
    Text,
    /// Any text, possibly empty.
    OptText,
}

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
    pub fn as_str(self) -> &'static str {
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

/// One setting.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: ValueKind,
    pub help: &'static str,
    /// How it differs from the original agent, if it does.
    pub compat: &'static str,
}

macro_rules! keys {
    ($( $name:literal, $default:literal, $kind:expr, $help:literal, $compat:literal; )*) => {
        /// Every key, in the order `config` prints them.
        pub const KEYS: &[Key] = &[ $( Key { name: $name, default: $default, kind: $kind, help: $help, compat: $compat }, )* ];
    };
}

keys! {
    "SCAN_FREQUENCY", "180", ValueKind::Seconds, "Seconds between scans.", "validated (the original accepted anything)";
    "API_GATEWAY", "https://api-gw-service-nmn.local", ValueKind::Url, "API gateway base URL.", "";
    "IMS_URI", "apis/ims/v3/images", ValueKind::Text, "IMS images path, joined to API_GATEWAY.", "";
    "IMS_TAGGING", "true", ValueKind::Bool, "Project only IMS images tagged sbps-project=true (records without metadata are projected).", "accepts true/false/1/0/yes/no in any case; the original read anything but exactly \"true\" as false";
    "IMS_TIMEOUT", "10", ValueKind::Seconds, "IMS request timeout, seconds.", "";
    "S3_HOST", "rgw-vip.nmn", ValueKind::Text, "S3 endpoint host[:port].", "";
    "S3_PROTO", "https", ValueKind::Proto, "S3 endpoint scheme.", "TLS is verified by default (the original never verified)";
    "S3_CREDENTIAL_FILE", "/root/.ims.s3fs", ValueKind::AbsPath, "s3fs passwd file with ACCESS_KEY:SECRET.", "";
    "S3_BUCKET", "boot-images", ValueKind::Text, "Bucket holding the images.", "";
    "SQUASHFS_S3FS_MOUNT", "/var/lib/cps-local/boot-images", ValueKind::AbsPath, "s3fs mount of the bucket; only backstores under it are managed.", "";
    "SPIRE_AGENT_PATH", "/opt/cray/cray-spire/sbps-marshal-spire-agent", ValueKind::AbsPath, "spire-agent binary (hard link attested by path).", "";
    "SPIRE_JWT_AUDIENCE", "system-compute", ValueKind::Text, "JWT-SVID audience.", "";
    "SPIRE_AGENT_SOCK_PATH", "/var/lib/spire/agent.sock", ValueKind::AbsPath, "SPIRE agent Workload API socket.", "";
    "LIO_SAVE_FILE", "/etc/target/saveconfig.json", ValueKind::AbsPath, "LIO saveconfig.json, written from the kernel state after changes.", "written once per scan that changed something, not after every change";
    "TARGETCLI_BIN", "/usr/bin/targetcli", ValueKind::AbsPath, "targetcli, used by the targetcli backend.", "";
    "KUBECONFIG", "/etc/kubernetes/admin.conf", ValueKind::AbsPath, "kubeconfig of the Kubernetes API (node labels, the ledger's ConfigMaps); when the file does not exist, the pod's service account is used.", "hard-coded in the original";
    "REMOTE_LEDGER", "true", ValueKind::Bool, "Keep the ledger (LUN numbers, quarantines) in the Kubernetes API too, one ConfigMap per node, so a rebuilt worker gets every number back and new images take the fleet's numbers; false = the local file only.", "new: the original kept no LUN numbers";
    "LEDGER_NAMESPACE", "services", ValueKind::Text, "Kubernetes namespace of the ledger ConfigMaps (sbps-marshal-ledger-<node>).", "new";
    "XNAME_FILE", "/etc/cray/xname", ValueKind::AbsPath, "File holding this node's xname (accepted SPIFFE ID).", "hard-coded in the original";
    "STATE_DIR", "/var/lib/sbps-marshal", ValueKind::AbsPath, "Directory of the ledger (LUN numbers, quarantine, absences).", "hard-coded in the original";
    "NODE_NAME", "", ValueKind::OptText, "This node's name: its Node carries it in the kubernetes.io/hostname label (or is named so); empty = this host's name.", "hard-coded (hostname) in the original";
    "NODE_LABEL", "iscsi=sbps", ValueKind::Label, "Label that enables the target on this node; empty = no label gating (the target is always enabled).", "hard-coded in the original";
    "TARGET_IQN", "", ValueKind::OptText, "iSCSI target IQN; empty = iqn.2023-06.csm.iscsi:<node name>.", "hard-coded in the original";
    "TPG_TAG", "1", ValueKind::Count, "Target portal group tag.", "new";
    "LIO_BACKEND", "configfs", ValueKind::OneOf(&["configfs", "targetcli"]), "How LIO is changed: direct configfs writes, or targetcli as the original.", "new; the original always used targetcli";
    "CONFIGFS_ROOT", "/sys/kernel/config/target", ValueKind::AbsPath, "LIO configfs root.", "new";
    "TLS_VERIFY", "true", ValueKind::Bool, "Verify TLS certificates of S3, IMS and Kubernetes.", "new; the original never verified";
    "CA_BUNDLE", "", ValueKind::OptAbsPath, "Extra PEM CA bundle trusted besides the system roots (for Kubernetes, besides the kubeconfig's CA).", "new";
    "SPIRE_PROVIDER", "cli", ValueKind::OneOf(&["cli", "workload-api"]), "Token source: the spire-agent CLI (as the original) or the Workload API socket.", "new; `workload-api` needs the cargo feature `spiffe` (default, in the RPM)";
    "REMOVAL_GRACE", "600", ValueKind::SecondsOrZero, "Seconds an image must be known absent before its LUN is removed.", "new; the original removed at once";
    "LUN_QUARANTINE", "604800", ValueKind::SecondsOrZero, "Seconds a freed LUN number stays unused.", "new; the original reused numbers at once";
    "ADOPTION_QUARANTINE_ABOVE", "256", ValueKind::CountOrZero, "Adopting a target without a ledger (the original's, a corrupt ledger, a rebuilt worker): how many numbers above the highest LUN seen are quarantined for LUN_QUARANTINE besides the free ones below it, since the original may have freed them a moment ago; 0 = only those below.", "new; the original reused numbers at once";
    "DELETION_BRAKE_RATIO", "0.5", ValueKind::Ratio, "A scan removing more than this share of projections removes nothing and alerts.", "new";
    "DELETION_BRAKE_MIN", "2", ValueKind::CountOrZero, "Removals up to this count never engage the brake.", "new";
    "METRICS_LISTEN", "127.0.0.1:9180", ValueKind::ListenAddr, "Listen address of /metrics, /healthz, /status; empty = off.", "new";
    "METRICS_TEXTFILE", "", ValueKind::OptAbsPath, "node-exporter textfile (a .prom file in its textfile collector directory), rewritten atomically after every scan; empty = off.", "new";
    "MANIFEST_CONCURRENCY", "16", ValueKind::Count, "Manifests fetched at once.", "new";
    "GATHER_TIMEOUT", "300", ValueKind::Seconds, "Seconds the whole inventory (S3 listing, token, IMS, manifests, mount, node label) may take; past it the scan changes nothing and the next period runs.", "new";
    "MOUNT_TIMEOUT", "30", ValueKind::Seconds, "Seconds one stat of the s3fs mount may take; past it the image is unknown (a hung mount never stalls the scan).", "new";
    "COMMAND_TIMEOUT", "300", ValueKind::Seconds, "Seconds one systemctl or targetcli run may take (a start of target.service restores every LUN); past it the command is killed and the scan fails naming it.", "new; the original waited forever";
    "LOCK_TIMEOUT", "60", ValueKind::Seconds, "Seconds to wait for targetcli.lock and rtslib_backstore.lock (an administrator's open targetcli holds them); past it the scan changes nothing and names the holder.", "new; the original waited forever";
    "LIO_TIMEOUT", "120", ValueKind::Seconds, "Seconds one LIO step (reading configfs, one operation, writing saveconfig.json; with LIO_BACKEND=targetcli at least COMMAND_TIMEOUT) may take; past it the scan reports the step as stuck, /healthz names it and the systemd watchdog is no longer pinged, so systemd restarts the agent.", "new; the original waited forever";
    "APPLY_PARALLELISM", "8", ValueKind::Count, "LIO operations run at once within a phase.", "new";
    "LOCK_FILE", "/run/sbps-marshal.lock", ValueKind::AbsPath, "Single-instance lock.", "new; the original relied on systemd alone";
    "RTSLIB_LOCK_DIR", "/var/run", ValueKind::AbsPath, "Where rtslib/targetcli keep targetcli.lock and rtslib_backstore.lock, taken around changes.", "new";
    "TARGET_SERVICE", "target.service", ValueKind::OptText, "systemd unit started when the node is labelled and it is not active; empty = not managed.", "the original always used target.service";
    "RESTART_TARGET_AFTER_FIRST_SCAN", "false", ValueKind::Bool, "The original's one-time `systemctl restart target.service` after the first scan.", "off by default: it drops every session";
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
    pub fn get(&self, name: &str) -> (&str, &Origin) {
        match self.values.get(name) {
            Some((v, o)) => (v.as_str(), o),
            None => ("", &Origin::Default),
        }
    }

    /// Every key with its value (redacted where needed) and origin, for `config`.
    pub fn describe(&self) -> Vec<(&'static str, String, &Origin)> {
        KEYS.iter()
            .map(|k| {
                let (v, o) = self.get(k.name);
                (k.name, redact(k, v), o)
            })
            .collect()
    }
}

/// The packaged `/etc/sbps-marshal/config.toml`: every key, commented out at its
/// default, with what it means (`sbps-marshal config --default-file` prints it).
pub fn default_file() -> String {
    let mut out = String::from(
        "# sbps-marshal settings. Every key is shown at its default, commented out.\n\
         # Precedence: --set KEY=VALUE > SBPS_MARSHAL_<KEY> environment > this file > default.\n",
    );
    for k in KEYS {
        out.push_str(&format!("\n# {}\n", k.help));
        if !k.compat.is_empty() {
            out.push_str(&format!(
                "# Compared with the original agent: {}.\n",
                k.compat
            ));
        }
        let value = match k.kind {
            ValueKind::Seconds
            | ValueKind::SecondsOrZero
            | ValueKind::Count
            | ValueKind::CountOrZero
            | ValueKind::Ratio
            | ValueKind::Bool => k.default.to_string(),
            _ => format!("{:?}", k.default),
        };
        out.push_str(&format!("# {} = {value}\n", k.name.to_ascii_lowercase()));
    }
    out
}

/// Looks a key up by its bare name (`SCAN_FREQUENCY`).
pub fn key(name: &str) -> Option<&'static Key> {
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
pub fn shown(name: &str, v: &str) -> String {
    key(name).map_or_else(|| v.to_string(), |k| redact(k, v))
}

/// The typed, validated settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub scan_frequency: Duration,
    pub api_gateway: String,
    pub ims_uri: String,
    pub ims_tagging: bool,
    pub ims_timeout: Duration,
    pub s3_host: String,
    pub s3_proto: String,
    pub s3_credential_file: PathBuf,
    pub s3_bucket: String,
    pub mount: PathBuf,
    pub spire_agent_path: PathBuf,
    pub spire_jwt_audience: String,
    pub spire_agent_sock_path: PathBuf,
    pub lio_save_file: PathBuf,
    pub targetcli_bin: PathBuf,
    pub kubeconfig: PathBuf,
    /// Keep the ledger in the Kubernetes API too.
    pub remote_ledger: bool,
    pub ledger_namespace: String,
    pub xname_file: PathBuf,
    pub state_dir: PathBuf,
    pub node_name: String,
    /// `None`: not gated by a label.
    pub node_label: Option<(String, String)>,
    pub target_iqn: String,
    pub tpg_tag: u32,
    pub lio_backend: crate::paths::Backend,
    pub configfs_root: PathBuf,
    pub tls_verify: bool,
    pub ca_bundle: Option<PathBuf>,
    pub spire_provider: SpireProvider,
    pub removal_grace: Duration,
    pub lun_quarantine: Duration,
    /// Numbers above the highest LUN quarantined when adopting a target without a ledger.
    pub adoption_quarantine_above: u64,
    pub deletion_brake_ratio: f64,
    pub deletion_brake_min: usize,
    pub metrics_listen: Option<String>,
    /// The node-exporter textfile; `None`: not written.
    pub metrics_textfile: Option<PathBuf>,
    pub manifest_concurrency: usize,
    /// Deadline of one stat of the mount.
    pub mount_timeout: Duration,
    /// Deadline of the whole inventory of one scan.
    pub gather_timeout: Duration,
    /// Deadline of one systemctl or targetcli run.
    pub command_timeout: Duration,
    /// Deadline of the wait for rtslib's lock files.
    pub lock_timeout: Duration,
    /// Deadline of one LIO step, past which the agent counts as stuck.
    pub lio_timeout: Duration,
    pub apply_parallelism: usize,
    pub lock_file: PathBuf,
    pub rtslib_lock_dir: PathBuf,
    pub target_service: Option<String>,
    pub restart_target_after_first_scan: bool,
}

impl Settings {
    /// Validates every layer value; `hostname` fills NODE_NAME and TARGET_IQN when empty.
    pub fn from_layers(l: &Layers, hostname: &str) -> Result<Settings, ConfigError> {
        let p = Parser { l };
        let node_name = match p.text("NODE_NAME")? {
            n if n.is_empty() => hostname.to_string(),
            n => n,
        };
        let target_iqn = match p.text("TARGET_IQN")? {
            n if n.is_empty() => format!("iqn.2023-06.csm.iscsi:{node_name}"),
            n => n,
        };
        Ok(Settings {
            scan_frequency: p.secs("SCAN_FREQUENCY")?,
            api_gateway: p.text("API_GATEWAY")?,
            ims_uri: p.text("IMS_URI")?,
            ims_tagging: p.bool("IMS_TAGGING")?,
            ims_timeout: p.secs("IMS_TIMEOUT")?,
            s3_host: p.text("S3_HOST")?,
            s3_proto: p.text("S3_PROTO")?,
            s3_credential_file: p.path("S3_CREDENTIAL_FILE")?,
            s3_bucket: p.text("S3_BUCKET")?,
            mount: p.path("SQUASHFS_S3FS_MOUNT")?,
            spire_agent_path: p.path("SPIRE_AGENT_PATH")?,
            spire_jwt_audience: p.text("SPIRE_JWT_AUDIENCE")?,
            spire_agent_sock_path: p.path("SPIRE_AGENT_SOCK_PATH")?,
            lio_save_file: p.path("LIO_SAVE_FILE")?,
            targetcli_bin: p.path("TARGETCLI_BIN")?,
            kubeconfig: p.path("KUBECONFIG")?,
            remote_ledger: p.bool("REMOTE_LEDGER")?,
            ledger_namespace: p.text("LEDGER_NAMESPACE")?,
            xname_file: p.path("XNAME_FILE")?,
            state_dir: p.path("STATE_DIR")?,
            node_name,
            node_label: p.label("NODE_LABEL")?,
            target_iqn,
            tpg_tag: u32::try_from(p.count("TPG_TAG")?)
                .map_err(|_| p.invalid("TPG_TAG", "a TPG tag below 2^32"))?,
            lio_backend: p.parsed("LIO_BACKEND")?,
            configfs_root: p.path("CONFIGFS_ROOT")?,
            tls_verify: p.bool("TLS_VERIFY")?,
            ca_bundle: p.opt_path("CA_BUNDLE")?,
            spire_provider: p.spire_provider()?,
            removal_grace: p.secs("REMOVAL_GRACE")?,
            lun_quarantine: p.secs("LUN_QUARANTINE")?,
            adoption_quarantine_above: p.count("ADOPTION_QUARANTINE_ABOVE")?,
            deletion_brake_ratio: p.ratio("DELETION_BRAKE_RATIO")?,
            deletion_brake_min: p.count("DELETION_BRAKE_MIN")? as usize,
            metrics_listen: Some(p.text("METRICS_LISTEN")?).filter(|s| !s.is_empty()),
            metrics_textfile: match p.opt_path("METRICS_TEXTFILE")? {
                // node-exporter's textfile collector reads only `*.prom` files.
                Some(f) if f.extension().is_none_or(|e| e != "prom") => {
                    return Err(p.invalid(
                        "METRICS_TEXTFILE",
                        "an absolute path of a file ending in .prom (node-exporter reads only those), or empty",
                    ))
                }
                f => f,
            },
            manifest_concurrency: p.count("MANIFEST_CONCURRENCY")? as usize,
            mount_timeout: p.secs("MOUNT_TIMEOUT")?,
            gather_timeout: p.secs("GATHER_TIMEOUT")?,
            command_timeout: p.secs("COMMAND_TIMEOUT")?,
            lock_timeout: p.secs("LOCK_TIMEOUT")?,
            lio_timeout: p.secs("LIO_TIMEOUT")?,
            apply_parallelism: p.count("APPLY_PARALLELISM")? as usize,
            lock_file: p.path("LOCK_FILE")?,
            rtslib_lock_dir: p.path("RTSLIB_LOCK_DIR")?,
            target_service: Some(p.text("TARGET_SERVICE")?).filter(|s| !s.is_empty()),
            restart_target_after_first_scan: p.bool("RESTART_TARGET_AFTER_FIRST_SCAN")?,
        })
    }

    /// The ledger file inside STATE_DIR. Not the original's `state.json`, which is
    /// left alone so that switching back stays possible.
    pub fn ledger_file(&self) -> PathBuf {
        self.state_dir.join("ledger.json")
    }

    /// The S3 endpoint URL.
    pub fn s3_endpoint(&self) -> String {
        format!("{}://{}", self.s3_proto, self.s3_host)
    }
}

struct Parser<'a> {
    l: &'a Layers,
}

impl Parser<'_> {
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

    fn raw(&self, name: &str) -> &str {
        self.l.get(name).0.trim()
    }

    fn checked(&self, name: &str) -> Result<String, ConfigError> {
        let k = key(name).ok_or_else(|| self.invalid(name, "a known key"))?;
        let v = self.raw(name);
        let ok = match k.kind {
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
            _ => true,
        };
        if ok {
            Ok(v.to_string())
        } else {
            Err(self.invalid(name, expected(k.kind).as_str()))
        }
    }

    fn text(&self, name: &str) -> Result<String, ConfigError> {
        self.checked(name)
    }

    /// SPIRE_PROVIDER, refused at start when it names a client this build left out
    /// (rather than failing every scan later).
    fn spire_provider(&self) -> Result<SpireProvider, ConfigError> {
        let provider: SpireProvider = self.parsed("SPIRE_PROVIDER")?;
        if provider == SpireProvider::WorkloadApi && !crate::inventory::spire::WORKLOAD_API_BUILT {
            return Err(ConfigError::NotBuilt {
                key: format!("{ENV_PREFIX}SPIRE_PROVIDER"),
                value: provider.to_string(),
                origin: self.l.get("SPIRE_PROVIDER").1.clone(),
                needs: "the SPIFFE Workload API client, which this build of sbps-marshal \
                        leaves out (cargo feature `spiffe`): use SPIRE_PROVIDER=cli (the \
                        spire-agent binary), or a build with the feature (the RPM has it)",
            });
        }
        Ok(provider)
    }

    /// A `OneOf` key as its enum: the words are checked first, so a refusal names them.
    fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<T, ConfigError> {
        let v = self.checked(name)?;
        let expected = key(name).map_or_else(String::new, |k| expected(k.kind));
        v.parse().map_err(|_| self.invalid(name, expected.as_str()))
    }

    fn path(&self, name: &str) -> Result<PathBuf, ConfigError> {
        self.checked(name).map(PathBuf::from)
    }

    fn opt_path(&self, name: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(Some(self.checked(name)?)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from))
    }

    fn label(&self, name: &str) -> Result<Option<(String, String)>, ConfigError> {
        let v = self.checked(name)?;
        if v.is_empty() {
            return Ok(None);
        }
        let (a, b) = v
            .split_once('=')
            .ok_or_else(|| self.invalid(name, "key=value"))?;
        Ok(Some((a.to_string(), b.to_string())))
    }

    fn count(&self, name: &str) -> Result<u64, ConfigError> {
        let min = match key(name).map(|k| k.kind) {
            Some(ValueKind::SecondsOrZero | ValueKind::CountOrZero) => 0,
            _ => 1,
        };
        match self.raw(name).parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(self.invalid(
                name,
                expected(key(name).map_or(ValueKind::Count, |k| k.kind)).as_str(),
            )),
        }
    }

    fn secs(&self, name: &str) -> Result<Duration, ConfigError> {
        self.count(name).map(Duration::from_secs)
    }

    fn ratio(&self, name: &str) -> Result<f64, ConfigError> {
        match self.raw(name).parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(self.invalid(name, "a number from 0 to 1")),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        parse_bool(self.raw(name)).ok_or_else(|| self.invalid(name, "true/false, 1/0 or yes/no"))
    }
}

/// true/false/1/0/yes/no in any case (also on/off).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn expected(kind: ValueKind) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spire_provider_is_named_as_spire_provider_spells_it() {
        for p in [SpireProvider::Cli, SpireProvider::WorkloadApi] {
            assert_eq!(p.as_str().parse::<SpireProvider>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("{:?}", p.as_str())
            );
        }
        assert!("workload_api".parse::<SpireProvider>().is_err());
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let l = Layers::load(Some(Path::new("/dev/null")), env(pairs), &[])?;
        Settings::from_layers(&l, "ncn-w001")
    }

    #[test]
    fn defaults_are_the_originals() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.scan_frequency, Duration::from_secs(180));
        assert_eq!(s.api_gateway, "https://api-gw-service-nmn.local");
        assert_eq!(s.ims_uri, "apis/ims/v3/images");
        assert!(s.ims_tagging);
        assert_eq!(s.ims_timeout, Duration::from_secs(10));
        assert_eq!(s.mount_timeout, Duration::from_secs(30));
        assert_eq!(s.gather_timeout, Duration::from_secs(300));
        assert_eq!(s.command_timeout, Duration::from_secs(300));
        assert_eq!(s.lock_timeout, Duration::from_secs(60));
        assert_eq!(s.lio_timeout, Duration::from_secs(120));
        assert_eq!(s.adoption_quarantine_above, 256);
        assert_eq!(s.s3_endpoint(), "https://rgw-vip.nmn");
        assert_eq!(s.s3_credential_file, PathBuf::from("/root/.ims.s3fs"));
        assert_eq!(s.s3_bucket, "boot-images");
        assert_eq!(s.mount, PathBuf::from("/var/lib/cps-local/boot-images"));
        assert_eq!(
            s.spire_agent_path,
            PathBuf::from("/opt/cray/cray-spire/sbps-marshal-spire-agent")
        );
        assert_eq!(s.spire_jwt_audience, "system-compute");
        assert_eq!(
            s.spire_agent_sock_path,
            PathBuf::from("/var/lib/spire/agent.sock")
        );
        assert_eq!(
            s.lio_save_file,
            PathBuf::from("/etc/target/saveconfig.json")
        );
        assert_eq!(s.targetcli_bin, PathBuf::from("/usr/bin/targetcli"));
        assert_eq!(s.target_iqn, "iqn.2023-06.csm.iscsi:ncn-w001");
        assert_eq!(s.node_label, Some(("iscsi".into(), "sbps".into())));
    }

    #[test]
    fn env_overrides_and_bools() {
        for (v, want) in [("TRUE", true), ("no", false), ("0", false), ("Yes", true)] {
            let s = settings(&[("SBPS_MARSHAL_IMS_TAGGING", v)]).unwrap();
            assert_eq!(s.ims_tagging, want, "{v}");
        }
        let s = settings(&[("SBPS_MARSHAL_SCAN_FREQUENCY", "30")]).unwrap();
        assert_eq!(s.scan_frequency, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_key_value_and_origin() {
        let e = settings(&[("SBPS_MARSHAL_SCAN_FREQUENCY", "abc")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SBPS_MARSHAL_SCAN_FREQUENCY"), "{e}");
        assert!(e.contains("\"abc\""), "{e}");
        assert!(e.contains("env SBPS_MARSHAL_SCAN_FREQUENCY"), "{e}");
        assert!(e.contains("greater than 0"), "{e}");
        for (k, v) in [
            ("SBPS_MARSHAL_SCAN_FREQUENCY", "0"),
            ("SBPS_MARSHAL_SCAN_FREQUENCY", "-5"),
            ("SBPS_MARSHAL_LIO_BACKEND", "rtslib"),
            ("SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT", "relative/mount"),
            ("SBPS_MARSHAL_IMS_TAGGING", "maybe"),
            ("SBPS_MARSHAL_S3_PROTO", "ftp"),
            ("SBPS_MARSHAL_DELETION_BRAKE_RATIO", "1.5"),
        ] {
            let e = settings(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn precedence_flag_over_env_over_file_over_default() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "scan_frequency = 60\nims_timeout = 5\nS3_BUCKET = \"file-bucket\"\n",
        )
        .unwrap();
        let l = Layers::load(
            Some(&f),
            env(&[
                ("SBPS_MARSHAL_IMS_TIMEOUT", "7"),
                ("SBPS_MARSHAL_S3_BUCKET", "env-bucket"),
            ]),
            &["s3_bucket=flag-bucket".to_string()],
        )
        .unwrap();
        let s = Settings::from_layers(&l, "h").unwrap();
        assert_eq!(s.scan_frequency, Duration::from_secs(60));
        assert_eq!(s.ims_timeout, Duration::from_secs(7));
        assert_eq!(s.s3_bucket, "flag-bucket");
        assert_eq!(l.get("SCAN_FREQUENCY").1, &Origin::File(f.clone()));
        assert_eq!(
            l.get("IMS_TIMEOUT").1,
            &Origin::Env("SBPS_MARSHAL_IMS_TIMEOUT".into())
        );
        assert_eq!(l.get("S3_BUCKET").1, &Origin::Flag);
        assert_eq!(l.get("IMS_URI").1, &Origin::Default);
    }

    #[test]
    fn file_errors_are_specific() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "no_such_key = 1\n").unwrap();
        let e = Layers::load(Some(&f), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no_such_key"), "{e}");
        std::fs::write(&f, "scan_frequency = [1]\n").unwrap();
        let e = Layers::load(Some(&f), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SCAN_FREQUENCY"), "{e}");
        let e = Layers::load(Some(&dir.path().join("missing.toml")), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
        let e = Layers::load(None, env(&[]), &["nonsense".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("KEY=VALUE"), "{e}");
    }

    #[test]
    fn packaged_default_file_lists_every_key_and_parses() {
        let text = default_file();
        let packaged = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/config.toml"
        ))
        .unwrap_or_default();
        assert_eq!(packaged, text, "packaging/config.toml is stale: run `sbps-marshal config --default-file > packaging/config.toml`");
        // Uncommented, it is a valid file giving the defaults.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|x| {
                x.split_once(" = ").is_some_and(|(k, _)| {
                    k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&f, uncommented).unwrap();
        let l = Layers::load(Some(&f), env(&[]), &[]).unwrap();
        assert!(Settings::from_layers(&l, "h").is_ok());
        assert_eq!(l.get("SCAN_FREQUENCY").1, &Origin::File(f.clone()));
    }

    #[test]
    fn urls_with_credentials_are_redacted() {
        let l = Layers::load(
            Some(Path::new("/dev/null")),
            env(&[("SBPS_MARSHAL_API_GATEWAY", "https://admin:hunter2@gw.local")]),
            &[],
        )
        .unwrap();
        let printed: Vec<String> = l
            .describe()
            .iter()
            .map(|(k, v, o)| format!("{k} {v} {o}"))
            .collect();
        assert!(printed.iter().all(|l| !l.contains("hunter2")));
        assert!(printed
            .iter()
            .any(|l| l.contains("https://<redacted>@gw.local")));
        assert_eq!(printed.len(), KEYS.len());
    }

    /// Regression: an invalid URL was echoed whole, password included, in the error.
    #[test]
    fn invalid_urls_with_credentials_are_redacted_in_errors() {
        let e = settings(&[("SBPS_MARSHAL_API_GATEWAY", "ftp://admin:hunter2@gw.local")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SBPS_MARSHAL_API_GATEWAY"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
