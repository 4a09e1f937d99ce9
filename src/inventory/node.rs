//! Is this node labelled for SBPS? Asked of the Kubernetes API every scan.
//!
//! **Which Node is ours.** The original ran `kubectl get nodes
//! --selector=iscsi=sbps,kubernetes.io/hostname=<hostname>`: it found its Node by the
//! `kubernetes.io/hostname` label, which the kubelet sets to the host's name even when
//! the Node object is named otherwise (an FQDN object name, a short hostname). So do
//! we: the Nodes whose `kubernetes.io/hostname` is the node name (`NODE_NAME`, else
//! this host's name) are ours, and the node is labelled when one of them carries
//! `NODE_LABEL`. Only when that selection is empty is the Node looked up by object
//! name too (an operator may set `NODE_NAME` to the object's name).
//!
//! **Tri-state.** `Ok(true)` labelled; `Ok(false)` not labelled, or no such Node (an
//! empty selection *and* the API's `Status` NotFound for the name); `Err` unknown:
//! unreachable, timeout, 401/403, 5xx, a proxy's error page, an undecodable answer.
//! An unknown label leaves the TPG as it is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::Api;
use thiserror::Error;

use crate::k8s::{KubeConnector, KubeError, KubeSettings, Op};

/// The label the kubelet sets to the host's name.
pub(crate) const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Settings of the node-label source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// How to reach the API (default kubeconfig `/etc/kubernetes/admin.conf`, as the original).
    pub api: KubeSettings,
    /// The node's name; `None` → this host's name.
    pub node_name: Option<String>,
    /// Label key and value that mark an SBPS node (`iscsi=sbps`).
    pub label: (String, String),
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            api: KubeSettings::new("/etc/kubernetes/admin.conf"),
            node_name: None,
            label: ("iscsi".into(), "sbps".into()),
        }
    }
}

/// Why the label could not be known.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("cannot determine this host's name: {0}")]
    Hostname(String),
    #[error(transparent)]
    Api(#[from] KubeError),
}

/// The node-label source.
pub struct NodeSource {
    connector: Arc<KubeConnector>,
    node_name: Option<String>,
    label: (String, String),
    requests: AtomicU64,
}

impl NodeSource {
    pub fn new(cfg: NodeSettings) -> NodeSource {
        NodeSource::with_connector(
            Arc::new(KubeConnector::new(cfg.api)),
            cfg.node_name,
            cfg.label,
        )
    }

    /// A source on a connector shared with other users of the API.
    pub(crate) fn with_connector(
        connector: Arc<KubeConnector>,
        node_name: Option<String>,
        label: (String, String),
    ) -> NodeSource {
        NodeSource {
            connector,
            node_name,
            label,
            requests: AtomicU64::new(0),
        }
    }

    /// API requests sent so far (none while no client could be built).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether this node carries the label (see the module documentation for the rule).
    pub async fn labelled(&self) -> Result<bool, NodeError> {
        let name = match &self.node_name {
            Some(n) => n.clone(),
            None => local_hostname()?,
        };
        if is_label_value(&name) {
            let selected = self.select_by_hostname(&name).await?;
            if let Some(labelled) = verdict(&selected, &self.label) {
                return Ok(labelled);
            }
        }
        match self.get_by_name(&name).await? {
            Some(labels) => Ok(verdict(&[labels], &self.label).unwrap_or(false)),
            None => {
                tracing::info!(
                    node = %name,
                    "no Node labelled {HOSTNAME_LABEL}={name} nor named {name:?} in Kubernetes: not labelled"
                );
                Ok(false)
            }
        }
    }

    /// The names (their `kubernetes.io/hostname`, else the object name) of every Node
    /// carrying the label: the nodes that must each export every image (`fleet`).
    pub(crate) async fn labelled_nodes(&self) -> Result<Vec<String>, KubeError> {
        let (k, v) = &self.label;
        let nodes = self.select(&format!("{k}={v}")).await?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| {
                let labels = n.metadata.labels.as_ref();
                let by_label = labels.and_then(|l| l.get(HOSTNAME_LABEL).cloned());
                by_label.or(n.metadata.name)
            })
            .collect())
    }

    /// The labels of every Node whose hostname label is `name`.
    async fn select_by_hostname(&self, name: &str) -> Result<Vec<Labels>, KubeError> {
        let nodes = self.select(&format!("{HOSTNAME_LABEL}={name}")).await?;
        Ok(nodes
            .into_iter()
            .map(|n| n.metadata.labels.unwrap_or_default())
            .collect())
    }

    /// The Nodes a label selector selects.
    async fn select(&self, selector: &str) -> Result<Vec<Node>, KubeError> {
        let lp = ListParams::default().labels(selector);
        let nodes = self
            .connector
            .run(Op::new("list", "nodes"), |c| {
                self.requests.fetch_add(1, Ordering::Relaxed);
                async move { Api::<Node>::all(c).list(&lp).await }
            })
            .await?;
        Ok(nodes.items)
    }

    /// The labels of the Node named `name`; `None` only on the API's NotFound.
    async fn get_by_name(&self, name: &str) -> Result<Option<Labels>, KubeError> {
        let r = self
            .connector
            .run(Op::new("get", "nodes").named(name), |c| {
                self.requests.fetch_add(1, Ordering::Relaxed);
                async move { Api::<Node>::all(c).get(name).await }
            })
            .await;
        match r {
            Ok(n) => Ok(Some(n.metadata.labels.unwrap_or_default())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

type Labels = BTreeMap<String, String>;

/// `Some(labelled)` when any Node was selected (labelled when one carries the label),
/// `None` for an empty selection.
pub(crate) fn verdict(selected: &[Labels], (key, value): &(String, String)) -> Option<bool> {
    if selected.is_empty() {
        return None;
    }
    Some(selected.iter().any(|l| l.get(key) == Some(value)))
}

/// Whether `s` can be a label value (else a selector on it is refused by the API):
/// at most 63 characters of `[A-Za-z0-9._-]`, beginning and ending alphanumeric.
pub(crate) fn is_label_value(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !s.is_empty()
        && s.len() <= 63
        && alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// This host's name, as `socket.gethostname()` gives it.
pub(crate) fn local_hostname() -> Result<String, NodeError> {
    let s = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| NodeError::Hostname(e.to_string()))?;
    let s = s.trim();
    if s.is_empty() {
        return Err(NodeError::Hostname("empty".into()));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Labelled exactly when a selected Node carries the label; unanswered
        /// (look up by name) exactly when nothing was selected.
        #[test]
        fn verdict_is_any_selected_node_labelled(
            nodes in prop::collection::vec(
                prop::collection::btree_map("iscsi|other|kubernetes.io/hostname", "sbps|no|x", 0..3),
                0..4,
            )
        ) {
            let l = ("iscsi".to_string(), "sbps".to_string());
            let want = (!nodes.is_empty())
                .then(|| nodes.iter().any(|n| n.get("iscsi").map(String::as_str) == Some("sbps")));
            prop_assert_eq!(verdict(&nodes, &l), want);
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn verdict_rule() {
        let l = ("iscsi".to_string(), "sbps".to_string());
        assert_eq!(verdict(&[], &l), None);
        assert_eq!(verdict(&[labels(&[("iscsi", "sbps")])], &l), Some(true));
        assert_eq!(verdict(&[labels(&[("iscsi", "no")])], &l), Some(false));
        assert_eq!(verdict(&[labels(&[])], &l), Some(false));
        // Two Nodes claiming one hostname: labelled when either is (as kubectl's selector).
        assert_eq!(
            verdict(&[labels(&[]), labels(&[("iscsi", "sbps")])], &l),
            Some(true)
        );
    }

    #[test]
    fn label_values() {
        assert!(is_label_value("ncn-w001"));
        assert!(is_label_value("ncn-w001.local"));
        assert!(!is_label_value(""));
        assert!(!is_label_value("-x"));
        assert!(!is_label_value("a b"));
        assert!(!is_label_value(&"a".repeat(64)));
    }
}
