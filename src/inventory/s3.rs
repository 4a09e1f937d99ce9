//! The S3 source: the whole bucket listing and manifest downloads.
//!
//! rusty-s3 signs (SigV4, path-style, query-string presigning), reqwest sends, and
//! `listing.rs` reads each listing page for the key, ETag and size of its objects.
//! That keeps the S3 code to two calls we fully control: `ListObjectsV2` with
//! continuation tokens and `GetObject` with a body cap. Credentials are re-read from
//! the s3fs-style passwd file on every listing, as the original agent did, so a
//! rotated key is picked up without a restart, and a broken file makes this scan's
//! S3 source *unknown* instead of stopping the agent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use thiserror::Error;
use url::Url;

use super::retry::{retry, RetryPolicy};
use super::S3Object;
use crate::http::{self, BodyError, ClientError, TlsOptions};

pub mod listing;

/// Largest accepted listing page (a page of 1,000 keys is about 300 KiB of XML).
const LIST_PAGE_CAP: usize = 16 * 1024 * 1024;
/// A listing with more pages than this is taken as a server looping on its token.
const MAX_PAGES: usize = 100_000;
/// Validity of each presigned URL; a request is signed right before it is sent.
const PRESIGN_FOR: Duration = Duration::from_secs(300);

/// Settings of the S3 source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `<S3_PROTO>://<S3_HOST>`, e.g. `https://rgw-vip.nmn`.
    pub(crate) endpoint: Url,
    pub(crate) bucket: String,
    /// SigV4 region. Ceph RGW accepts the boto3 default, `us-east-1`.
    pub(crate) region: String,
    /// s3fs passwd format: one line `ACCESS_KEY_ID:SECRET`.
    pub credential_file: PathBuf,
    pub tls: TlsOptions,
    /// Bound of each request (one listing page, one GetObject).
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl S3Settings {
    /// The original's defaults for a given endpoint and credential file.
    pub fn new(endpoint: Url, bucket: &str, credential_file: PathBuf) -> S3Settings {
        S3Settings {
            endpoint,
            bucket: bucket.to_string(),
            region: "us-east-1".into(),
            credential_file,
            tls: TlsOptions::default(),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// A credential file problem. Never carries the secret.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("cannot read S3 credential file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("S3 credential file {path} is empty")]
    Empty { path: PathBuf },
    #[error("S3 credential file {path} is not in 'ACCESS_KEY_ID:SECRET' form (no ':' found)")]
    NoColon { path: PathBuf },
    #[error("S3 credential file {path} is not in 'ACCESS_KEY_ID:SECRET' form ({colons} ':' found, expected 1)")]
    SeveralColons { path: PathBuf, colons: usize },
    #[error("S3 credential file {path} has an empty access key or secret")]
    EmptyPart { path: PathBuf },
    #[error("S3 credential file {path} has more than one line")]
    SeveralLines { path: PathBuf },
}

/// Why the S3 source could not answer.
#[derive(Debug, Error)]
pub enum S3Error {
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("S3 {op} {url}: HTTP {status}{detail}")]
    Status {
        op: &'static str,
        url: String,
        status: u16,
        /// ` (Code: message)` from the S3 XML error document, if any.
        detail: String,
    },
    #[error("S3 object {key} not found (HTTP 404)")]
    NotFound { key: String },
    #[error("S3 {op} {url}: {detail}")]
    Transport {
        op: &'static str,
        url: String,
        detail: String,
    },
    #[error("S3 {op} {url}: {source}")]
    Body {
        op: &'static str,
        url: String,
        source: BodyError,
    },
    #[error("S3 listing page {page} unparsable: {detail}")]
    Parse { page: usize, detail: String },
    #[error("S3 listing did not end after {0} pages (continuation token loop?)")]
    TooManyPages(usize),
    #[error("S3 endpoint/bucket invalid: {0}")]
    Config(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Reads `ACCESS:SECRET` from an s3fs passwd file.
///
/// Trailing newline/CRLF and surrounding blanks are tolerated; anything else that is
/// not exactly one colon between two non-empty parts is refused. A file readable by
/// group or others is accepted with a warning (s3fs itself refuses it).
pub fn read_credentials(path: &Path) -> Result<Credentials, CredentialError> {
    let text = std::fs::read_to_string(path).map_err(|e| CredentialError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    warn_if_exposed(path);
    let (key, secret) = parse_credentials(&text, path)?;
    Ok(Credentials::new(key, secret))
}

fn parse_credentials<'a>(
    text: &'a str,
    path: &Path,
) -> Result<(&'a str, &'a str), CredentialError> {
    let p = || path.to_path_buf();
    let line = text.trim();
    if line.is_empty() {
        return Err(CredentialError::Empty { path: p() });
    }
    if line.lines().count() > 1 {
        return Err(CredentialError::SeveralLines { path: p() });
    }
    let colons = line.matches(':').count();
    let (key, secret) = match colons {
        0 => return Err(CredentialError::NoColon { path: p() }),
        1 => line
            .split_once(':')
            .ok_or(CredentialError::NoColon { path: p() })?,
        n => {
            return Err(CredentialError::SeveralColons {
                path: p(),
                colons: n,
            })
        }
    };
    let (key, secret) = (key.trim(), secret.trim());
    if key.is_empty() || secret.is_empty() {
        return Err(CredentialError::EmptyPart { path: p() });
    }
    Ok((key, secret))
}

fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "S3 credential file is readable by group or others; chmod 600 it"
            );
        }
    }
}

/// The S3 source. Cheap to share; counts the requests it makes.
pub struct S3Source {
    cfg: S3Settings,
    bucket: Bucket,
    client: reqwest::Client,
    requests: AtomicU64,
}

impl S3Source {
    pub fn new(cfg: S3Settings) -> Result<S3Source, S3Error> {
        let bucket = Bucket::new(
            cfg.endpoint.clone(),
            UrlStyle::Path,
            cfg.bucket.clone(),
            cfg.region.clone(),
        )
        .map_err(|e| S3Error::Config(e.to_string()))?;
        let client = http::client("S3", &cfg.tls, cfg.timeout)?;
        Ok(S3Source {
            cfg,
            bucket,
            client,
            requests: AtomicU64::new(0),
        })
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.cfg.bucket
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Lists the whole bucket, following continuation tokens. All or nothing: a page
    /// that fails after its retries fails the listing (a partial listing would make
    /// the missing objects look deleted).
    ///
    /// A page that names its token before its objects (AWS S3 and recent Ceph RGW
    /// releases do) has the next page asked for while its objects are read: at 20,000
    /// objects that reading overlaps the server's work on the next page instead of
    /// adding to it. A page that names it after (moto, older RGW releases) is read
    /// whole first. What the whole page says decides; a next page asked for on a
    /// token the page then overrules is dropped unread.
    pub async fn list_all(&self) -> Result<Vec<S3Object>, S3Error> {
        let creds = read_credentials(&self.cfg.credential_file)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut body = self.list_page(&creds, None).await?;
        for page in 1..=MAX_PAGES {
            let parse_error = |detail| S3Error::Parse { page, detail };
            let (next, guess, prefetched) = {
                let text = String::from_utf8_lossy(&body);
                let mut reader = listing::Page::new(&text);
                let guess = reader
                    .head()
                    .map_err(parse_error)?
                    .filter(|g| token.as_deref() != Some(g.as_str()));
                match &guess {
                    Some(g) => {
                        // biased (tokio 1.46): the request is on its way before
                        // the page is read.
                        let (fetched, next) = tokio::join!(
                            biased;
                            self.list_page(&creds, Some(g)),
                            async { reader.rest(&mut out) },
                        );
                        (next, guess, Some(fetched))
                    }
                    None => (reader.rest(&mut out), None, None),
                }
            };
            match next.map_err(parse_error)? {
                Some(next) if token.as_deref() == Some(next.as_str()) => {
                    return Err(S3Error::Parse {
                        page,
                        detail: "server returned the same continuation token again".into(),
                    })
                }
                Some(next) => {
                    body = match prefetched {
                        Some(fetched) if guess.as_deref() == Some(next.as_str()) => fetched?,
                        _ => self.list_page(&creds, Some(&next)).await?,
                    };
                    token = Some(next);
                }
                None => {
                    tracing::debug!(objects = out.len(), pages = page, "S3 listing complete");
                    // Held while the scan judges: not in a vector grown up to twice its size.
                    out.shrink_to_fit();
                    return Ok(out);
                }
            }
        }
        Err(S3Error::TooManyPages(MAX_PAGES))
    }

    /// One listing page: the first without a token.
    async fn list_page(&self, creds: &Credentials, token: Option<&str>) -> Result<Bytes, S3Error> {
        let mut action = ListObjectsV2::new(&self.bucket, Some(creds));
        if let Some(t) = token {
            action.with_continuation_token(t);
        }
        self.send("ListObjectsV2", None, LIST_PAGE_CAP, || {
            action.sign(PRESIGN_FOR)
        })
        .await
    }

    /// Downloads one object of at most `cap` bytes. A missing object is
    /// [`S3Error::NotFound`].
    pub async fn get_object(&self, key: &str, cap: usize) -> Result<Bytes, S3Error> {
        let creds = read_credentials(&self.cfg.credential_file)?;
        let action = self.bucket.get_object(Some(&creds), key);
        self.send("GetObject", Some(key), cap, || action.sign(PRESIGN_FOR))
            .await
    }

    /// Sends one signed GET with retries on 5xx, 429 and transport trouble.
    async fn send(
        &self,
        op: &'static str,
        key: Option<&str>,
        cap: usize,
        sign: impl Fn() -> Url,
    ) -> Result<Bytes, S3Error> {
        // Signed again for each attempt: a presigned URL is valid for minutes only.
        let sign = &sign;
        retry(
            self.cfg.retry,
            &format!("S3 {op}"),
            retryable,
            move |_| async move {
                let url = sign();
                let shown = http::redact_url(&url);
                self.requests.fetch_add(1, Ordering::Relaxed);
                self.send_once(op, key, cap, url, &shown).await
            },
        )
        .await
    }

    async fn send_once(
        &self,
        op: &'static str,
        key: Option<&str>,
        cap: usize,
        url: Url,
        shown: &str,
    ) -> Result<Bytes, S3Error> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| S3Error::Transport {
                op,
                url: shown.to_string(),
                detail: transport_detail(e),
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            if let Some(key) = key {
                return Err(S3Error::NotFound { key: key.into() });
            }
        }
        if !status.is_success() {
            let body = http::read_capped(resp, 64 * 1024).await.unwrap_or_default();
            return Err(S3Error::Status {
                op,
                url: shown.to_string(),
                status: status.as_u16(),
                detail: s3_error_detail(&body),
            });
        }
        http::read_capped(resp, cap)
            .await
            .map_err(|source| S3Error::Body {
                op,
                url: shown.to_string(),
                source,
            })
    }
}

fn transport_detail(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let chain = http::request_error(e);
    if timeout {
        format!("timed out ({chain})")
    } else {
        chain
    }
}

fn retryable(e: &S3Error) -> bool {
    match e {
        S3Error::Status { status, .. } => {
            reqwest::StatusCode::from_u16(*status).is_ok_and(http::retryable_status)
        }
        S3Error::Transport { .. } => true,
        S3Error::Body { source, .. } => source.is_timeout(),
        _ => false,
    }
}

/// ` (Code: Message)` out of an S3 XML error document, without an XML parser.
fn s3_error_detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let tag = |name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&close)? + start;
        Some(text[start..end].chars().take(200).collect())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(&str, &str), CredentialError> {
        parse_credentials(text, Path::new("/etc/creds"))
    }

    #[test]
    fn credentials_tolerate_line_endings() {
        assert_eq!(parse("AK:SK"), Ok(("AK", "SK")));
        assert_eq!(parse("AK:SK\n"), Ok(("AK", "SK")));
        assert_eq!(parse("AK:SK\r\n"), Ok(("AK", "SK")));
    }

    #[test]
    fn credential_errors_name_the_file_not_the_secret() {
        for (text, want) in [
            ("", "is empty"),
            ("\n", "is empty"),
            ("AKs3kr1t", "no ':'"),
            ("AK:s3kr1t:x", "2 ':'"),
            ("AK:", "empty access key or secret"),
            (":s3kr1t", "empty access key or secret"),
            ("AK:s3kr1t\nmore", "more than one line"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("/etc/creds"), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("s3kr1t"), "secret leaked: {e}");
        }
    }

    #[test]
    fn error_detail_from_xml() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>bad sig</Message></Error>";
        assert_eq!(s3_error_detail(body), " (SignatureDoesNotMatch: bad sig)");
        assert_eq!(s3_error_detail(b"oops"), "");
    }
}
