//! `/metrics` (Prometheus text), `/healthz` (alive, with the age of the last scan and
//! the step a scan is in; 503 naming the step stuck past its deadline, or when scans
//! stopped), `/status` (the status document as JSON), on METRICS_LISTEN (loopback by
//! default).

use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;
use crate::report::progress::Progress;
use crate::report::status::Status;

#[derive(Clone)]
struct Endpoints {
    metrics: Arc<Metrics>,
    status: Arc<RwLock<Option<Status>>>,
    /// Scans older than this make `/healthz` answer 503.
    stale_after_secs: u64,
    progress: Arc<Progress>,
}

/// Serves the endpoints until the listener fails.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    status: Arc<RwLock<Option<Status>>>,
    stale_after_secs: u64,
    progress: Arc<Progress>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/status", get(status_handler))
        .with_state(Endpoints {
            metrics,
            status,
            stale_after_secs,
            progress,
        });
    axum::serve(listener, app).await
}

async fn metrics_handler(State(s): State<Endpoints>) -> Response {
    let body = tokio::task::spawn_blocking(move || s.metrics.render())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz(State(s): State<Endpoints>) -> Response {
    if let Some(stuck) = s.progress.stuck() {
        let body = format!("{stuck}; the watchdog is no longer pinged\n");
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    let step = s.progress.current().map_or_else(String::new, |st| {
        format!(
            "; scanning: {} for {} s",
            st.what,
            st.since.elapsed().as_secs()
        )
    });
    let last = s
        .status
        .read()
        .ok()
        .and_then(|g| g.as_ref().map(|st| st.scanned_at));
    let now = crate::clock::unix_now();
    match last {
        None => (
            StatusCode::OK,
            format!("alive; no scan finished yet{step}\n"),
        )
            .into_response(),
        Some(t) => {
            let age = now.saturating_sub(t);
            let code = if age > s.stale_after_secs {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (code, format!("alive; last scan {age} s ago{step}\n")).into_response()
        }
    }
}

async fn status_handler(State(s): State<Endpoints>) -> Response {
    let doc = s.status.read().ok().and_then(|g| g.clone());
    match doc {
        Some(d) => axum::Json(d).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no scan finished yet\n").into_response(),
    }
}
