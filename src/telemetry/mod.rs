//! What operators see: logs, Prometheus metrics (HTTP and a node-exporter
//! textfile), and the HTTP endpoints `/metrics`, `/healthz`, `/status`.

pub mod http;
pub mod logging;
pub mod lun_stats;
pub mod metrics;
pub mod textfile;

pub use logging::{fatal, init_logging};

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from (`build.rs`), or `unknown`.
pub const REVISION: &str = env!("SBPS_MARSHAL_REVISION");
/// `--version` and the start-up line: the version and the revision.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("SBPS_MARSHAL_REVISION"),
    ")"
);
