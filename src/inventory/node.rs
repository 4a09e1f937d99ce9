//! Is this node labelled for SBPS? One GET of our own Node from the Kubernetes API.
//!
//! The original ran `kubectl get nodes --selector=…` and took whatever it printed as
//! the answer, its own error message included. Here the answer is tri-state:
//! `Ok(true)` labelled, `Ok(false)` not labelled or no such node (404), `Err` unknown
//! (unreachable, 5xx, 401/403, garbage). A small kubeconfig reader (current context →
//! cluster server + CA, user client certificate/key or token) replaces kube-rs, which
//! would add a large dependency tree for this single call.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;
use url::Url;

use super::http::{self, ClientExtras, TlsOptions};

/// Settings of the node-label source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Default `/etc/kubernetes/admin.conf`, as the original.
    pub kubeconfig: PathBuf,
    /// The Node's name; `None` → this host's name.
    pub node_name: Option<String>,
    /// Label key and value that mark an SBPS node (`iscsi=sbps`).
    pub label: (String, String),
    pub timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            kubeconfig: "/etc/kubernetes/admin.conf".into(),
            node_name: None,
            label: ("iscsi".into(), "sbps".into()),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why the label could not be known.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("kubeconfig {path}: {detail}")]
    Kubeconfig { path: PathBuf, detail: String },
    #[error("cannot determine this host's name: {0}")]
    Hostname(String),
    #[error("Kubernetes API GET {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("Kubernetes API GET {url}: HTTP {status}: {excerpt}")]
    Status {
        url: String,
        status: u16,
        excerpt: String,
    },
    #[error("Kubernetes API GET {url}: answer is not a Node: {detail}")]
    Garbage { url: String, detail: String },
}

/// The node-label source.
pub struct NodeSource {
    cfg: NodeConfig,
    requests: AtomicU64,
}

impl NodeSource {
    pub fn new(cfg: NodeConfig) -> NodeSource {
        NodeSource {
            cfg,
            requests: AtomicU64::new(0),
        }
    }

    /// HTTP requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether the Node carries the label. The kubeconfig is read on every call
    /// (certificates get rotated under a running agent).
    pub async fn labelled(&self) -> Result<bool, NodeError> {
        let name = match &self.cfg.node_name {
            Some(n) => n.clone(),
            None => local_hostname()?,
        };
        let target = load_kubeconfig(&self.cfg.kubeconfig)?;
        let kerr = |detail: String| NodeError::Kubeconfig {
            path: self.cfg.kubeconfig.clone(),
            detail,
        };
        let client = http::client(
            "Kubernetes API",
            &TlsOptions {
                ca_bundle: None,
                insecure: target.insecure,
            },
            self.cfg.timeout,
            ClientExtras {
                only_roots_pem: target.ca_pem,
                identity_pem: target.identity_pem,
            },
        )
        .map_err(|e| kerr(e.to_string()))?;
        let mut url = target.server.clone();
        url.path_segments_mut()
            .map_err(|_| kerr(format!("server {} cannot take a path", target.server)))?
            .pop_if_empty()
            .extend(["api", "v1", "nodes", &name]);
        let shown = url.to_string();
        let mut req = client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = &target.token {
            req = req.bearer_auth(t);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| NodeError::Transport {
            url: shown.clone(),
            detail: http::request_error(e),
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            tracing::info!(node = %name, "no such Node in Kubernetes: not labelled");
            return Ok(false);
        }
        let body = http::read_capped(resp, 4 * 1024 * 1024)
            .await
            .map_err(|e| NodeError::Transport {
                url: shown.clone(),
                detail: e.to_string(),
            })?;
        if !status.is_success() {
            return Err(NodeError::Status {
                url: shown,
                status: status.as_u16(),
                excerpt: String::from_utf8_lossy(&body).chars().take(300).collect(),
            });
        }
        node_has_label(&body, &self.cfg.label)
            .map_err(|detail| NodeError::Garbage { url: shown, detail })
    }
}

/// Whether a Node JSON document has `labels[key] == value`.
pub fn node_has_label(body: &[u8], (key, value): &(String, String)) -> Result<bool, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if v.get("kind").and_then(Value::as_str) != Some("Node") {
        return Err("kind is not \"Node\"".into());
    }
    let meta = v
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or("no metadata")?;
    Ok(meta
        .get("labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        == Some(value.as_str()))
}

/// This host's name, as `socket.gethostname()` gives it.
pub fn local_hostname() -> Result<String, NodeError> {
    let s = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| NodeError::Hostname(e.to_string()))?;
    let s = s.trim();
    if s.is_empty() {
        return Err(NodeError::Hostname("empty".into()));
    }
    Ok(s.to_string())
}

/// What the current context of a kubeconfig says about reaching the API server.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiTarget {
    pub server: Url,
    /// Trust only these roots (PEM), when the kubeconfig names a CA.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
    /// Client certificate followed by its key (PEM).
    pub identity_pem: Option<Vec<u8>>,
    pub token: Option<String>,
}

impl std::fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTarget")
            .field("server", &self.server.as_str())
            .field("ca", &self.ca_pem.is_some())
            .field("insecure", &self.insecure)
            .field("client_cert", &self.identity_pem.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<PathBuf>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure: bool,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    user: Option<String>,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(rename = "client-certificate")]
    cert_file: Option<PathBuf>,
    #[serde(rename = "client-key")]
    key_file: Option<PathBuf>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
}

/// Reads a kubeconfig's current context. Relative file references are relative to
/// the kubeconfig's directory, as kubectl resolves them.
pub fn load_kubeconfig(path: &Path) -> Result<ApiTarget, NodeError> {
    let err = |detail: String| NodeError::Kubeconfig {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let kc: Kubeconfig =
        serde_norway::from_str(&text).map_err(|e| err(format!("not a kubeconfig: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let ctx_name = kc
        .current_context
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| err("no current-context".into()))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .ok_or_else(|| err(format!("context {ctx_name:?} not found")))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.context.cluster)
        .ok_or_else(|| err(format!("cluster {:?} not found", ctx.context.cluster)))?;
    let server = Url::parse(&cluster.cluster.server)
        .map_err(|e| err(format!("server {:?}: {e}", cluster.cluster.server)))?;
    let ca_pem = inline_or_file(
        cluster.cluster.ca_data.as_deref(),
        cluster.cluster.ca_file.as_deref(),
        dir,
    )
    .map_err(|e| err(format!("certificate-authority: {e}")))?;
    let user = match &ctx.context.user {
        Some(u) => Some(
            kc.users
                .iter()
                .find(|x| &x.name == u)
                .ok_or_else(|| err(format!("user {u:?} not found")))?,
        ),
        None => None,
    };
    let (mut identity_pem, mut token) = (None, None);
    if let Some(u) = user.map(|u| &u.user) {
        let cert = inline_or_file(u.cert_data.as_deref(), u.cert_file.as_deref(), dir)
            .map_err(|e| err(format!("client-certificate: {e}")))?;
        let key = inline_or_file(u.key_data.as_deref(), u.key_file.as_deref(), dir)
            .map_err(|e| err(format!("client-key: {e}")))?;
        identity_pem = match (cert, key) {
            (Some(mut c), Some(k)) => {
                c.push(b'\n');
                c.extend_from_slice(&k);
                Some(c)
            }
            (None, None) => None,
            _ => {
                return Err(err(
                    "client certificate without key or key without certificate".into(),
                ))
            }
        };
        token = match (&u.token, &u.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(dir.join(f))
                    .map_err(|e| err(format!("tokenFile {}: {e}", f.display())))?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
    }
    Ok(ApiTarget {
        server,
        ca_pem,
        insecure: cluster.cluster.insecure,
        identity_pem,
        token,
    })
}

fn inline_or_file(
    data: Option<&str>,
    file: Option<&Path>,
    dir: &Path,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(d) = data {
        let compact: String = d.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|e| format!("bad base64: {e}"));
    }
    if let Some(f) = file {
        let p = dir.join(f);
        return std::fs::read(&p)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_admin_conf_shape() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("admin.conf");
        std::fs::write(dir.path().join("ca.crt"), "CA").unwrap();
        std::fs::write(
            &p,
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: ca.crt\n    server: https://10.252.1.10:6443\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n  name: kubernetes-admin@kubernetes\ncurrent-context: kubernetes-admin@kubernetes\npreferences: {}\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n",
        )
        .unwrap();
        let t = load_kubeconfig(&p).unwrap();
        assert_eq!(t.server.as_str(), "https://10.252.1.10:6443/");
        assert_eq!(t.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(t.identity_pem.as_deref(), Some(&b"CERT\nKEY"[..]));
        assert_eq!(t.token, None);
    }

    #[test]
    fn broken_kubeconfigs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        for text in [
            "",
            "not: [yaml",
            "current-context: x\n",
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\n",
        ] {
            std::fs::write(&p, text).unwrap();
            assert!(load_kubeconfig(&p).is_err(), "{text}");
        }
    }

    #[test]
    fn label_check() {
        let l = ("iscsi".to_string(), "sbps".to_string());
        let node = br#"{"kind":"Node","metadata":{"name":"ncn-w001","labels":{"iscsi":"sbps"}}}"#;
        assert_eq!(node_has_label(node, &l), Ok(true));
        let node = br#"{"kind":"Node","metadata":{"name":"ncn-w001","labels":{"iscsi":"no"}}}"#;
        assert_eq!(node_has_label(node, &l), Ok(false));
        let node = br#"{"kind":"Node","metadata":{"name":"ncn-w001"}}"#;
        assert_eq!(node_has_label(node, &l), Ok(false));
        assert!(node_has_label(b"{\"kind\":\"Status\"}", &l).is_err());
        assert!(node_has_label(b"<html>", &l).is_err());
    }
}
