//! TLS policy against HTTPS doubles of IMS and S3 on 127.0.0.1, with a CA made
//! here: refused with the system roots only, accepted with the CA bundle,
//! accepted with verification explicitly off (and a warning in the log).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use sbps_marshal::http::TlsOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use url::Url;

use crate::support::*;

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((s, a)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses our certificate ends its handshake: next one.
            if let Ok(t) = self.acceptor.accept(s).await {
                return (t, a);
            }
        }
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A test CA (PEM) and a server config for 127.0.0.1 signed by it.
fn pki() -> (String, Arc<ServerConfig>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "sbps-marshal hardening test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (ca.pem(), Arc::new(cfg))
}

async fn serve_tls(router: Router, cfg: Arc<ServerConfig>) -> (Url, tokio::task::JoinHandle<()>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let l = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(cfg),
    };
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, router).await;
    });
    (format!("https://{addr}").parse().unwrap(), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_unless_explicitly_off() {
    let cap = Capture::start();
    let (ca_pem, cfg) = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let creds = cred_file(dir.path(), &format!("{ACCESS}:{S3_SECRET}\n"));
    let s3 = S3::memory([Object::new("PE/a.squashfs", "e", 1)]);
    let (s3_url, s3_task) = serve_tls(s3.router(), cfg.clone()).await;
    let (ims_url, ims_task) = serve_tls(ims_router("[]".into()), cfg).await;
    let mount = tempfile::tempdir().unwrap();
    let set = settings(mount.path());
    let gather = |tls: TlsOptions| {
        let src = sources(
            s3_url.clone(),
            ims_url.clone(),
            creds.clone(),
            tls,
            Duration::from_secs(5),
        );
        let set = set.clone();
        async move { src.gather(&set).await }
    };

    // Default: system roots only; our CA is unknown.
    let g = gather(TlsOptions::default()).await;
    let s3_err = g.inventory.s3.as_ref().unwrap_err();
    let ims_err = g.inventory.ims.as_ref().unwrap_err();
    for e in [s3_err, ims_err] {
        assert!(
            e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
            "{e}"
        );
    }

    // The CA bundle configured: accepted.
    let g = gather(TlsOptions {
        ca_bundle: Some(ca_file.clone()),
        insecure: false,
    })
    .await;
    assert_eq!(g.inventory.s3.as_ref().unwrap().len(), 1);
    assert!(g.inventory.ims.as_ref().unwrap().is_empty());
    assert!(!cap.text().contains("verification is OFF"));

    // Verification explicitly off: accepted, and said so for both.
    let g = gather(TlsOptions {
        ca_bundle: None,
        insecure: true,
    })
    .await;
    assert!(g.inventory.s3.is_ok() && g.inventory.ims.is_ok());
    let log = cap.text();
    for what in ["S3", "IMS"] {
        assert!(
            log.contains(&format!("TLS certificate verification is OFF for {what}")),
            "no warning for {what}:\n{log}"
        );
    }
    s3_task.abort();
    ims_task.abort();
}
