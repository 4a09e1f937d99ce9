//! Which server certificates the Kubernetes client accepts.
//!
//! kube-rs trusts either the cluster's CA alone or the platform's roots alone; the
//! agent's rule (README, TLS) is "the relevant roots plus `CA_BUNDLE`", so the
//! verifier is chosen here ([`trust`], pure) and built with rustls's own verifiers.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What the client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Any certificate (verification explicitly off).
    Any,
    /// Exactly these roots (DER): the cluster's CA plus `CA_BUNDLE`.
    Only(Vec<Vec<u8>>),
    /// The system's roots plus these (DER, from `CA_BUNDLE`).
    SystemPlus(Vec<Vec<u8>>),
}

/// The trust rule: verification off wins; the cluster's CA (when the kubeconfig or
/// service account names one) is trusted with the bundle; else the system roots are.
pub(crate) fn trust(
    insecure: bool,
    cluster_ca: Option<Vec<Vec<u8>>>,
    bundle: Vec<Vec<u8>>,
) -> Trust {
    match (insecure, cluster_ca) {
        (true, _) => Trust::Any,
        (false, Some(mut ca)) if !ca.is_empty() => {
            ca.extend(bundle);
            Trust::Only(ca)
        }
        (false, _) => Trust::SystemPlus(bundle),
    }
}

/// The crypto provider every TLS client of the agent uses (the one reqwest uses too).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// Makes [`provider`] the process default, for code (kube-rs) that asks for the default.
pub(crate) fn ensure_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: the same provider is installed.
        let _ = aws_lc_rs::default_provider().install_default();
    }
}

/// The verifier for a [`Trust`].
pub(crate) fn verifier(t: Trust) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let p = provider();
    let ders = |v: Vec<Vec<u8>>| v.into_iter().map(CertificateDer::from);
    match t {
        Trust::Any => Ok(Arc::new(AcceptAny(p))),
        Trust::Only(roots) => {
            let mut store = RootCertStore::empty();
            for c in ders(roots) {
                store
                    .add(c)
                    .map_err(|e| format!("unusable CA certificate: {e}"))?;
            }
            let v = WebPkiServerVerifier::builder_with_provider(Arc::new(store), p)
                .build()
                .map_err(|e| format!("CA certificates: {e}"))?;
            Ok(v)
        }
        Trust::SystemPlus(extra) => {
            let extra: Vec<_> = ders(extra).collect();
            match rustls_platform_verifier::Verifier::new_with_extra_roots(
                extra.clone(),
                p.clone(),
            ) {
                Ok(v) => Ok(Arc::new(v)),
                // A machine without system CA certificates still trusts the bundle.
                Err(e) if !extra.is_empty() => {
                    tracing::warn!(error = %e, "no system CA certificates: only CA_BUNDLE is trusted for the Kubernetes API");
                    verifier(Trust::Only(extra.into_iter().map(|c| c.to_vec()).collect()))
                }
                Err(e) => Err(format!(
                    "no CA to verify the Kubernetes API server with: the kubeconfig names no \
                     certificate-authority, CA_BUNDLE is empty, and the system roots are unusable ({e})"
                )),
            }
        }
    }
}

/// Accepts any certificate, but still checks the handshake signatures (so the
/// connection is at least encrypted to whoever holds the certificate's key).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_rule() {
        let ca = vec![b"ca".to_vec()];
        let bundle = vec![b"bundle".to_vec()];
        assert_eq!(trust(true, Some(ca.clone()), bundle.clone()), Trust::Any);
        assert_eq!(
            trust(false, Some(ca.clone()), bundle.clone()),
            Trust::Only(vec![b"ca".to_vec(), b"bundle".to_vec()])
        );
        assert_eq!(
            trust(false, None, bundle.clone()),
            Trust::SystemPlus(bundle.clone())
        );
        // An empty CA list is no CA: the system roots apply.
        assert_eq!(
            trust(false, Some(Vec::new()), Vec::new()),
            Trust::SystemPlus(Vec::new())
        );
    }

    #[test]
    fn garbage_roots_are_an_error_not_a_panic() {
        assert!(verifier(Trust::Only(vec![b"not DER".to_vec()])).is_err());
    }
}
