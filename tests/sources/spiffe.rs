//! The native SPIRE token provider (`SPIRE_PROVIDER=workload-api`, cargo feature
//! `spiffe`) against the test kit's SPIFFE Workload API double (a tonic server on a
//! Unix socket). The spire-agent CLI provider, which every build has, is tested in
//! `spire.rs`.

use std::path::Path;
use std::time::Duration;

use sbps_marshal::inventory::spire::proto::{JwtSvidRequest, JwtSvidResponse};
use sbps_marshal::inventory::spire::{
    spiffe_id_for, SpireBackend, SpireSettings, SpireTokens, TokenProvider, SPIFFE_ID,
};
use sbps_testkit::spiffe::Served;
use sbps_testkit::tokens::{jwt, token_exp};
use serde_json::json;
use tonic::codegen::http;
use tonic::{Request, Response, Status};

fn native_config(socket: &Path, xname_file: &Path) -> SpireSettings {
    SpireSettings {
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
    let d = Served::start(vec![
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
    assert_eq!(d.api.calls(), 1, "second call served from the cache");
    assert_eq!(p.fetches(), 1);
    assert_eq!(d.api.audiences()[0], vec!["system-compute".to_string()]);
}

#[tokio::test]
async fn native_xname_form_and_expired_token_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let xname = dir.path().join("xname");
    std::fs::write(&xname, "x3000c0s7b0n0\n").unwrap();
    let expired = token_exp(-10);
    let d = Served::start(vec![(spiffe_id_for("x3000c0s7b0n0"), expired.clone())]).await;
    let p = SpireTokens::new(native_config(&d.socket, &xname));
    assert_eq!(p.token().await.unwrap().secret(), expired);
    assert_eq!(p.token().await.unwrap().secret(), expired);
    assert_eq!(d.api.calls(), 2, "an expired token is never reused");

    // A token inside the renewal margin is not cached either; one without exp neither.
    d.api
        .set_svids(vec![(spiffe_id_for("x3000c0s7b0n0"), token_exp(10))]);
    p.token().await.unwrap();
    p.token().await.unwrap();
    assert_eq!(d.api.calls(), 4);
    d.api
        .set_svids(vec![(SPIFFE_ID.into(), jwt(&json!({"sub": "x"})))]);
    p.token().await.unwrap();
    p.token().await.unwrap();
    assert_eq!(d.api.calls(), 6);
}

#[tokio::test]
async fn native_failures() {
    let dir = tempfile::tempdir().unwrap();
    let d = Served::start(vec![(
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
    let d = Served::start(vec![(SPIFFE_ID.into(), token_exp(60))]).await;
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
