//! SPIRE JWT-SVIDs: the bearer token IMS (through the API gateway) wants.
//!
//! Two ways to get one, behind [`TokenProvider`]:
//! - [`SpireBackend::Cli`] (default) runs the spire-agent binary exactly as the
//!   original agent did. CSM registers the marshal workload by the *path of the
//!   calling binary* (`/opt/cray/cray-spire/sbps-marshal-spire-agent`), so only that
//!   binary receives `spiffe://shasta/ncn/workload/sbps-marshal` without extra
//!   registration entries.
//! - `SpireBackend::Native` speaks the SPIFFE Workload API (gRPC over the agent's
//!   unix socket) itself, for sites that registered the Rust binary. It is built
//!   with the cargo feature `spiffe` (on by default, and in the RPM): tonic and
//!   prost are the only users of gRPC in the agent, so a build without them is
//!   smaller, and the configuration refuses `SPIRE_PROVIDER=workload-api` there.
//!
//! Both pick the SVID whose SPIFFE ID is the marshal's (with or without this node's
//! xname). The token is reused until shortly before its `exp` claim, so a scan costs
//! no fork or RPC while the token is fresh. The token itself is never logged: it sits
//! in a [`Token`] whose `Debug` is redacted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures_util::future::BoxFuture;
use serde_json::Value;
use thiserror::Error;

/// The marshal's SPIFFE ID without an xname.
pub const SPIFFE_ID: &str = "spiffe://shasta/ncn/workload/sbps-marshal";

/// The marshal's SPIFFE ID for the node `xname`.
pub fn spiffe_id_for(xname: &str) -> String {
    format!("spiffe://shasta/ncn/{xname}/workload/sbps-marshal")
}

/// A JWT-SVID. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    jwt: String,
    /// The `exp` claim, if the payload had one.
    pub(crate) expires: Option<SystemTime>,
}

impl Token {
    pub fn new(jwt: String) -> Token {
        let expires = jwt_exp(&jwt);
        Token { jwt, expires }
    }

    /// The token itself, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.jwt
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted>, expires {:?})", self.expires)
    }
}

/// Why no token could be had.
#[derive(Debug, Error)]
pub enum SpireError {
    #[error("cannot run {path}: {reason}")]
    Spawn { path: PathBuf, reason: String },
    #[error("{path} exited with {status}: {stderr}")]
    Exit {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("{0} timed out")]
    Timeout(String),
    #[error("spire-agent output unusable: {0}")]
    Output(String),
    #[error("SPIFFE Workload API at {socket}: {detail}")]
    Rpc { socket: PathBuf, detail: String },
    #[error("no SVID for {wanted} among [{offered}]")]
    NoMatchingSvid { wanted: String, offered: String },
}

/// Whether this build has the SPIFFE Workload API client (cargo feature `spiffe`).
pub(crate) const WORKLOAD_API_BUILT: bool = cfg!(feature = "spiffe");

/// Anything that yields a bearer token. Implementations cache as they see fit.
pub trait TokenProvider: Send + Sync {
    fn token(&self) -> BoxFuture<'_, Result<Token, SpireError>>;
}

/// A fixed token (tests, benchmarks, or a site that injects one).
pub struct StaticToken(pub Token);

impl TokenProvider for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<Token, SpireError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// How to reach SPIRE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpireBackend {
    /// Run `<agent> api fetch jwt -audience A -socketPath S -output json`.
    Cli { agent: PathBuf },
    /// Call `FetchJWTSVID` on the socket directly.
    #[cfg(feature = "spiffe")]
    Native,
}

/// Settings of the SPIRE token provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpireSettings {
    pub backend: SpireBackend,
    /// `SPIRE_AGENT_SOCK_PATH`.
    pub socket: PathBuf,
    /// `SPIRE_JWT_AUDIENCE`.
    pub audience: String,
    /// Holds this node's xname (`/etc/cray/xname`); unreadable → only [`SPIFFE_ID`] matches.
    pub xname_file: PathBuf,
    pub timeout: Duration,
    /// A cached token is renewed this long before its `exp`.
    pub refresh_before: Duration,
}

impl Default for SpireSettings {
    fn default() -> Self {
        SpireSettings {
            backend: SpireBackend::Cli {
                agent: "/opt/cray/cray-spire/sbps-marshal-spire-agent".into(),
            },
            socket: "/var/lib/spire/agent.sock".into(),
            audience: "system-compute".into(),
            xname_file: "/etc/cray/xname".into(),
            timeout: Duration::from_secs(30),
            refresh_before: Duration::from_secs(30),
        }
    }
}

/// The SPIRE token provider with its cache.
pub struct SpireTokens {
    cfg: SpireSettings,
    cache: tokio::sync::Mutex<Option<Token>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl SpireTokens {
    pub fn new(cfg: SpireSettings) -> SpireTokens {
        SpireTokens {
            cfg,
            cache: tokio::sync::Mutex::new(None),
            fetches: Default::default(),
        }
    }

    /// Fetches made so far (CLI runs or RPCs), cache hits excluded.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn fetch(&self) -> Result<Token, SpireError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let svids = match &self.cfg.backend {
            SpireBackend::Cli { agent } => fetch_cli(agent, &self.cfg).await?,
            #[cfg(feature = "spiffe")]
            SpireBackend::Native => native::fetch(&self.cfg).await?,
        };
        let xname = read_xname(&self.cfg.xname_file);
        select_svid(&svids, xname.as_deref()).map(Token::new)
    }
}

impl TokenProvider for SpireTokens {
    fn token(&self) -> BoxFuture<'_, Result<Token, SpireError>> {
        Box::pin(async move {
            // Held across the fetch: concurrent callers wait for one fetch.
            let mut cache = self.cache.lock().await;
            let now = SystemTime::now();
            if let Some(t) = cache.as_ref() {
                if fresh(t, now, self.cfg.refresh_before) {
                    return Ok(t.clone());
                }
            }
            *cache = None;
            let t = self.fetch().await?;
            match t.expires {
                Some(exp) if exp <= now => {
                    tracing::warn!("SPIRE returned an already expired JWT-SVID; using it once")
                }
                None => tracing::debug!("JWT-SVID has no exp claim; not cached"),
                _ => {}
            }
            if fresh(&t, now, self.cfg.refresh_before) {
                *cache = Some(t.clone());
            }
            Ok(t)
        })
    }
}

/// Usable without renewal: has an `exp` more than `margin` away.
fn fresh(t: &Token, now: SystemTime, margin: Duration) -> bool {
    t.expires.is_some_and(|exp| exp > now + margin)
}

/// The `exp` claim of a JWT, read without verifying anything (we only pass it on).
pub(crate) fn jwt_exp(jwt: &str) -> Option<SystemTime> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    if !exp.is_finite() || !(0.0..=1e11).contains(&exp) {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs(exp as u64))
}

fn read_xname(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(file = %path.display(), error = %e, "no xname; only {SPIFFE_ID} will match");
            None
        }
    }
}

/// `(spiffe_id, svid)` pairs as offered by SPIRE.
pub(crate) type Svids = Vec<(String, String)>;

/// The first SVID that is the marshal's, with or without this node's xname.
pub(crate) fn select_svid(svids: &Svids, xname: Option<&str>) -> Result<String, SpireError> {
    let with_xname = xname.map(spiffe_id_for);
    svids
        .iter()
        .find(|(id, _)| id == SPIFFE_ID || Some(id) == with_xname.as_ref())
        .map(|(_, svid)| svid.clone())
        .ok_or_else(|| SpireError::NoMatchingSvid {
            wanted: match &with_xname {
                Some(x) => format!("{SPIFFE_ID} or {x}"),
                None => SPIFFE_ID.to_string(),
            },
            offered: svids
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

async fn fetch_cli(agent: &Path, cfg: &SpireSettings) -> Result<Svids, SpireError> {
    let mut cmd = tokio::process::Command::new(agent);
    cmd.args([
        "api",
        "fetch",
        "jwt",
        "-audience",
        &cfg.audience,
        "-socketPath",
    ])
    .arg(&cfg.socket)
    .args(["-output", "json"])
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(cfg.timeout, cmd.output())
        .await
        .map_err(|_| SpireError::Timeout(format!("{} after {:?}", agent.display(), cfg.timeout)))?
        .map_err(|e| SpireError::Spawn {
            path: agent.to_path_buf(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        // stderr carries the RPC error; stdout (which could hold a token) is not shown.
        return Err(SpireError::Exit {
            path: agent.to_path_buf(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .trim()
                .chars()
                .take(500)
                .collect(),
        });
    }
    parse_cli_output(&out.stdout)
}

/// `[{"svids":[{"spiffe_id":…,"svid":…,"hint":…}]},{"bundles":{…}}]`.
pub(crate) fn parse_cli_output(stdout: &[u8]) -> Result<Svids, SpireError> {
    let v: Value =
        serde_json::from_slice(stdout).map_err(|e| SpireError::Output(format!("not JSON: {e}")))?;
    let items = v
        .as_array()
        .ok_or_else(|| SpireError::Output("not a JSON array".into()))?;
    let svids = items
        .iter()
        .find_map(|i| i.get("svids").and_then(Value::as_array))
        .ok_or_else(|| SpireError::Output("no \"svids\" entry".into()))?;
    Ok(svids
        .iter()
        .filter_map(|s| {
            Some((
                s.get("spiffe_id")?.as_str()?.to_string(),
                s.get("svid")?.as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The SPIFFE Workload API, hand-declared: three messages and one unary call do not
/// justify protoc and a build script.
#[cfg(feature = "spiffe")]
pub mod proto {
    /// `JWTSVIDRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JwtSvidRequest {
        #[prost(string, repeated, tag = "1")]
        pub audience: Vec<String>,
        #[prost(string, tag = "2")]
        pub spiffe_id: String,
    }

    /// `JWTSVIDResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JwtSvidResponse {
        #[prost(message, repeated, tag = "1")]
        pub svids: Vec<JwtSvid>,
    }

    /// `JWTSVID`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JwtSvid {
        #[prost(string, tag = "1")]
        pub spiffe_id: String,
        #[prost(string, tag = "2")]
        pub svid: String,
        #[prost(string, tag = "3")]
        pub hint: String,
    }

    /// The service has no proto package, hence no dotted prefix.
    pub(crate) const FETCH_JWT_SVID: &str = "/SpiffeWorkloadAPI/FetchJWTSVID";
    /// The metadata every Workload API call must carry.
    pub(crate) const SECURITY_HEADER: &str = "workload.spiffe.io";
}

#[cfg(feature = "spiffe")]
mod native {
    use super::proto::{JwtSvidRequest, JwtSvidResponse, FETCH_JWT_SVID, SECURITY_HEADER};
    use super::{SpireError, SpireSettings, Svids};
    use hyper_util::rt::TokioIo;
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::{Endpoint, Uri};

    pub(crate) async fn fetch(cfg: &SpireSettings) -> Result<Svids, SpireError> {
        let socket = cfg.socket.clone();
        let rpc = |detail: String| SpireError::Rpc {
            socket: cfg.socket.clone(),
            detail,
        };
        // The URI is a placeholder; the connector below ignores it.
        let endpoint = Endpoint::from_static("http://localhost")
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout);
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
            .await
            .map_err(|e| rpc(format!("connect: {}", crate::http::error_chain(&e))))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| rpc(format!("not ready: {e}")))?;
        let mut req = tonic::Request::new(JwtSvidRequest {
            audience: vec![cfg.audience.clone()],
            spiffe_id: String::new(),
        });
        req.metadata_mut().insert(
            SECURITY_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
        req.set_timeout(cfg.timeout);
        let resp: tonic::Response<JwtSvidResponse> = grpc
            .unary(
                req,
                PathAndQuery::from_static(FETCH_JWT_SVID),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map_err(|s| rpc(format!("{:?}: {}", s.code(), s.message())))?;
        Ok(resp
            .into_inner()
            .svids
            .into_iter()
            .map(|s| (s.spiffe_id, s.svid))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(r#"{"alg":"ES256"}"#),
            e.encode(claims)
        )
    }

    #[test]
    fn exp_is_read() {
        let t = Token::new(jwt(r#"{"sub":"x","exp":2000000000}"#));
        assert_eq!(
            t.expires,
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(jwt_exp(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_exp("garbage"), None);
        assert!(!format!("{t:?}").contains("eyJ"));
    }

    #[test]
    fn selects_either_id_form() {
        let svids = vec![
            ("spiffe://shasta/other".to_string(), "A".to_string()),
            (spiffe_id_for("x3000c0s7b0n0"), "B".to_string()),
            (SPIFFE_ID.to_string(), "C".to_string()),
        ];
        assert_eq!(select_svid(&svids, Some("x3000c0s7b0n0")).unwrap(), "B");
        assert_eq!(select_svid(&svids, None).unwrap(), "C");
        let e = select_svid(&svids[..1].to_vec(), Some("x1")).unwrap_err();
        assert!(e.to_string().contains("spiffe://shasta/other"), "{e}");
    }

    #[test]
    fn cli_output() {
        let out = br#"[{"svids":[{"spiffe_id":"spiffe://shasta/ncn/workload/sbps-marshal","svid":"T","hint":""}]},{"bundles":{"spiffe://shasta":"e30="}}]"#;
        assert_eq!(
            parse_cli_output(out).unwrap(),
            vec![(SPIFFE_ID.into(), "T".into())]
        );
        assert!(parse_cli_output(b"{}").is_err());
        assert!(parse_cli_output(b"[{\"bundles\":{}}]").is_err());
    }
}
