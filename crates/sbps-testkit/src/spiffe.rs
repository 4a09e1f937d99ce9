//! The SPIFFE Workload API double: `FetchJWTSVID` over gRPC on a Unix socket, as
//! spire-agent serves it, for the native token provider (`SPIRE_PROVIDER=workload-api`).
//!
//! It refuses a call without the `workload.spiffe.io: true` security header and one
//! without an audience (InvalidArgument, spire-agent's words), hands out the SVIDs a
//! test set, and counts the calls and logs each call's audience.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sbps_marshal::inventory::spire::proto::{JwtSvid, JwtSvidRequest, JwtSvidResponse};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

/// What the double hands out, and what it saw. Clones share all of it.
#[derive(Clone, Default)]
pub struct WorkloadApi {
    svids: Arc<Mutex<Vec<(String, String)>>>,
    calls: Arc<AtomicU64>,
    audiences: Arc<Mutex<Vec<Vec<String>>>>,
}

impl WorkloadApi {
    /// Hands out these `(SPIFFE ID, JWT-SVID)` pairs from now on.
    pub fn set_svids(&self, svids: Vec<(String, String)>) {
        *self.svids.lock().unwrap_or_else(|e| e.into_inner()) = svids;
    }

    /// `FetchJWTSVID` calls so far (refused ones too).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The audience of each call that carried the security header, in order.
    pub fn audiences(&self) -> Vec<Vec<String>> {
        self.audiences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fetch(&self, req: Request<JwtSvidRequest>) -> Result<Response<JwtSvidResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
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
        self.audiences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r.audience.clone());
        if r.audience.iter().all(|a| a.is_empty()) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let svids = self
            .svids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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

/// The service glue tonic-build would generate for one unary method (the agent's
/// crate carries the message types only, so no generated server exists to reuse).
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

/// The double served on a Unix socket in a fresh directory; stopped on drop.
pub struct Served {
    pub api: WorkloadApi,
    /// The agent's `SPIRE_AGENT_SOCKET`.
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Serves a double handing out `svids` from the current runtime.
    pub async fn start(svids: Vec<(String, String)>) -> Served {
        let dir = tempfile::tempdir().expect("socket dir");
        let socket = dir.path().join("agent.sock");
        let api = WorkloadApi::default();
        api.set_svids(svids);
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind the socket");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let svc = api.clone();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        Served {
            api,
            socket,
            _dir: dir,
            task,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
