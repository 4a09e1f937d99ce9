//! The one place a Kubernetes API client is built: where the credentials come from,
//! which certificates are trusted, how long a request may take.
//!
//! **Where the credentials come from.** The `KUBECONFIG` file (default
//! `/etc/kubernetes/admin.conf`) when it exists: its current context, with whatever
//! user it names (kubeadm's `client-certificate-data`/`client-key-data`, a token or
//! token file, an exec plugin). Only when that file does not exist, and the agent runs
//! in a pod (`KUBERNETES_SERVICE_HOST` set), the pod's service account. A kubeconfig
//! that exists but cannot be used is an error, never a silent switch to other
//! credentials: an operator must see that the file they configured is broken.
//!
//! **Trust.** `TLS_VERIFY=false` (or the kubeconfig's `insecure-skip-tls-verify`)
//! accepts any server certificate, with a warning (once per connector). Otherwise the
//! cluster's CA (`certificate-authority[-data]`, the service account's `ca.crt`) is
//! trusted, plus `CA_BUNDLE`; a kubeconfig naming no CA falls back to the system roots
//! plus `CA_BUNDLE`, as every other source of the agent does.
//!
//! **Bounds.** Every request (credentials from an exec plugin included) ends within
//! the timeout; no answer is read past [`MAX_ANSWER`]; requests are never retried here
//! (the next scan is the retry), never ride a kept-alive connection, and never go
//! through an `HTTPS_PROXY`: the API server is on the cluster's own network.
//!
//! A built client is reused for [`CLIENT_MAX_AGE`], then built again from the files,
//! so a renewed certificate (`kubeadm certs renew`, a kubelet rotating its client
//! certificate) or a rotated CA is picked up without a restart.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderValue, Response};
use http_body_util::Limited;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use super::error::{classify, KubeError, Op};
use super::tls::{self, Trust};
use crate::http::TlsOptions;

/// The largest answer read from the API (a list of every node's ledger ConfigMap).
pub(crate) const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// How long a built client is reused before it is built again from the files.
pub(crate) const CLIENT_MAX_AGE: Duration = Duration::from_secs(60);

/// Where a pod finds its service account.
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The in-cluster service account: the API server's address (from the environment
/// Kubernetes gives every pod) and the directory holding `token`, `ca.crt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InCluster {
    pub host: String,
    pub port: String,
    pub dir: PathBuf,
}

impl InCluster {
    /// The service account of the pod this process runs in, if it runs in one.
    pub(crate) fn from_env() -> Option<InCluster> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok()?;
        if host.is_empty() || port.is_empty() {
            return None;
        }
        Some(InCluster {
            host,
            port,
            dir: SERVICE_ACCOUNT_DIR.into(),
        })
    }

    fn url(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }
}

/// Settings of the Kubernetes API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// `KUBECONFIG`.
    pub kubeconfig: PathBuf,
    /// The service account used when the kubeconfig file does not exist.
    pub in_cluster: Option<InCluster>,
    /// `TLS_VERIFY` (as `insecure`) and `CA_BUNDLE`.
    pub tls: TlsOptions,
    /// Bound of each whole request.
    pub timeout: Duration,
}

impl KubeSettings {
    pub fn new(kubeconfig: impl Into<PathBuf>) -> KubeSettings {
        KubeSettings {
            kubeconfig: kubeconfig.into(),
            in_cluster: None,
            tls: TlsOptions::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Where the credentials come from (see the module documentation for the rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    Kubeconfig(PathBuf),
    InCluster(InCluster),
}

/// Picks the credential source. `kubeconfig_exists` is `Err` when the file's
/// existence could not be checked (that is not "absent").
pub(crate) fn credential_source(
    s: &KubeSettings,
    kubeconfig_exists: Result<bool, String>,
) -> Result<CredentialSource, KubeError> {
    match (kubeconfig_exists, &s.in_cluster) {
        (Ok(true), _) => Ok(CredentialSource::Kubeconfig(s.kubeconfig.clone())),
        (Ok(false), Some(ic)) => Ok(CredentialSource::InCluster(ic.clone())),
        (Ok(false), None) => Err(KubeError::Setup(format!(
            "kubeconfig {} does not exist, and the agent does not run in a pod \
             (KUBERNETES_SERVICE_HOST unset), so there are no credentials",
            s.kubeconfig.display()
        ))),
        (Err(e), _) => Err(KubeError::Setup(format!(
            "kubeconfig {}: {e}",
            s.kubeconfig.display()
        ))),
    }
}

/// Builds clients from [`KubeSettings`] and runs requests on them.
pub struct KubeConnector {
    settings: KubeSettings,
    cached: Mutex<Option<Cached>>,
    /// Warnings already logged (a client is rebuilt every minute; a warning is said once).
    warned: Mutex<std::collections::BTreeSet<String>>,
}

struct Cached {
    built: Instant,
    client: kube::Client,
    server: String,
}

impl KubeConnector {
    pub fn new(settings: KubeSettings) -> KubeConnector {
        KubeConnector {
            settings,
            cached: Mutex::new(None),
            warned: Mutex::default(),
        }
    }

    /// Runs one request: builds (or reuses) the client, bounds the whole of it by the
    /// timeout, and sorts any failure into a [`KubeError`] about `op` (naming the
    /// server when it did not answer).
    pub(crate) async fn run<T, F, Fut>(&self, op: Op, request: F) -> Result<T, KubeError>
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let timeout = self.settings.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let (client, server) = match tokio::time::timeout_at(deadline, self.client()).await {
            Ok(r) => r?,
            Err(_) => return Err(KubeError::timed_out(op, timeout)),
        };
        let e = match tokio::time::timeout_at(deadline, request(client)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => classify(op, e),
            Err(_) => KubeError::timed_out(op, timeout),
        };
        Err(match e {
            KubeError::Unavailable { op, detail } => KubeError::Unavailable {
                op,
                detail: format!("{server}: {detail}"),
            },
            e => e,
        })
    }

    /// A client and the server it talks to: the cached one while younger than
    /// [`CLIENT_MAX_AGE`], else a new one.
    pub(crate) async fn client(&self) -> Result<(kube::Client, String), KubeError> {
        let now = Instant::now();
        if let Some(c) = self.lock().as_ref() {
            if now.duration_since(c.built) < CLIENT_MAX_AGE {
                return Ok((c.client.clone(), c.server.clone()));
            }
        }
        let (client, server) = self.build().await?;
        *self.lock() = Some(Cached {
            built: now,
            client: client.clone(),
            server: server.clone(),
        });
        Ok((client, server))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // A panic elsewhere while holding the lock leaves only a cache behind.
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn build(&self) -> Result<(kube::Client, String), KubeError> {
        let s = &self.settings;
        let exists = match std::fs::metadata(&s.kubeconfig) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.to_string()),
        };
        let (config, origin) = match credential_source(s, exists)? {
            CredentialSource::Kubeconfig(path) => (
                from_kubeconfig(&path).await?,
                format!("kubeconfig {}", path.display()),
            ),
            CredentialSource::InCluster(ic) => (
                from_service_account(&ic)?,
                format!("service account {}", ic.dir.display()),
            ),
        };
        let server = config.cluster_url.to_string();
        let (client, warnings) = build_client(config, &s.tls).map_err(|e| match e {
            KubeError::Setup(m) => KubeError::Setup(format!("{m} (credentials from {origin})")),
            e => e,
        })?;
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        for w in warnings {
            if !warned.contains(&w) {
                tracing::warn!(server = %server, "{w}");
                warned.insert(w);
            }
        }
        Ok((client, server))
    }
}

/// A kube-rs config from a kubeconfig file's current context.
async fn from_kubeconfig(path: &Path) -> Result<kube::Config, KubeError> {
    let err = |e: &dyn std::error::Error| {
        KubeError::Setup(format!(
            "kubeconfig {}: {}",
            path.display(),
            crate::http::error_chain(e)
        ))
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(&e))?;
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(&e))
}

/// A kube-rs config from a pod's service account; the token file is re-read by
/// kube-rs as the kubelet rotates it.
fn from_service_account(ic: &InCluster) -> Result<kube::Config, KubeError> {
    let url = ic
        .url()
        .parse()
        .map_err(|e| KubeError::Setup(format!("in-cluster API address {}: {e}", ic.url())))?;
    let ca = ic.dir.join("ca.crt");
    let token = ic.dir.join("token");
    let mut c = kube::Config::new(url);
    c.root_cert = Some(read_certs(&ca)?);
    if !token.is_file() {
        return Err(KubeError::Setup(format!(
            "service account token {} missing",
            token.display()
        )));
    }
    c.auth_info.token_file = Some(token.to_string_lossy().into_owned());
    if let Ok(ns) = std::fs::read_to_string(ic.dir.join("namespace")) {
        c.default_namespace = ns.trim().to_string();
    }
    Ok(c)
}

/// The DER certificates of a PEM file; an error when it holds none.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, KubeError> {
    let pem = std::fs::read(path)
        .map_err(|e| KubeError::Setup(format!("CA file {}: {e}", path.display())))?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| KubeError::Setup(format!("CA file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(KubeError::Setup(format!(
            "CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The client: kube-rs's authentication (client certificate, token, exec plugin)
/// over our own TLS trust, timeouts and answer cap; and the warnings to log about it.
fn build_client(
    mut config: kube::Config,
    opts: &TlsOptions,
) -> Result<(kube::Client, Vec<String>), KubeError> {
    let setup = |e: &dyn std::error::Error| KubeError::Setup(crate::http::error_chain(e));
    let mut warnings = Vec::new();
    if let Some(proxy) = &config.proxy_url {
        warnings.push(format!(
            "proxy {proxy} ignored: the agent connects to the Kubernetes API directly"
        ));
    }
    let bundle = match &opts.ca_bundle {
        Some(p) => read_certs(p)?,
        None => Vec::new(),
    };
    let https = config.cluster_url.scheme() == Some(&http::uri::Scheme::HTTPS);
    let trust = tls::trust(
        opts.insecure || config.accept_invalid_certs,
        config.root_cert.take(),
        bundle,
    );
    // kube-rs builds the client identity (kubeconfig or exec plugin certificate);
    // the server verification is ours, so it gets roots it will not use.
    config.accept_invalid_certs = false;
    config.root_cert = Some(Vec::new());
    config.root_cert_file = None;
    tls::ensure_provider();
    let mut rustls_config = config.rustls_client_config().map_err(|e| setup(&e))?;
    if https {
        if trust == Trust::Any {
            warnings.push(
                "TLS certificate verification is OFF for the Kubernetes API (explicitly configured)"
                    .into(),
            );
        }
        let verifier = tls::verifier(trust).map_err(KubeError::Setup)?;
        rustls_config.dangerous().set_certificate_verifier(verifier);
    }
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls_config)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => {
            let name = name
                .clone()
                .try_into()
                .map_err(|e| setup(&e as &dyn std::error::Error))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    // A new connection per request: a few requests a scan make the handshakes free, and
    // no request rides a kept-alive connection to an API server that has gone away.
    let hyper_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(builder.enable_http1().wrap_connector(connector));
    config.headers.push((
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("sbps-marshal/", env!("CARGO_PKG_VERSION"))),
    ));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(|e| setup(&e))?)
        .layer(config.extra_headers_layer().map_err(|e| setup(&e))?)
        .map_err(tower::BoxError::from)
        .map_response(|r: Response<_>| r.map(|b| Limited::new(b, MAX_ANSWER)))
        .service(hyper_client);
    Ok((
        kube::Client::new(service, config.default_namespace),
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(in_cluster: bool) -> KubeSettings {
        KubeSettings {
            in_cluster: in_cluster.then(|| InCluster {
                host: "10.96.0.1".into(),
                port: "443".into(),
                dir: SERVICE_ACCOUNT_DIR.into(),
            }),
            ..KubeSettings::new("/etc/kubernetes/admin.conf")
        }
    }

    #[test]
    fn an_existing_kubeconfig_wins() {
        for ic in [false, true] {
            assert_eq!(
                credential_source(&settings(ic), Ok(true)),
                Ok(CredentialSource::Kubeconfig(
                    "/etc/kubernetes/admin.conf".into()
                ))
            );
        }
    }

    #[test]
    fn the_service_account_only_without_a_kubeconfig_file() {
        assert!(matches!(
            credential_source(&settings(true), Ok(false)),
            Ok(CredentialSource::InCluster(_))
        ));
        let e = credential_source(&settings(false), Ok(false)).unwrap_err();
        assert!(e.to_string().contains("admin.conf does not exist"), "{e}");
        // A kubeconfig that cannot even be checked is not "absent".
        let e = credential_source(&settings(true), Err("permission denied".into())).unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");
    }

    #[test]
    fn in_cluster_ipv6_address_is_bracketed() {
        let ic = InCluster {
            host: "fd00::1".into(),
            port: "443".into(),
            dir: "/x".into(),
        };
        assert_eq!(ic.url(), "https://[fd00::1]:443");
    }
}
