//! From settings to what runs: the live adapters (the sources, the LIO backend) and
//! the core's own settings (`desired::Settings`, `plan::Policy`). The one place that
//! reads `config::Settings` on the core's behalf, so the core never sees a setting name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use url::Url;

use crate::config::{Settings, SpireProvider};
use crate::desired;
use crate::http::TlsOptions;
use crate::inventory::gather::{Judge, Sources, SourcesSettings};
use crate::inventory::ims::ImsSettings;
use crate::inventory::node::NodeSettings;
use crate::inventory::s3::S3Settings;
use crate::inventory::spire::{SpireBackend, SpireSettings};
use crate::inventory::{ImageRecord, Inventory};
use crate::k8s::{InCluster, KubeSettings};
use crate::lio::configfs::{ConfigfsSettings, ConfigfsTarget};
use crate::lio::targetcli::{TargetcliSettings, TargetcliTarget};
use crate::lio::Target;
use crate::paths::Backend;

/// The TLS options every client uses.
pub(crate) fn tls(s: &Settings) -> TlsOptions {
    TlsOptions {
        ca_bundle: s.ca_bundle.clone(),
        insecure: !s.tls_verify,
    }
}

/// How to reach the Kubernetes API: `KUBECONFIG`, else (only when that file does not
/// exist) the service account of the pod the agent runs in; `TLS_VERIFY`/`CA_BUNDLE`
/// as for every source; 10 s a request.
pub fn kube(s: &Settings) -> KubeSettings {
    KubeSettings {
        kubeconfig: s.kubeconfig.clone(),
        in_cluster: InCluster::from_env(),
        tls: tls(s),
        timeout: Duration::from_secs(10),
    }
}

/// The sources configuration the settings describe.
pub fn sources_config(s: &Settings) -> Result<SourcesSettings> {
    let endpoint = Url::parse(&s.s3_endpoint()).with_context(|| {
        format!(
            "S3 endpoint {:?} (S3_PROTO + S3_HOST) is not a URL",
            s.s3_endpoint()
        )
    })?;
    let mut s3 = S3Settings::new(endpoint, &s.s3_bucket, s.s3_credential_file.clone());
    s3.tls = tls(s);
    let ims_url =
        crate::inventory::ims::join_url(&s.api_gateway, &s.ims_uri).with_context(|| {
            format!(
                "API_GATEWAY {:?} joined with IMS_URI {:?} is not a URL",
                crate::config::shown("API_GATEWAY", &s.api_gateway),
                s.ims_uri
            )
        })?;
    let mut ims = ImsSettings::new(ims_url);
    ims.timeout = s.ims_timeout;
    ims.tls = tls(s);
    let spire = SpireSettings {
        backend: match s.spire_provider {
            #[cfg(feature = "spiffe")]
            SpireProvider::WorkloadApi => SpireBackend::Native,
            // The settings refuse it in such a build; never fall back to the CLI silently.
            #[cfg(not(feature = "spiffe"))]
            SpireProvider::WorkloadApi => anyhow::bail!(
                "SPIRE_PROVIDER=workload-api: this build has no SPIFFE Workload API client (cargo feature `spiffe`)"
            ),
            SpireProvider::Cli => SpireBackend::Cli {
                agent: s.spire_agent_path.clone(),
            },
        },
        socket: s.spire_agent_sock_path.clone(),
        audience: s.spire_jwt_audience.clone(),
        xname_file: s.xname_file.clone(),
        ..SpireSettings::default()
    };
    let node = s.node_label.as_ref().map(|label| NodeSettings {
        api: kube(s),
        node_name: Some(s.node_name.clone()),
        label: label.clone(),
    });
    Ok(SourcesSettings {
        spire,
        node,
        manifest_concurrency: s.manifest_concurrency,
        mount_timeout: s.mount_timeout,
        ..SourcesSettings::new(s3, ims)
    })
}

/// Builds the sources.
pub(crate) fn sources(s: &Settings) -> Result<Sources> {
    Sources::new(sources_config(s)?).context("setting up the inventory sources")
}

/// Builds the LIO backend LIO_BACKEND names.
pub(crate) fn target(s: &Settings) -> Arc<dyn Target> {
    match s.lio_backend {
        Backend::Targetcli => Arc::new(TargetcliTarget::new(TargetcliSettings {
            bin: s.targetcli_bin.clone(),
            iqn: s.target_iqn.clone(),
            tag: s.tpg_tag,
            mount: s.mount.clone(),
            tmp_dir: std::env::temp_dir(),
            timeout: s.command_timeout,
        })),
        Backend::Configfs => Arc::new(ConfigfsTarget::real(ConfigfsSettings {
            root: s.configfs_root.clone(),
            tag: s.tpg_tag,
            lock_dir: Some(s.rtslib_lock_dir.clone()),
            lock_timeout: s.lock_timeout,
            ..ConfigfsSettings::new(&s.target_iqn, &s.mount)
        })),
    }
}

/// The ledger kept in the Kubernetes API (REMOTE_LEDGER), this node's ConfigMap in
/// LEDGER_NAMESPACE.
pub fn mirror(s: &Settings) -> Option<Arc<dyn crate::ledger::remote::LedgerMirror>> {
    if !s.remote_ledger {
        return None;
    }
    let connector = Arc::new(crate::k8s::KubeConnector::new(kube(s)));
    let store = crate::k8s::configmaps::KubeConfigMaps::new(connector, &s.ledger_namespace);
    Some(Arc::new(crate::ledger::kube::ConfigMapMirror::new(
        Arc::new(store),
        &s.node_name,
    )))
}

/// What `desired()` needs, from the settings.
pub fn desired_settings(s: &Settings) -> crate::desired::Settings {
    crate::desired::Settings {
        bucket: s.s3_bucket.clone(),
        mount: s.mount.clone(),
        ims_tagging: s.ims_tagging,
        backend: s.lio_backend,
    }
}

/// What `plan()` needs, from the settings, the label state and the operator's override.
pub(crate) fn policy(
    s: &Settings,
    labelled: Option<bool>,
    brake_released: bool,
) -> crate::plan::Policy {
    crate::plan::Policy {
        mount: s.mount.clone(),
        grace_secs: s.removal_grace.as_secs(),
        quarantine_secs: s.lun_quarantine.as_secs(),
        adoption_quarantine_above: s.adoption_quarantine_above,
        brake_ratio: s.deletion_brake_ratio,
        brake_min: s.deletion_brake_min,
        brake_released,
        labelled,
        numbers_frozen: None,
    }
}

/// The core's `desired` answers what the gathering asks (which manifests to fetch,
/// which keys to stat), so the inventory's adapters fetch only what a decision needs
/// without depending on the rules that make it.
impl Judge for desired::Settings {
    type Judging = desired::Judging;

    fn manifest_wanted<'a>(&self, record: &'a ImageRecord) -> Option<&'a str> {
        desired::manifest_wanted(record, self)
    }

    fn begin(&self, inventory: &Inventory) -> (desired::Judging, Vec<String>) {
        let judging = desired::judging(inventory, self);
        let keys = judging.mount_keys();
        (judging, keys)
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn mount(&self) -> &Path {
        &self.mount
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layers;
    use crate::inventory::{manifest, mount};
    use crate::lio::configfs::ConfigfsSettings;

    /// The adapters and the core keep defaults of their own (for tests, benches and
    /// library callers); each must be the default of the setting it stands for, or a
    /// library caller and the agent would behave differently out of the box.
    #[test]
    fn the_adapters_defaults_are_the_settings_defaults() {
        let layers = Layers::load(Some(std::path::Path::new("/dev/null")), Vec::new(), &[])
            .expect("the built-in defaults load");
        let s = Settings::from_layers(&layers, "ncn-w001").expect("the defaults are valid");

        assert_eq!(
            crate::plan::Policy::default(),
            policy(&s, Some(true), false)
        );
        assert_eq!(mount::DEFAULT_STAT_TIMEOUT, s.mount_timeout);
        assert_eq!(manifest::DEFAULT_CONCURRENCY, s.manifest_concurrency);
        assert_eq!(crate::lio::lock::DEFAULT_TIMEOUT, s.lock_timeout);
        let c = ConfigfsSettings::new(&s.target_iqn, &s.mount);
        assert_eq!(c.root, s.configfs_root);
        assert_eq!(c.tag, s.tpg_tag);
        assert_eq!(c.lock_dir.as_ref(), Some(&s.rtslib_lock_dir));
        assert_eq!(c.lock_timeout, s.lock_timeout);
    }
}
