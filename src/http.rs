//! The one place HTTP clients are built: TLS policy, timeouts, body caps, and which
//! failures are worth a retry (the loop itself is [`crate::inventory::retry`]).
//!
//! S3 and IMS talk HTTP through a client made here (the Kubernetes client in
//! [`crate::k8s`] follows the same rules), so they hold everywhere alike: TLS is
//! verified against the system roots plus an optional CA bundle, verification is off only when the operator asked for it (and
//! then we say so in the log), every request has a time bound, and no response body
//! is read past a cap (a misbehaving server must not make the agent swallow gigabytes).

#![warn(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// TLS settings of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of extra trusted CAs (added to the system roots).
    pub ca_bundle: Option<PathBuf>,
    /// Accept any server certificate. Only for an operator who asked for it explicitly.
    pub insecure: bool,
}

/// Errors building a client.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot read CA bundle {path}: {source}")]
    CaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA bundle {path} holds no usable PEM certificate: {detail}")]
    CaParse { path: PathBuf, detail: String },
    #[error("cannot build HTTP client: {0}")]
    Build(String),
}

/// Builds a client: `timeout` bounds each whole request, connecting included.
///
/// `what` names the server in the warning logged when verification is off.
pub(crate) fn client(
    what: &str,
    tls: &TlsOptions,
    timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    match builder(what, tls, timeout, false)?.build() {
        Ok(c) => Ok(c),
        // A machine without system CA certificates (a minimal container, the test VM)
        // must still reach plain-http endpoints: build with only the configured roots,
        // so https fails later with a certificate error that names the server.
        Err(e) if error_chain(&e).contains("CA certificates") => {
            tracing::warn!(
                server = what,
                "no system CA certificates found; only CA_BUNDLE (if any) is trusted for {what}"
            );
            builder(what, tls, timeout, true)?
                .build()
                .map_err(|e| ClientError::Build(error_chain(&e)))
        }
        Err(e) => Err(ClientError::Build(error_chain(&e))),
    }
}

fn builder(
    what: &str,
    tls: &TlsOptions,
    timeout: Duration,
    without_system_roots: bool,
) -> Result<reqwest::ClientBuilder, ClientError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        // The agent talks to in-cluster endpoints; an inherited HTTP(S)_PROXY would
        // silently route them elsewhere (and the sources do not want it).
        .no_proxy()
        .user_agent(concat!("sbps-marshal/", env!("CARGO_PKG_VERSION")));
    let bundle = match &tls.ca_bundle {
        Some(path) => read_pem_bundle(path)?,
        None => Vec::new(),
    };
    if without_system_roots {
        b = b.tls_certs_only(bundle);
    } else if !bundle.is_empty() {
        b = b.tls_certs_merge(bundle);
    }
    if tls.insecure {
        tracing::warn!(
            server = what,
            "TLS certificate verification is OFF for {what} (explicitly configured)"
        );
        b = b.tls_danger_accept_invalid_certs(true);
    }
    Ok(b)
}

fn read_pem_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = std::fs::read(path).map_err(|source| ClientError::CaRead {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::CaParse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(ClientError::CaParse {
            path: path.to_path_buf(),
            detail: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Why a body could not be read.
#[derive(Debug, Error)]
pub enum BodyError {
    #[error("response body exceeds the {cap}-byte limit")]
    TooLarge { cap: usize },
    #[error("reading response body: {0}")]
    Read(String),
}

impl BodyError {
    /// A timeout while reading is worth a retry; an oversized body is not.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Read(s) if s.contains("timed out") || s.contains("timeout"))
    }
}

/// Reads a body chunk by chunk, failing as soon as it passes `cap` bytes. A declared
/// `Content-Length` above the cap fails before a byte is read; one within it sizes
/// the buffer, so a listing page is not copied through every power of two on its
/// way to 300 KiB.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Bytes, BodyError> {
    let declared = match resp.content_length() {
        Some(n) if n > cap as u64 => return Err(BodyError::TooLarge { cap }),
        Some(n) => n as usize,
        None => 0,
    };
    let mut buf = BytesMut::with_capacity(declared);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BodyError::Read(request_error(e)))?
    {
        if buf.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A reqwest error on one line, without its URL (a presigned S3 URL carries a
/// signature valid for minutes, a gateway URL may carry `user:password@`); callers
/// name the redacted URL themselves.
pub(crate) fn request_error(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

/// An error with its sources, on one line (reqwest hides the useful part in `source()`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = inner.source();
    }
    s
}

/// A URL for logs: no query string (presigned S3 URLs carry a signature there) and
/// no `user:password@`.
pub(crate) fn redact_url(u: &reqwest::Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// Whether an HTTP status is worth another try (server-side trouble, throttling).
pub(crate) fn retryable_status(s: reqwest::StatusCode) -> bool {
    s.is_server_error() || s == reqwest::StatusCode::TOO_MANY_REQUESTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_for_logs_carry_no_credentials() {
        let u: reqwest::Url = "https://admin:pw@gw/x?X-Amz-Signature=s".parse().unwrap();
        assert_eq!(redact_url(&u), "https://gw/x");
    }

    #[test]
    fn missing_ca_bundle_is_named() {
        let tls = TlsOptions {
            ca_bundle: Some("/nonexistent/ca.pem".into()),
            insecure: false,
        };
        let e = client("x", &tls, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    /// A real CA bundle merges with the system roots (the platform verifier supports it).
    #[test]
    fn valid_ca_bundle_is_accepted() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), include_str!("../tests/data/test-ca.pem")).unwrap();
        let tls = TlsOptions {
            ca_bundle: Some(f.path().to_path_buf()),
            insecure: false,
        };
        client("x", &tls, Duration::from_secs(1)).unwrap();
        let insecure = TlsOptions {
            ca_bundle: None,
            insecure: true,
        };
        client("x", &insecure, Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn garbage_ca_bundle_is_rejected() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "not a certificate").unwrap();
        let tls = TlsOptions {
            ca_bundle: Some(f.path().to_path_buf()),
            insecure: false,
        };
        assert!(client("x", &tls, Duration::from_secs(1)).is_err());
    }
}
