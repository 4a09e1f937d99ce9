//! The runner: `sbps-marshal run`, the daemon, and its step, [`Agent::scan_and_publish`],
//! which `scan --once` takes too. A scan every SCAN_FREQUENCY seconds, at once on
//! SIGHUP; SIGTERM/SIGINT let the running operation finish, skip the rest, persist
//! and exit 0. Scans never overlap. systemd hears READY, STATUS and WATCHDOG.
//!
//! The reconciler ([`Agent::reconcile`]) only decides and acts; the runner brackets
//! each pass with `START SCAN` … `END SCAN` (runbooks and the journal tests grep
//! them) and hands its report to the log lines, the metrics, the status document
//! and this node's status in the Kubernetes API, as kube-runtime's controller keeps
//! the reconciler apart from the runner that logs and counts.
//!
//! The watchdog is pinged from the loop's progress, not from a timer alone: at the end
//! of every scan, and on the timer only while no step is past its deadline (between
//! scans, or in a scan whose current step still has time; see [`crate::report::progress`]). A
//! step stuck past its deadline stops the pings, so systemd restarts the agent.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use super::{Agent, Mode, Reconciled};
use crate::fleet::NodeStatus;
use crate::plan;
use crate::report::progress::Progress;
use crate::report::status::Status;
use crate::report::ScanReport;

/// Runs until SIGTERM/SIGINT.
pub(crate) async fn run(mut agent: Agent) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    if let Some(addr) = agent.settings.metrics_listen.clone() {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on METRICS_LISTEN {addr}"))?;
        tracing::info!(%addr, "serving /metrics, /healthz, /status");
        let (m, s) = (agent.metrics.clone(), agent.status.clone());
        let p = agent.progress.clone();
        let stale = agent.settings.scan_frequency.as_secs() * 3 + 60;
        tokio::spawn(async move {
            if let Err(e) = crate::telemetry::http::serve(listener, m, s, stale, p).await {
                tracing::error!("metrics endpoint stopped: {e}");
            }
        });
    }

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = watchdog_period();
    let mut dog = Watchdog::new(agent.progress.clone());
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
            let scan = agent.scan_and_publish();
            tokio::pin!(scan);
            loop {
                tokio::select! {
                    r = &mut scan => break r,
                    _ = term.recv() => { tracing::info!("SIGTERM: finishing the running operation"); stop.store(true, Ordering::SeqCst); stopping = true; }
                    _ = int.recv() => { tracing::info!("SIGINT: finishing the running operation"); stop.store(true, Ordering::SeqCst); stopping = true; }
                    _ = hup.recv() => { rescan = true; }
                    _ = tick(watchdog) => dog.tick(),
                }
            }
        };
        let summary = match agent.progress.stuck() {
            Some(stuck) => format!("{stuck}; no longer pinging the watchdog"),
            None => format!(
                "last scan: {} projected, {} changes, converged={}",
                report.desired.projections.len(),
                report.outcomes.len(),
                report.converged
            ),
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&summary)]);
        dog.tick();
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
                _ = tick(watchdog) => dog.tick(),
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopped");
    Ok(())
}

impl Agent {
    /// The runner's step: one applying scan, shown. What the daemon's loop runs every
    /// period and `scan --once` runs once, so a test that calls it drives exactly the
    /// daemon's path. A pass that could not run (an LIO job an earlier one left behind
    /// still runs) is bracketed in the log but not published: the metrics and the
    /// status keep the last pass that ran.
    pub async fn scan_and_publish(&mut self) -> ScanReport {
        tracing::info!("START SCAN");
        let report = match self.pass(Mode::Apply).await {
            Reconciled::Ran(report) => {
                self.publish(&report).await;
                report
            }
            Reconciled::Waiting(report) => report,
        };
        tracing::info!("END SCAN");
        self.progress.idle();
        report
    }

    /// Hands a scan's report to everything that shows it: the log lines, the metrics,
    /// the status document, and this node's status in the Kubernetes API. The
    /// reconciler decided and acted; this only says what it did.
    async fn publish(&mut self, report: &ScanReport) {
        crate::report::log::log(report);
        self.metrics.record_scan(report);
        let st = Status::build(report, &self.ledger, &self.settings);
        if let Ok(mut slot) = self.status.write() {
            *slot = Some(st);
        }
        if let Some(m) = &mut self.mirror {
            let status = NodeStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                scan_frequency: self.settings.scan_frequency.as_secs(),
                labelled: report.labelled,
                tpg_enabled: report.tpg_enabled(),
                converged: report.converged,
                last_converged: self.last_converged,
                started: self.started_at,
                content_changed: report
                    .plan
                    .iter()
                    .flat_map(|p| &p.warnings)
                    .filter_map(|w| match w {
                        plan::Warning::ContentChanged { serial, now, .. } => {
                            Some((serial.clone(), now.clone()))
                        }
                        _ => None,
                    })
                    .collect(),
            };
            m.after_scan(&self.ledger, status).await;
        }
    }
}

/// Pings systemd's watchdog while the agent makes progress.
struct Watchdog {
    progress: Arc<Progress>,
    /// The stuck step was reported (once per episode).
    told: bool,
}

impl Watchdog {
    fn new(progress: Arc<Progress>) -> Watchdog {
        Watchdog {
            progress,
            told: false,
        }
    }

    /// Pings, unless a step is past its deadline: then says so (log and STATUS, once)
    /// and lets systemd's watchdog run out.
    fn tick(&mut self) {
        match self.progress.stuck() {
            None => {
                if self.told {
                    tracing::warn!(
                        "no step is past its deadline any more; pinging the watchdog again"
                    );
                    self.told = false;
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Some(stuck) if !self.told => {
                let why =
                    format!("{stuck}; no longer pinging the watchdog: systemd restarts the agent");
                tracing::error!("{why}");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&why)]);
                self.told = true;
            }
            Some(_) => {}
        }
    }
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
