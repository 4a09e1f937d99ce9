//! `sbps-marshal run`: the daemon. A scan every SCAN_FREQUENCY seconds, at once on
//! SIGHUP; SIGTERM/SIGINT let the running operation finish, skip the rest, persist
//! and exit 0. Scans never overlap. systemd hears READY, STATUS and WATCHDOG.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use super::{Agent, Mode};

/// Runs until SIGTERM/SIGINT.
pub async fn run(mut agent: Agent) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    if let Some(addr) = agent.settings.metrics_listen.clone() {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on METRICS_LISTEN {addr}"))?;
        tracing::info!(%addr, "serving /metrics, /healthz, /status");
        let (m, s) = (agent.metrics.clone(), agent.status.clone());
        let stale = agent.settings.scan_frequency.as_secs() * 3 + 60;
        tokio::spawn(async move {
            if let Err(e) = crate::telemetry::http::serve(listener, m, s, stale).await {
                tracing::error!("metrics endpoint stopped: {e}");
            }
        });
    }

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = watchdog_period();
    let period = agent.settings.scan_frequency;
    tracing::info!(
        period_s = period.as_secs(),
        backend = %agent.settings.lio_backend,
        iqn = %agent.settings.target_iqn,
        "sbps-marshal started"
    );

    let mut stopping = false;
    while !stopping {
        let stop = agent.stop.clone();
        let mut rescan = false;
        let report = {
            let scan = agent.scan(Mode::Apply);
            tokio::pin!(scan);
            loop {
                tokio::select! {
                    r = &mut scan => break r,
                    _ = term.recv() => { tracing::info!("SIGTERM: finishing the running operation"); stop.store(true, Ordering::SeqCst); stopping = true; }
                    _ = int.recv() => { tracing::info!("SIGINT: finishing the running operation"); stop.store(true, Ordering::SeqCst); stopping = true; }
                    _ = hup.recv() => { rescan = true; }
                    _ = tick(watchdog) => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                }
            }
        };
        let summary = format!(
            "last scan: {} projected, {} changes, converged={}",
            report.desired.projections.len(),
            report.outcomes.len(),
            report.converged
        );
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Status(&summary),
            sd_notify::NotifyState::Watchdog,
        ]);
        if stopping {
            break;
        }
        if rescan {
            tracing::info!("SIGHUP during the scan: scanning again now");
            continue;
        }
        let sleep = tokio::time::sleep(period);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = hup.recv() => { tracing::info!("SIGHUP: scanning now"); break; }
                _ = term.recv() => { stopping = true; break; }
                _ = int.recv() => { stopping = true; break; }
                _ = tick(watchdog) => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopped");
    Ok(())
}

/// Half the watchdog interval systemd asked for, if it asked.
fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

async fn tick(period: Option<Duration>) {
    match period {
        Some(p) => tokio::time::sleep(p).await,
        None => std::future::pending().await,
    }
}
