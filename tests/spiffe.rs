//! The native SPIRE token provider (`SPIRE_PROVIDER=workload-api`, cargo feature
//! `spiffe`) against a SPIFFE Workload API double: a tonic server on a unix socket.
//! The spire-agent CLI provider, which every build has, is tested in
//! `tests/sources/spire.rs`.

#[path = "sources/support.rs"]
mod support;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sbps_marshal::inventory::spire::proto::{JwtSvid, JwtSvidRequest, JwtSvidResponse};
use sbps_marshal::inventory::spire::{
    spiffe_id_for, SpireBackend, SpireConfig, SpireTokens, TokenProvider, SPIFFE_ID,
};
use serde_json::json;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use support::{jwt, token_exp, Counter};

/// What the double hands out, and what it saw.
#[derive(Clone, Default)]
struct WorkloadApi {
    svids: Arc<Mutex<Vec<(String, String)>>>,
    calls: Counter,
    audiences: Arc<Mutex<Vec<Vec<String>>>>,
}

impl WorkloadApi {
    fn fetch(&self, req: Request<JwtSvidRequest>) -> Result<Response<JwtSvidResponse>, Status> {
        self.calls.hit();
        if req
            .metadata()
            .get("workload.spiffe.io")
            .and_then(|v| v.to_str().ok())
            != Some("true")
        {
            return Err(Status::invalid_argument(
                "security header missing from request",
            ));
        }
        let r = req.into_inner();
        self.audiences.lock().unwrap().push(r.audience.clone());
        if r.audience.iter().all(|a| a.is_empty()) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let svids = self
            .svids
            .lock()
            .unwrap()
            .iter()
            .map(|(id, svid)| JwtSvid {
                spiffe_id: id.clone(),
                svid: svid.clone(),
                hint: String::new(),
            })
            .collect();
        Ok(Response::new(JwtSvidResponse { svids }))
    }
}

impl NamedService for WorkloadApi {
    const NAME: &'static str = "SpiffeWorkloadAPI";
}

/// The service glue tonic-build would generate for one unary method.
impl<B> Service<http::Request<B>> for WorkloadApi
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        struct Unary(WorkloadApi);
        impl tonic::server::UnaryService<JwtSvidRequest> for Unary {
            type Response = JwtSvidResponse;
            type Future = BoxFuture<Response<JwtSvidResponse>, Status>;
            fn call(&mut self, req: Request<JwtSvidRequest>) -> Self::Future {
                let r = self.0.fetch(req);
                Box::pin(async move { r })
            }
        }
        let me = self.clone();
        match req.uri().path() {
            "/SpiffeWorkloadAPI/FetchJWTSVID" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(Unary(me), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

struct Double {
    api: WorkloadApi,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_double(svids: Vec<(String, String)>) -> Double {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let api = WorkloadApi::default();
    *api.svids.lock().unwrap() = svids;
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let svc = api.clone();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    Double {
        api,
        socket,
        _dir: dir,
        task,
    }
}

fn native_config(socket: &Path, xname_file: &Path) -> SpireConfig {
    SpireConfig {
        backend: SpireBackend::Native,
        socket: socket.to_path_buf(),
        audience: "system-compute".into(),
        xname_file: xname_file.to_path_buf(),
        timeout: Duration::from_secs(5),
        refresh_before: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn native_picks_the_marshal_svid_and_caches_until_exp() {
    let good = token_exp(3600);
    let d = start_double(vec![
        ("spiffe://shasta/ncn/workload/other".into(), token_exp(3600)),
        (SPIFFE_ID.into(), good.clone()),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = SpireTokens::new(native_config(&d.socket, &dir.path().join("no-xname")));
    let t = p.token().await.unwrap();
    assert_eq!(t.secret(), good);
    assert!(!format!("{t:?}").contains(&good));
    let t2 = p.token().await.unwrap();
    assert_eq!(t2.secret(), good);
    assert_eq!(d.api.calls.get(), 1, "second call served from the cache");
    assert_eq!(p.fetches(), 1);
    assert_eq!(
        d.api.audiences.lock().unwrap()[0],
        vec!["system-compute".to_string()]
    );
}

#[tokio::test]
async fn native_xname_form_and_expired_token_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let xname = dir.path().join("xname");
    std::fs::write(&xname, "x3000c0s7b0n0\n").unwrap();
    let expired = token_exp(-10);
    let d = start_double(vec![(spiffe_id_for("x3000c0s7b0n0"), expired.clone())]).await;
    let p = SpireTokens::new(native_config(&d.socket, &xname));
    assert_eq!(p.token().await.unwrap().secret(), expired);
    assert_eq!(p.token().await.unwrap().secret(), expired);
    assert_eq!(d.api.calls.get(), 2, "an expired token is never reused");

    // A token inside the renewal margin is not cached either; one without exp neither.
    *d.api.svids.lock().unwrap() = vec![(spiffe_id_for("x3000c0s7b0n0"), token_exp(10))];
    p.token().await.unwrap();
    p.token().await.unwrap();
    assert_eq!(d.api.calls.get(), 4);
    *d.api.svids.lock().unwrap() = vec![(SPIFFE_ID.into(), jwt(&json!({"sub": "x"})))];
    p.token().await.unwrap();
    p.token().await.unwrap();
    assert_eq!(d.api.calls.get(), 6);
}

#[tokio::test]
async fn native_failures() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_double(vec![(
        "spiffe://shasta/ncn/workload/other".into(),
        token_exp(60),
    )])
    .await;
    let nox = dir.path().join("none");
    let e = SpireTokens::new(native_config(&d.socket, &nox))
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no SVID for") && e.contains("workload/other"),
        "{e}"
    );
    assert!(!e.contains("eyJ"), "token leaked: {e}");

    let mut cfg = native_config(&d.socket, &nox);
    cfg.audience = String::new();
    let e = SpireTokens::new(cfg).token().await.unwrap_err().to_string();
    assert!(
        e.contains("InvalidArgument") && e.contains("audience"),
        "{e}"
    );

    let e = SpireTokens::new(native_config(&dir.path().join("absent.sock"), &nox))
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.sock"), "{e}");
}

/// The Workload API double really rejects a call without the security header.
#[tokio::test]
async fn double_requires_the_security_header() {
    let d = start_double(vec![(SPIFFE_ID.into(), token_exp(60))]).await;
    let socket = d.socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let s = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(s).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let r: Result<Response<JwtSvidResponse>, Status> = grpc
        .unary(
            Request::new(JwtSvidRequest {
                audience: vec!["a".into()],
                spiffe_id: String::new(),
            }),
            http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchJWTSVID"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    let s = r.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("security header"));
}
