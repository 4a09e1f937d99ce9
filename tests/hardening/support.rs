//! What the hardening suite stands on: the test kit's S3 and IMS doubles as this suite
//! uses them and sources wired to them, the LIO rig, the log capture, and the doubles
//! served on the loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sbps_marshal::desired::Settings;
use sbps_marshal::http::TlsOptions;
use sbps_marshal::inventory::gather::{Sources, SourcesSettings};
use sbps_marshal::inventory::ims::ImsSettings;
use sbps_marshal::inventory::retry::RetryPolicy;
use sbps_marshal::inventory::s3::S3Settings;
use sbps_marshal::inventory::spire::{StaticToken, Token};
use sbps_testkit::ims::{Answer, Ims};
use url::Url;

pub use sbps_testkit::capture::Capture;
pub use sbps_testkit::moto::free_port;
pub use sbps_testkit::rig::{desired, DynFs, Rig, IQN, NOW};
pub use sbps_testkit::s3::{Object, BUCKET, S3};
pub use sbps_testkit::serve::Served;

/// Recognisable secrets: no log line or error may ever carry them.
pub const ACCESS: &str = "AKIDHARDENING";
pub const S3_SECRET: &str = "S3SECRET-hardening-7f3a9c2e11";
pub const JWT_SECRET: &str =
    "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJoYXJkZW5pbmcifQ.SIGNATURE-hardening-b41d";

/// The IMS double answering `body` as it is (status 200, JSON content type): the
/// corpus hands it records, broken JSON and pages of every size.
pub fn ims_double(body: String) -> Arc<Ims> {
    let ims = Ims::default();
    ims.set_answer(Answer::raw("application/json", body));
    Arc::new(ims)
}

/// [`ims_double`]'s routes, for a test that need not change it while served.
pub fn ims_router(body: String) -> Router {
    ims_double(body).router()
}

/// An s3fs-style credential file (0600).
pub fn cred_file(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("s3.passwd");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Sources against the two doubles, with a static token, no node label.
pub fn sources(s3: Url, ims: Url, creds: PathBuf, tls: TlsOptions, timeout: Duration) -> Sources {
    let mut s3c = S3Settings::new(s3, BUCKET, creds);
    s3c.tls = tls.clone();
    s3c.timeout = timeout;
    s3c.retry = RetryPolicy::once();
    let mut imsc = ImsSettings::new(ims.join("apis/ims/v3/images").unwrap());
    imsc.tls = tls;
    imsc.timeout = timeout;
    let cfg = SourcesSettings {
        node: None,
        ..SourcesSettings::new(s3c, imsc)
    };
    Sources::with_tokens(cfg, Arc::new(StaticToken(Token::new(JWT_SECRET.into())))).unwrap()
}

pub fn settings(mount: &Path) -> Settings {
    Settings {
        bucket: BUCKET.into(),
        mount: mount.to_path_buf(),
        ims_tagging: true,
        backend: Default::default(),
    }
}

/// The agent's settings: defaults plus `SBPS_MARSHAL_<key>` = value for each pair,
/// as the binary would read them (no settings file).
pub fn config_settings(env: &[(&str, String)]) -> sbps_marshal::config::Settings {
    use sbps_marshal::config::{Layers, Settings};
    let env = env
        .iter()
        .map(|(k, v)| (format!("SBPS_MARSHAL_{k}"), v.clone()));
    let l = Layers::load(Some(Path::new("/dev/null")), env, &[]).unwrap();
    Settings::from_layers(&l, "testhost").unwrap()
}
