//! What operators see: logs, Prometheus metrics (HTTP and a node-exporter
//! textfile), and the HTTP endpoints `/metrics`, `/healthz`, `/status`.

#![warn(unreachable_pub)]

pub(crate) mod http;
pub(crate) mod logging;
pub(crate) mod lun_stats;
pub mod metrics;
pub(crate) mod textfile;

pub(crate) use logging::{fatal, init_logging};

/// The crate version.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from (`build.rs`), or `unknown`.
pub const REVISION: &str = env!("SBPS_MARSHAL_REVISION");
/// `--version` and the start-up line: the version and the revision.
pub(crate) const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("SBPS_MARSHAL_REVISION"),
    ")"
);
