//! A Kubernetes API double: a real HTTPS server on 127.0.0.1 that authenticates
//! clients as kube-apiserver does (client certificates signed by the cluster CA, or
//! bearer tokens) and serves the part of the core/v1 API the agent uses, with the
//! real API's JSON, status codes and `Status` objects:
//!
//! * `GET /api/v1/nodes[?labelSelector=]`, `GET /api/v1/nodes/{name}`;
//! * ConfigMaps under `/api/v1/namespaces/{ns}/configmaps`: `GET` one, `GET` a list
//!   (label selector), `POST` (409 AlreadyExists, 404 for a missing namespace), `PUT`
//!   (409 Conflict on a stale `metadata.resourceVersion`, 404 when gone, no-op writes
//!   keep their version), one cluster-wide `resourceVersion` counter as etcd's;
//! * the size limits: ConfigMap data over 1 MiB is 422 Invalid (FieldValueTooLong),
//!   a request body over 3 MiB is 413;
//! * anything else: `404 page not found` in plain text, as the real server.
//!
//! Faults: [`KubeApi::down`] (connection refused, open connections dropped),
//! [`KubeApi::slow`], [`KubeApi::deny`] (RBAC 403), [`Fault`] (500, a proxy's plain 404,
//! a garbage 200). It depends on nothing of the agent, so any test can use it.
//! Not modelled: set-based label selectors, pagination, watch, generateName,
//! field selectors (ConfigMaps carry no `metadata.generation`, as on the real API).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType,
    PKCS_RSA_SHA256,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The API server's limit on a request body.
pub const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;
/// ConfigMap validation's limit on `data` + `binaryData`.
pub const MAX_CONFIGMAP_DATA: usize = 1024 * 1024;

/// How clients must authenticate at the TLS layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client certificate signed by the cluster CA is required: a client without one
    /// fails the handshake.
    Required,
    /// As kube-apiserver: a certificate is optional; without one, a bearer token must
    /// authenticate the request, else 401.
    CertificateOrToken,
}

/// A fault every request meets (after authentication, as the server's filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 with an InternalError `Status`.
    InternalError,
    /// A proxy in front answering `404 page not found` in plain text.
    ProxyNotFound,
    /// 200 with an HTML page.
    Garbage,
}

/// A client identity issued by the double's CA: what kubeadm writes into admin.conf.
pub struct ClientCert {
    pub cert_pem: String,
    /// An RSA key in PKCS#1 (`RSA PRIVATE KEY`), as kubeadm writes it.
    pub key_pem: String,
}

/// The cluster CA and the certificates it signs.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A serving certificate for 127.0.0.1 and localhost.
    fn server(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// A client certificate for `user` in `group` (CN and O, as the API server reads them).
    pub fn client(&self, user: &str, group: &str) -> (ClientCert, Vec<u8>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, user);
        p.distinguished_name.push(DnType::OrganizationName, group);
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        let pkcs1 = pkcs8_rsa_to_pkcs1(&key.serialize_der());
        (
            ClientCert {
                cert_pem: cert.pem(),
                key_pem: pem("RSA PRIVATE KEY", &pkcs1),
            },
            cert.der().to_vec(),
        )
    }
}

/// Credentials a kubeconfig's user carries.
pub enum User<'a> {
    Cert(&'a ClientCert),
    Token(&'a str),
    /// An exec plugin: the command and its arguments.
    Exec(&'a str, &'a [&'a str]),
    None,
}

/// Writes a kubeconfig in kubeadm's admin.conf shape. `ca_pem: None` leaves
/// `certificate-authority-data` out.
pub fn write_kubeconfig(path: &Path, server: &str, ca_pem: Option<&str>, user: User) {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ca = ca_pem
        .map(|c| format!("    certificate-authority-data: {}\n", b64(c)))
        .unwrap_or_default();
    let user = match user {
        User::Cert(c) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&c.cert_pem),
            b64(&c.key_pem)
        ),
        User::Token(t) => format!("    token: {t}\n"),
        User::Exec(cmd, args) => {
            let args: String = args.iter().map(|a| format!("      - {a:?}\n")).collect();
            format!(
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      \
                 command: {cmd:?}\n      args:\n{args}      interactiveMode: Never\n"
            )
        }
        User::None => "    {}\n".into(),
    };
    let text = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n{ca}    server: {server}\n  name: kubernetes\n\
         contexts:\n- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n  \
         name: kubernetes-admin@kubernetes\ncurrent-context: kubernetes-admin@kubernetes\n\
         kind: Config\npreferences: {{}}\nusers:\n- name: kubernetes-admin\n  user:\n{user}"
    );
    std::fs::write(path, text).unwrap();
}

/// One request as the double saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
}

#[derive(Default)]
struct Objects {
    /// The cluster-wide resourceVersion (etcd's revision).
    revision: u64,
    nodes: BTreeMap<String, Value>,
    namespaces: BTreeSet<String>,
    configmaps: BTreeMap<(String, String), Value>,
}

#[derive(Default)]
struct Faults {
    delay: Option<Duration>,
    fault: Option<Fault>,
    /// (verb, resource) pairs RBAC refuses.
    denied: BTreeSet<(String, String)>,
}

struct State {
    objects: Mutex<Objects>,
    faults: Mutex<Faults>,
    /// Client certificate DER → user name.
    cert_users: Mutex<HashMap<Vec<u8>, String>>,
    tokens: Mutex<HashMap<String, String>>,
    seen: Mutex<Vec<Seen>>,
    /// TCP connections accepted.
    connections: std::sync::atomic::AtomicU64,
    /// Files followed on every connection and request (see [`KubeApi::follow_files`]).
    files: Mutex<Option<Files>>,
}

/// What [`KubeApi::follow_files`] reads.
#[derive(Clone)]
struct Files {
    node: String,
    labels: PathBuf,
    fault: PathBuf,
}

impl Files {
    fn fault(&self) -> Option<String> {
        std::fs::read_to_string(&self.fault)
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// The running double; stopped on drop.
pub struct KubeApi {
    pub pki: Pki,
    pub addr: SocketAddr,
    state: Arc<State>,
    tls: Arc<ServerConfig>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl KubeApi {
    /// Starts on a free 127.0.0.1 port with the namespaces `default` and `services`.
    pub async fn start(auth: ClientAuth) -> KubeApi {
        KubeApi::start_at(0, auth).await
    }

    /// Starts on 127.0.0.1:`port` (0: a free port) with the namespaces `default` and
    /// `services`.
    pub async fn start_at(port: u16, auth: ClientAuth) -> KubeApi {
        let pki = Pki::new("kubernetes");
        let (cert, key) = pki.server();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let verifier = match auth {
            ClientAuth::Required => verifier.build().unwrap(),
            ClientAuth::CertificateOrToken => verifier.allow_unauthenticated().build().unwrap(),
        };
        let tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .unwrap();
        let state = Arc::new(State {
            objects: Mutex::new(Objects {
                namespaces: ["default", "services", "kube-system"]
                    .map(String::from)
                    .into(),
                revision: 1000,
                ..Default::default()
            }),
            faults: Mutex::default(),
            cert_users: Mutex::default(),
            tokens: Mutex::default(),
            seen: Mutex::default(),
            connections: Default::default(),
            files: Mutex::default(),
        });
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = KubeApi {
            pki,
            addr,
            state,
            tls: Arc::new(tls),
            server: Mutex::new(None),
        };
        api.serve(listener);
        api
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Issues a client certificate the double authenticates as `user`.
    pub fn client_cert(&self, user: &str) -> ClientCert {
        let (cert, der) = self.pki.client(user, "system:masters");
        self.state
            .cert_users
            .lock()
            .unwrap()
            .insert(der, user.into());
        cert
    }

    /// Accepts `token` as `user`.
    pub fn add_token(&self, token: &str, user: &str) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.into(), user.into());
    }

    /// A Node named `name` with these labels.
    pub fn add_node(&self, name: &str, labels: &[(&str, &str)]) {
        let mut o = self.state.objects.lock().unwrap();
        o.revision += 1;
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let node = json!({
            "metadata": {"name": name, "uid": uid(o.revision), "resourceVersion": o.revision.to_string(),
                         "creationTimestamp": "2026-01-01T00:00:00Z", "labels": labels},
            "spec": {"podCIDR": "10.32.0.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        o.nodes.insert(name.into(), node);
    }

    /// Deletes the Node named `name`.
    pub fn remove_node(&self, name: &str) {
        let mut o = self.state.objects.lock().unwrap();
        o.nodes.remove(name);
    }

    /// Whether the double listens (see [`KubeApi::down`]).
    pub fn is_up(&self) -> bool {
        self.server.lock().unwrap().is_some()
    }

    /// Follows files on every connection and request, each read anew so that a test's
    /// edit takes effect at once: the Node `node` carries the labels of `labels` (a JSON
    /// object; a missing file means no such Node) and `kubernetes.io/hostname=<node>`;
    /// `fault` holding `down` closes every connection at once, anything else makes every
    /// request answer 500.
    pub fn follow_files(&self, node: &str, labels: PathBuf, fault: PathBuf) {
        *self.state.files.lock().unwrap() = Some(Files {
            node: node.into(),
            labels,
            fault,
        });
    }

    /// A stored ConfigMap as the API would return it.
    pub fn configmap(&self, ns: &str, name: &str) -> Option<Value> {
        let o = self.state.objects.lock().unwrap();
        o.configmaps
            .get(&(ns.into(), name.into()))
            .map(|v| with_kind(v, "ConfigMap"))
    }

    /// Deletes a ConfigMap behind the client's back.
    pub fn remove_configmap(&self, ns: &str, name: &str) {
        let mut o = self.state.objects.lock().unwrap();
        o.configmaps.remove(&(ns.into(), name.into()));
    }

    /// Makes RBAC refuse `verb` on `resource` for everyone.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.state
            .faults
            .lock()
            .unwrap()
            .denied
            .insert((verb.into(), resource.into()));
    }

    /// Delays every answer.
    pub fn slow(&self, delay: Option<Duration>) {
        self.state.faults.lock().unwrap().delay = delay;
    }

    pub fn fault(&self, f: Option<Fault>) {
        self.state.faults.lock().unwrap().fault = f;
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Stops listening and drops every open connection: connects are refused.
    pub fn down(&self) {
        if let Some(t) = self.server.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let acceptor = TlsAcceptor::from(self.tls.clone());
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let files = state.files.lock().unwrap().clone();
                if files.and_then(|f| f.fault()).as_deref() == Some("down") {
                    drop(tcp);
                    continue;
                }
                state
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (acceptor, state) = (acceptor.clone(), state.clone());
                conns.spawn(async move {
                    // A client that fails the handshake (no certificate) is refused here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec());
                    let svc = hyper::service::service_fn(move |req| {
                        let (state, cert) = (state.clone(), cert.clone());
                        async move { Ok::<_, Infallible>(handle(&state, cert, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.server.lock().unwrap() = Some(task);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.down();
    }
}

type Answer = Response<Full<Bytes>>;

/// What a request asks for.
enum Route {
    Nodes,
    Node(String),
    ConfigMaps(String),
    ConfigMap(String, String),
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["api", "v1", "nodes"] => Some(Route::Nodes),
            ["api", "v1", "nodes", n] => Some(Route::Node(n.to_string())),
            ["api", "v1", "namespaces", ns, "configmaps"] => {
                Some(Route::ConfigMaps(ns.to_string()))
            }
            ["api", "v1", "namespaces", ns, "configmaps", n] => {
                Some(Route::ConfigMap(ns.to_string(), n.to_string()))
            }
            _ => None,
        }
    }

    fn resource(&self) -> &'static str {
        match self {
            Route::Nodes | Route::Node(_) => "nodes",
            _ => "configmaps",
        }
    }

    fn namespace(&self) -> Option<&str> {
        match self {
            Route::ConfigMaps(ns) | Route::ConfigMap(ns, _) => Some(ns),
            _ => None,
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            Route::Node(n) | Route::ConfigMap(_, n) => Some(n),
            _ => None,
        }
    }
}

/// The Node of `f` as its labels file says now.
fn follow_node(state: &State, f: &Files) {
    let labels = std::fs::read_to_string(&f.labels)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Map<String, Value>>(&t).ok());
    let mut o = state.objects.lock().unwrap();
    let Some(mut labels) = labels else {
        o.nodes.remove(&f.node);
        return;
    };
    labels
        .entry("kubernetes.io/hostname".to_string())
        .or_insert_with(|| json!(f.node));
    if o.nodes.get(&f.node).map(|n| &n["metadata"]["labels"])
        == Some(&Value::Object(labels.clone()))
    {
        return;
    }
    o.revision += 1;
    let node = json!({
        "metadata": {"name": f.node, "uid": uid(o.revision), "resourceVersion": o.revision.to_string(),
                     "creationTimestamp": "2026-01-01T00:00:00Z", "labels": labels},
        "spec": {"podCIDR": "10.32.0.0/24"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    });
    o.nodes.insert(f.node.clone(), node);
}

/// The server's filter chain: authentication, faults, routing, authorization, the handler.
async fn handle(state: &State, cert: Option<Vec<u8>>, req: Request<Incoming>) -> Answer {
    let user = authenticate(state, cert.as_deref(), &req);
    state.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        user: user.clone(),
    });
    let Some(user) = user else {
        return status(401, "Unauthorized", "Unauthorized", None);
    };
    let files = state.files.lock().unwrap().clone();
    if let Some(f) = files {
        if f.fault().is_some() {
            return status(
                500,
                "InternalError",
                "Internal error occurred: injected fault",
                None,
            );
        }
        follow_node(state, &f);
    }
    let (delay, fault, denied) = {
        let f = state.faults.lock().unwrap();
        (f.delay, f.fault, f.denied.clone())
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    match fault {
        Some(Fault::InternalError) => {
            return status(
                500,
                "InternalError",
                "Internal error occurred: etcdserver: leader changed",
                None,
            )
        }
        Some(Fault::ProxyNotFound) => return plain(404, "404 page not found\n"),
        Some(Fault::Garbage) => {
            return Response::builder()
                .status(200)
                .header("content-type", "text/html")
                .body(Full::from("<html><body>Service Unavailable</body></html>"))
                .unwrap()
        }
        None => {}
    }
    let Some(route) = Route::parse(req.uri().path()) else {
        return plain(404, "404 page not found\n");
    };
    let verb = match (req.method(), route.name()) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) => "list",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        _ => {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            )
        }
    };
    if denied.contains(&(verb.to_string(), route.resource().to_string())) {
        return forbidden(&user, verb, &route);
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let selector = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned());
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return status(
                413,
                "RequestEntityTooLarge",
                &format!("Request entity too large: limit is {MAX_REQUEST_BODY}"),
                None,
            )
        }
    };
    let mut o = state.objects.lock().unwrap();
    match (verb, route) {
        ("list", Route::Nodes) => list(&o, "NodeList", o.nodes.values(), selector.as_deref()),
        ("get", Route::Node(n)) => match o.nodes.get(&n) {
            Some(v) => ok(200, with_kind(v, "Node")),
            None => not_found("nodes", &n),
        },
        ("list", Route::ConfigMaps(ns)) => {
            let items: Vec<&Value> = o
                .configmaps
                .iter()
                .filter(|((n, _), _)| *n == ns)
                .map(|(_, v)| v)
                .collect();
            list(&o, "ConfigMapList", items.into_iter(), selector.as_deref())
        }
        ("get", Route::ConfigMap(ns, n)) => match o.configmaps.get(&(ns, n.clone())) {
            Some(v) => ok(200, with_kind(v, "ConfigMap")),
            None => not_found("configmaps", &n),
        },
        ("create", Route::ConfigMaps(ns)) => create(&mut o, &ns, &body),
        ("update", Route::ConfigMap(ns, n)) => replace(&mut o, &ns, &n, &body),
        _ => plain(404, "404 page not found\n"),
    }
}

fn authenticate(state: &State, cert: Option<&[u8]>, req: &Request<Incoming>) -> Option<String> {
    if let Some(der) = cert {
        // The CA signed it (the handshake checked); the name is the certificate's CN.
        return Some(
            state
                .cert_users
                .lock()
                .unwrap()
                .get(der)
                .cloned()
                .unwrap_or_else(|| "unknown-cn".into()),
        );
    }
    let token = req
        .headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    state.tokens.lock().unwrap().get(token).cloned()
}

fn list<'a>(
    o: &Objects,
    kind: &str,
    items: impl Iterator<Item = &'a Value>,
    selector: Option<&str>,
) -> Answer {
    let sel = match selector.map(parse_selector).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(msg) => return status(400, "BadRequest", &msg, None),
    };
    let items: Vec<Value> = items
        .filter(|v| sel.iter().all(|r| r.matches(&v["metadata"]["labels"])))
        .cloned()
        .collect();
    ok(
        200,
        json!({"kind": kind, "apiVersion": "v1",
               "metadata": {"resourceVersion": o.revision.to_string()}, "items": items}),
    )
}

fn create(o: &mut Objects, ns: &str, body: &[u8]) -> Answer {
    let mut obj = match decode(body) {
        Ok(v) => v,
        Err(a) => return *a,
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        return invalid(
            "",
            "metadata.name",
            "FieldValueRequired",
            "Required value: name or generateName is required",
        );
    }
    if let Some(a) = check_namespace_field(&obj, ns) {
        return a;
    }
    if !o.namespaces.contains(ns) {
        return not_found("namespaces", ns);
    }
    if let Some(a) = validate(&name, &obj) {
        return a;
    }
    if o.configmaps.contains_key(&(ns.into(), name.clone())) {
        return status(
            409,
            "AlreadyExists",
            &format!("configmaps {name:?} already exists"),
            Some(json!({"name": name, "kind": "configmaps"})),
        );
    }
    if obj["metadata"].get("resourceVersion").is_some() {
        return status(
            500,
            "InternalError",
            "Internal error occurred: resourceVersion should not be set on objects to be created",
            None,
        );
    }
    o.revision += 1;
    let meta = obj["metadata"].as_object_mut().unwrap();
    meta.insert("namespace".into(), json!(ns));
    meta.insert("uid".into(), json!(uid(o.revision)));
    meta.insert("resourceVersion".into(), json!(o.revision.to_string()));
    meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
    strip_kind(&mut obj);
    o.configmaps.insert((ns.into(), name), obj.clone());
    ok(201, with_kind(&obj, "ConfigMap"))
}

fn replace(o: &mut Objects, ns: &str, name: &str, body: &[u8]) -> Answer {
    let mut obj = match decode(body) {
        Ok(v) => v,
        Err(a) => return *a,
    };
    let body_name = obj["metadata"]["name"].as_str().unwrap_or("");
    if body_name != name {
        return status(
            400,
            "BadRequest",
            &format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ),
            None,
        );
    }
    if let Some(a) = check_namespace_field(&obj, ns) {
        return a;
    }
    let key = (ns.to_string(), name.to_string());
    let Some(current) = o.configmaps.get(&key).cloned() else {
        return not_found("configmaps", name);
    };
    let current_rv = current["metadata"]["resourceVersion"].clone();
    // Without a resourceVersion ConfigMaps update unconditionally (AllowUnconditionalUpdate).
    if let Some(rv) = obj["metadata"].get("resourceVersion") {
        if *rv != current_rv {
            return status(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on configmaps {name:?}: the object has been \
                     modified; please apply your changes to the latest version and try again"
                ),
                Some(json!({"name": name, "kind": "configmaps"})),
            );
        }
    }
    if let Some(a) = validate(name, &obj) {
        return a;
    }
    strip_kind(&mut obj);
    let meta = obj["metadata"].as_object_mut().unwrap();
    for k in ["namespace", "uid", "creationTimestamp"] {
        meta.insert(k.into(), current["metadata"][k].clone());
    }
    meta.insert("resourceVersion".into(), current_rv);
    if user_fields(&obj) == user_fields(&current) {
        // etcd is not written when nothing changed: the version stays.
        return ok(200, with_kind(&current, "ConfigMap"));
    }
    o.revision += 1;
    obj["metadata"]["resourceVersion"] = json!(o.revision.to_string());
    o.configmaps.insert(key, obj.clone());
    ok(200, with_kind(&obj, "ConfigMap"))
}

/// What a client can change on a ConfigMap.
fn user_fields(v: &Value) -> Value {
    json!([
        v["metadata"]["labels"],
        v["metadata"]["annotations"],
        v["data"],
        v["binaryData"],
        v["immutable"]
    ])
}

/// The request body as a JSON object (a boxed error answer: an answer is large).
fn decode(body: &[u8]) -> Result<Value, Box<Answer>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(status(
            400,
            "BadRequest",
            &format!("the body of the request was in an unknown format: {e}"),
            None,
        ))
    })?;
    if !v.is_object() || !v["metadata"].is_object() {
        return Err(Box::new(status(
            400,
            "BadRequest",
            "Object 'metadata' is missing",
            None,
        )));
    }
    if v.get("kind").is_some_and(|k| k != "ConfigMap") {
        return Err(Box::new(status(
            400,
            "BadRequest",
            "wrong kind for a configmaps request",
            None,
        )));
    }
    Ok(v)
}

fn check_namespace_field(obj: &Value, ns: &str) -> Option<Answer> {
    match obj["metadata"]["namespace"].as_str() {
        Some(n) if n != ns => Some(status(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
            None,
        )),
        _ => None,
    }
}

/// ConfigMap validation: the name, the keys, the 1 MiB of data.
fn validate(name: &str, obj: &Value) -> Option<Answer> {
    let subdomain = name.len() <= 253
        && name.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        });
    if !subdomain {
        return Some(invalid(
            name,
            "metadata.name",
            "FieldValueInvalid",
            &format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"),
        ));
    }
    let mut total = 0;
    if let Some(data) = obj["data"].as_object() {
        for (k, v) in data {
            if k.is_empty()
                || k.len() > 253
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                return Some(invalid(
                    name,
                    &format!("data[{k}]"),
                    "FieldValueInvalid",
                    &format!("Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
                ));
            }
            let Some(s) = v.as_str() else {
                return Some(status(
                    400,
                    "BadRequest",
                    "data values must be strings",
                    None,
                ));
            };
            total += s.len();
        }
    }
    if let Some(bin) = obj["binaryData"].as_object() {
        for v in bin.values() {
            let decoded = v
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
            total += decoded.map(|d| d.len()).unwrap_or(0);
        }
    }
    if total > MAX_CONFIGMAP_DATA {
        return Some(invalid(
            name,
            "[]",
            "FieldValueTooLong",
            &format!("Too long: may not be more than {MAX_CONFIGMAP_DATA} bytes"),
        ));
    }
    None
}

/// One requirement of an equality-based label selector.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        }
    }
}

/// Parses `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated; values are checked as the
/// API checks label values (else 400, as the real server).
fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let r = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.into(), v.into())
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement::Equals(k.into(), v.strip_prefix('=').unwrap_or(v).into())
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.into())
        } else if part.contains(' ') || part.contains('(') {
            return Err(format!("unable to parse requirement: set-based selector {part:?} not supported by this double"));
        } else {
            Requirement::Exists(part.into())
        };
        if let Requirement::Equals(k, v) | Requirement::NotEquals(k, v) = &r {
            if !label_value_ok(v) {
                return Err(format!(
                    "unable to parse requirement: values[0][{k}]: Invalid value: {v:?}: must be no more \
                     than 63 characters, alphanumeric, '-', '_' or '.', beginning and ending alphanumeric"
                ));
            }
        }
        out.push(r);
    }
    Ok(out)
}

fn label_value_ok(v: &str) -> bool {
    let alnum = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    v.len() <= 63
        && alnum(v.chars().next())
        && alnum(v.chars().last())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn forbidden(user: &str, verb: &str, route: &Route) -> Answer {
    let resource = route.resource();
    let what = match route.name() {
        Some(n) => format!("{resource} {n:?}"),
        None => resource.to_string(),
    };
    let scope = match route.namespace() {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".into(),
    };
    let mut details = json!({"kind": resource});
    if let Some(n) = route.name() {
        details["name"] = json!(n);
    }
    status(
        403,
        "Forbidden",
        &format!("{what} is forbidden: User {user:?} cannot {verb} resource {resource:?} in API group \"\" {scope}"),
        Some(details),
    )
}

fn not_found(resource: &str, name: &str) -> Answer {
    status(
        404,
        "NotFound",
        &format!("{resource} {name:?} not found"),
        Some(json!({"name": name, "kind": resource})),
    )
}

fn invalid(name: &str, field: &str, reason: &str, message: &str) -> Answer {
    status(
        422,
        "Invalid",
        &format!("ConfigMap {name:?} is invalid: {field}: {message}"),
        Some(json!({"name": name, "kind": "ConfigMap",
                    "causes": [{"reason": reason, "message": message, "field": field}]})),
    )
}

/// A `Status` object, as every API error is.
fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Answer {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        s["details"] = d;
    }
    ok(code, s)
}

fn ok(code: u16, v: Value) -> Answer {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Full::from(v.to_string()))
        .unwrap()
}

fn plain(code: u16, text: &str) -> Answer {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::from(text.to_string()))
        .unwrap()
}

/// Objects are stored without kind/apiVersion (as list items are served) and get
/// them back when served alone.
fn with_kind(v: &Value, kind: &str) -> Value {
    let mut v = v.clone();
    v["kind"] = json!(kind);
    v["apiVersion"] = json!("v1");
    v
}

fn strip_kind(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
}

fn uid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The RSAPrivateKey (PKCS#1) inside a PKCS#8 PrivateKeyInfo:
/// `SEQUENCE { INTEGER, SEQUENCE algorithm, OCTET STRING key }`.
fn pkcs8_rsa_to_pkcs1(der: &[u8]) -> Vec<u8> {
    fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = b[0];
        let (len, hdr) = if b[1] < 0x80 {
            (b[1] as usize, 2)
        } else {
            let n = (b[1] & 0x7f) as usize;
            (
                b[2..2 + n].iter().fold(0usize, |a, x| a << 8 | *x as usize),
                2 + n,
            )
        };
        (tag, &b[hdr..hdr + len], &b[hdr + len..])
    }
    let (_, info, _) = tlv(der);
    let (_, _, rest) = tlv(info); // version
    let (_, _, rest) = tlv(rest); // algorithm
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "PKCS#8 key is an OCTET STRING");
    key.to_vec()
}

/// A path in `dir` (convenience for tests writing files next to a kubeconfig).
pub fn file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}
