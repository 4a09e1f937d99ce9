//! What operators see: logs, Prometheus metrics, and the HTTP endpoints
//! `/metrics`, `/healthz`, `/status`.

pub mod http;
pub mod metrics;

use std::io::IsTerminal;

/// Sets up logging: info by default, debug with `-d`, warnings only with `-q`;
/// `RUST_LOG` overrides. No colour when stderr is not a terminal (journald).
pub fn init_logging(debug: bool, quiet: bool) {
    let level = if debug {
        "debug"
    } else if quiet {
        "warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("sbps_marshal={level},warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
