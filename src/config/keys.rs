//! The one table of settings. Each row declares a setting once: its field in
//! [`Settings`], the Rust type it is parsed to, its key, default, kind, help and how it
//! differs from the original agent. The [`settings!`] macro turns the rows into
//! [`KEYS`] (what `config` prints, the packaged config.toml and the README table are
//! made from), the typed `Settings` struct (the help is the field's doc comment) and
//! the parse of every field, so that a new setting is one line and the three cannot
//! disagree.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::parse::Parser;
use super::{ConfigError, SpireProvider};
use crate::paths::Backend;

/// How a key's value is checked. The check is lexical and the same for every key of a
/// kind (`Parser::checked`); the field's type then turns the text into its value
/// ([`super::FromSetting`]), which is where ranges are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
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

impl ValueKind {
    /// Written bare in a TOML file (numbers and booleans) rather than quoted.
    pub(crate) fn is_bare_in_toml(self) -> bool {
        matches!(
            self,
            ValueKind::Seconds
                | ValueKind::SecondsOrZero
                | ValueKind::Count
                | ValueKind::CountOrZero
                | ValueKind::Ratio
                | ValueKind::Bool
        )
    }
}

/// One setting, as the table declares it.
#[derive(Debug)]
pub struct Key {
    /// The bare name (`SCAN_FREQUENCY`); the environment adds `SBPS_MARSHAL_`,
    /// the TOML file takes it in any case.
    pub name: &'static str,
    /// The built-in value, as text in the key's own syntax (empty = off or derived).
    pub(crate) default: &'static str,
    /// How its value is checked (and so written in a TOML file).
    pub(crate) kind: ValueKind,
    /// What it means, one sentence or two (also the `Settings` field's doc comment).
    pub(crate) help: &'static str,
    /// How it differs from the original agent, if it does.
    pub(crate) compat: &'static str,
}

/// Declares every setting once. It exists because each setting used to be spelled
/// three times (a `KEYS` row, a `Settings` field, a line of the parse) with nothing
/// holding them together: a key could be listed and never parsed, or parsed under
/// another kind than the one its documentation gave. A row reads
///
/// ```text
/// /// (optional extra doc lines for the field)
/// field: Type = "KEY", "default", Kind, "help", "compared with the original";
/// ```
///
/// where `Kind` is a [`ValueKind`] written without its `ValueKind::` prefix and `Type`
/// implements [`super::FromSetting`]. It expands to
/// - `KEYS`, the rows in order (the order `config` prints them);
/// - `Settings`, one `pub field: Type` per row, the help as its doc comment;
/// - `Settings::parse_each`, which checks each key's layered value against its kind
///   and parses it to its type, row by row, stopping at the first refusal.
///
/// The few rules that involve more than one value (or the build) are not rows: they
/// are the hand-written step after it, [`Settings::from_layers`].
macro_rules! settings {
    ($(
        $(#[$extra:meta])*
        $field:ident : $ty:ty = $name:literal, $default:literal, $kind:expr, $help:literal, $compat:literal;
    )*) => {
        /// Every key, in the order `config` prints them.
        pub const KEYS: &[Key] = &[$(
            Key {
                name: $name,
                default: $default,
                kind: { use ValueKind::*; $kind },
                help: $help,
                compat: $compat,
            },
        )*];

        /// The typed, validated settings: one field per row of the table, in its order.
        #[derive(Debug, Clone, Serialize)]
        pub struct Settings {
            $(
                #[doc = $help]
                $(#[$extra])*
                pub $field: $ty,
            )*
        }

        impl Settings {
            /// Every field parsed from its layered value, in the table's order; the
            /// first bad value is the error. The cross-field rules come after.
            pub(super) fn parse_each(p: &Parser<'_>) -> Result<Settings, ConfigError> {
                Ok(Settings {
                    $( $field: p.field($name, { use ValueKind::*; $kind })?, )*
                })
            }
        }
    };
}

settings! {
    scan_frequency: Duration = "SCAN_FREQUENCY", "180", Seconds, "Seconds between scans.", "validated (the original accepted anything)";
    api_gateway: String = "API_GATEWAY", "https://api-gw-service-nmn.local", Url, "API gateway base URL.", "";
    ims_uri: String = "IMS_URI", "apis/ims/v3/images", Text, "IMS images path, joined to API_GATEWAY.", "";
    ims_tagging: bool = "IMS_TAGGING", "true", Bool, "Project only IMS images tagged sbps-project=true (records without metadata are projected).", "accepts true/false/1/0/yes/no in any case; the original read anything but exactly \"true\" as false";
    ims_timeout: Duration = "IMS_TIMEOUT", "10", Seconds, "IMS request timeout, seconds.", "";
    s3_host: String = "S3_HOST", "rgw-vip.nmn", Text, "S3 endpoint `host[:port]`.", "";
    s3_proto: String = "S3_PROTO", "https", Proto, "S3 endpoint scheme.", "TLS is verified by default (the original never verified)";
    s3_credential_file: PathBuf = "S3_CREDENTIAL_FILE", "/root/.ims.s3fs", AbsPath, "s3fs passwd file with ACCESS_KEY:SECRET.", "";
    s3_bucket: String = "S3_BUCKET", "boot-images", Text, "Bucket holding the images.", "";
    mount: PathBuf = "SQUASHFS_S3FS_MOUNT", "/var/lib/cps-local/boot-images", AbsPath, "s3fs mount of the bucket; only backstores under it are managed.", "";
    spire_agent_path: PathBuf = "SPIRE_AGENT_PATH", "/opt/cray/cray-spire/sbps-marshal-spire-agent", AbsPath, "spire-agent binary (hard link attested by path).", "";
    spire_jwt_audience: String = "SPIRE_JWT_AUDIENCE", "system-compute", Text, "JWT-SVID audience.", "";
    spire_agent_sock_path: PathBuf = "SPIRE_AGENT_SOCK_PATH", "/var/lib/spire/agent.sock", AbsPath, "SPIRE agent Workload API socket.", "";
    lio_save_file: PathBuf = "LIO_SAVE_FILE", "/etc/target/saveconfig.json", AbsPath, "LIO saveconfig.json, written from the kernel state after changes.", "written once per scan that changed something, not after every change";
    targetcli_bin: PathBuf = "TARGETCLI_BIN", "/usr/bin/targetcli", AbsPath, "targetcli, used by the targetcli backend.", "";
    kubeconfig: PathBuf = "KUBECONFIG", "/etc/kubernetes/admin.conf", AbsPath, "kubeconfig of the Kubernetes API (node labels, the ledger's ConfigMaps); when the file does not exist, the pod's service account is used.", "hard-coded in the original";
    remote_ledger: bool = "REMOTE_LEDGER", "true", Bool, "Keep the ledger (LUN numbers, quarantines) in the Kubernetes API too, one ConfigMap per node, so a rebuilt worker gets every number back and new images take the fleet's numbers; false = the local file only.", "new: the original kept no LUN numbers";
    ledger_namespace: String = "LEDGER_NAMESPACE", "services", Text, "Kubernetes namespace of the ledger ConfigMaps (`sbps-marshal-ledger-<node>`).", "new";
    xname_file: PathBuf = "XNAME_FILE", "/etc/cray/xname", AbsPath, "File holding this node's xname (accepted SPIFFE ID).", "hard-coded in the original";
    state_dir: PathBuf = "STATE_DIR", "/var/lib/sbps-marshal", AbsPath, "Directory of the ledger (LUN numbers, quarantine, absences).", "hard-coded in the original";
    /// Never empty once parsed: [`Settings::from_layers`] fills in the host's name.
    node_name: String = "NODE_NAME", "", OptText, "This node's name: its Node carries it in the kubernetes.io/hostname label (or is named so); empty = this host's name.", "hard-coded (hostname) in the original";
    /// `None`: not gated by a label.
    node_label: Option<(String, String)> = "NODE_LABEL", "iscsi=sbps", Label, "Label that enables the target on this node; empty = no label gating (the target is always enabled).", "hard-coded in the original";
    /// Never empty once parsed: [`Settings::from_layers`] derives it from the node name.
    target_iqn: String = "TARGET_IQN", "", OptText, "iSCSI target IQN; empty = `iqn.2023-06.csm.iscsi:<node name>`.", "hard-coded in the original";
    tpg_tag: u32 = "TPG_TAG", "1", Count, "Target portal group tag.", "new";
    lio_backend: Backend = "LIO_BACKEND", "configfs", OneOf(&["configfs", "targetcli"]), "How LIO is changed: direct configfs writes, or targetcli as the original. With targetcli, an image whose path targetcli's command line would misread (anything but ASCII letters, digits and `_+/.<>()~@:-]`) is skipped (`unsafe-path`).", "new; the original always used targetcli";
    configfs_root: PathBuf = "CONFIGFS_ROOT", "/sys/kernel/config/target", AbsPath, "LIO configfs root.", "new";
    tls_verify: bool = "TLS_VERIFY", "true", Bool, "Verify TLS certificates of S3, IMS and Kubernetes.", "new; the original never verified";
    ca_bundle: Option<PathBuf> = "CA_BUNDLE", "", OptAbsPath, "Extra PEM CA bundle trusted besides the system roots (for Kubernetes, besides the kubeconfig's CA).", "new";
    /// `WorkloadApi` only in a build with the `spiffe` feature ([`Settings::from_layers`]).
    spire_provider: SpireProvider = "SPIRE_PROVIDER", "cli", OneOf(&["cli", "workload-api"]), "Token source: the spire-agent CLI (as the original) or the Workload API socket.", "new; `workload-api` needs the cargo feature `spiffe` (default, in the RPM)";
    removal_grace: Duration = "REMOVAL_GRACE", "600", SecondsOrZero, "Seconds an image must be known absent before its LUN is removed.", "new; the original removed at once";
    lun_quarantine: Duration = "LUN_QUARANTINE", "604800", SecondsOrZero, "Seconds a freed LUN number stays unused.", "new; the original reused numbers at once";
    adoption_quarantine_above: u64 = "ADOPTION_QUARANTINE_ABOVE", "256", CountOrZero, "Adopting a target without a ledger (the original's, a corrupt ledger, a rebuilt worker): how many numbers above the highest LUN seen are quarantined for LUN_QUARANTINE besides the free ones below it, since the original may have freed them a moment ago; 0 = only those below.", "new; the original reused numbers at once";
    deletion_brake_ratio: f64 = "DELETION_BRAKE_RATIO", "0.5", Ratio, "A scan removing more than this share of the projections of one kind (PE and rootfs are judged apart) removes nothing of that kind and alerts.", "new";
    deletion_brake_min: usize = "DELETION_BRAKE_MIN", "2", CountOrZero, "Removals of one kind up to this count never engage the brake.", "new";
    /// `None`: no HTTP endpoint.
    metrics_listen: Option<String> = "METRICS_LISTEN", "127.0.0.1:9180", ListenAddr, "Listen address of /metrics, /healthz, /status; empty = off.", "new";
    /// `None`: not written. A `.prom` file ([`Settings::from_layers`]).
    metrics_textfile: Option<PathBuf> = "METRICS_TEXTFILE", "", OptAbsPath, "node-exporter textfile (a .prom file in its textfile collector directory), rewritten atomically after every scan; empty = off. A name not ending in `.prom` is refused (node-exporter would never read it).", "new";
    manifest_concurrency: usize = "MANIFEST_CONCURRENCY", "16", Count, "Manifests fetched at once.", "new";
    gather_timeout: Duration = "GATHER_TIMEOUT", "300", Seconds, "Seconds the whole inventory (S3 listing, token, IMS, manifests, mount, node label) may take; past it the scan changes nothing and the next period runs.", "new";
    mount_timeout: Duration = "MOUNT_TIMEOUT", "30", Seconds, "Seconds one stat of the s3fs mount may take; past it the image is unknown (a hung mount never stalls the scan).", "new";
    command_timeout: Duration = "COMMAND_TIMEOUT", "300", Seconds, "Seconds one systemctl or targetcli run may take (a start of target.service restores every LUN); past it the command is killed and the scan fails naming it.", "new; the original waited forever";
    lock_timeout: Duration = "LOCK_TIMEOUT", "60", Seconds, "Seconds to wait for targetcli.lock and rtslib_backstore.lock (an administrator's open targetcli holds them); past it the scan changes nothing and names the holder.", "new; the original waited forever";
    /// Past it the agent counts as stuck.
    lio_timeout: Duration = "LIO_TIMEOUT", "120", Seconds, "Seconds one LIO step (reading configfs, one operation, writing saveconfig.json; with LIO_BACKEND=targetcli at least COMMAND_TIMEOUT) may take; past it the scan reports the step as stuck, /healthz names it and the systemd watchdog is no longer pinged, so systemd restarts the agent.", "new; the original waited forever";
    apply_parallelism: usize = "APPLY_PARALLELISM", "8", Count, "LIO operations run at once within a phase.", "new";
    lock_file: PathBuf = "LOCK_FILE", "/run/sbps-marshal.lock", AbsPath, "Single-instance lock.", "new; the original relied on systemd alone";
    rtslib_lock_dir: PathBuf = "RTSLIB_LOCK_DIR", "/var/run", AbsPath, "Where rtslib/targetcli keep targetcli.lock and rtslib_backstore.lock, taken around changes.", "new";
    /// `None`: target.service is not managed.
    target_service: Option<String> = "TARGET_SERVICE", "target.service", OptText, "systemd unit started when the node is labelled and it is not active; empty = not managed.", "the original always used target.service";
    restart_target_after_first_scan: bool = "RESTART_TARGET_AFTER_FIRST_SCAN", "false", Bool, "The original's one-time `systemctl restart target.service` after the first scan.", "off by default: it drops every session";
}
