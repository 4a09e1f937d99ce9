//! SigV4 query-string presigning as S3 checks it: the double recomputes the
//! signature of each request from the secret it was given and answers S3's own 403s
//! (`AccessDenied`, `InvalidAccessKeyId`, `SignatureDoesNotMatch`) when it differs, so
//! a test that wants a rejected signature gets one for the reason S3 would give.
//!
//! Implemented from the specification (canonical request, string to sign, derived
//! key), not with the signer the agent uses, so the two check each other.

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{pct_decode, S3Error};

/// The access key pair the double accepts.
#[derive(Debug, Clone)]
pub struct Keys {
    pub access: String,
    pub secret: String,
}

/// Checks the presigned request `method path?query`; `Err` is the 403 S3 answers.
pub fn check(
    keys: &Keys,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), S3Error> {
    let params: Vec<(Vec<u8>, Vec<u8>)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let Some(signature) = param("X-Amz-Signature") else {
        return Err(S3Error::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Access Denied",
        ));
    };
    let credential = param("X-Amz-Credential").unwrap_or_default();
    let (access, scope) = credential.split_once('/').unwrap_or((&credential, ""));
    if access != keys.access {
        return Err(S3Error::new(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ));
    }
    let date = param("X-Amz-Date").unwrap_or_default();
    let signed_headers = param("X-Amz-SignedHeaders").unwrap_or_default();

    let mut canonical_query: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != b"X-Amz-Signature")
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    canonical_query.sort();
    let canonical_query = canonical_query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = signed_headers
        .split(';')
        .map(|h| {
            let v = headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            format!("{h}:{v}\n")
        })
        .collect();
    let canonical_request = format!(
        "{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD"
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = format!("AWS4{}", keys.secret).into_bytes();
    for part in scope.split('/') {
        key = hmac(&key, part.as_bytes());
    }
    if hex::encode(hmac(&key, string_to_sign.as_bytes())) != signature {
        return Err(S3Error::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        ));
    }
    Ok(())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding as SigV4 wants it: all but `A-Za-z0-9-._~`, uppercase hex.
fn uri_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for c in b {
        if c.is_ascii_alphanumeric() || b"-._~".contains(c) {
            s.push(*c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
    use std::time::Duration;

    fn keys() -> Keys {
        Keys {
            access: "AKIDTEST".into(),
            secret: "secret".into(),
        }
    }

    fn presigned(secret: &str) -> url::Url {
        let b = Bucket::new(
            "http://127.0.0.1:9000".parse().unwrap(),
            UrlStyle::Path,
            "boot-images",
            "us-east-1",
        )
        .unwrap();
        let creds = Credentials::new("AKIDTEST", secret);
        let mut a = b.list_objects_v2(Some(&creds));
        a.with_prefix("PE/a b+c");
        a.with_continuation_token("6162");
        a.sign(Duration::from_secs(60))
    }

    fn run(u: &url::Url) -> Result<(), S3Error> {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:9000".parse().unwrap());
        check(&keys(), "GET", u.path(), u.query(), &h)
    }

    #[test]
    fn a_signature_by_the_secret_passes_any_other_does_not() {
        run(&presigned("secret")).unwrap();
        assert_eq!(
            run(&presigned("other")).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
        let mut u = presigned("secret");
        let q = u.query().unwrap().replace("PE", "XX");
        u.set_query(Some(&q));
        assert_eq!(run(&u).unwrap_err().code, "SignatureDoesNotMatch");
        u.set_query(Some("list-type=2"));
        assert_eq!(run(&u).unwrap_err().code, "AccessDenied");
    }
}
