//! The agent: one scan is gather → desired → observe → plan → apply → persist →
//! report. The reconciler ([`Agent::reconcile`]) decides and acts and returns the
//! report; the runner (`run.rs`: [`Agent::scan_and_publish`] and the daemon's loop)
//! shows it (log, metrics, status) and repeats the scan
//! every SCAN_FREQUENCY, on SIGHUP, until SIGTERM.
//!
//! Level-triggered: every scan starts from what the kernel holds, so a crash, a
//! half-applied plan or an administrator's change is simply the next scan's input.

#![warn(unreachable_pub)]

pub mod fingerprint;
pub(crate) mod lock;
pub(crate) mod mirror;
pub(crate) mod run;
pub mod service;
mod stuck;
mod watched;
pub mod wiring;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::clock::unix_now;
use crate::config::Settings;
use crate::desired::{self, Desired};
use crate::fleet::FleetView;
use crate::inventory::gather::{GatherStats, Gathered, Sources};
use crate::inventory::Inventory;
use crate::ledger::remote::LedgerMirror;
use crate::ledger::{Ledger, Loaded};
use crate::lio::{self, Actual, LioError, Target};
use crate::plan::{self, Plan};
use crate::report::progress::Progress;
use crate::report::status::Status;
use crate::report::{Failure, FailureKind, OpOutcome, ScanReport, Timings};
use crate::telemetry::metrics::Metrics;
use fingerprint::Fingerprint;
use service::ServiceManager;
use watched::Watched;

/// Apply the plan, or only compute it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    DryRun,
}

/// What a reconcile pass hands its runner.
enum Reconciled {
    /// The pass ran (or failed along the way): its report is to be shown.
    Ran(ScanReport),
    /// An LIO job an earlier pass left behind still runs, so this pass looked at
    /// nothing and did nothing. Its report says why, but is not shown as a scan: the
    /// metrics, the status document and the node's status keep the last pass that ran.
    Waiting(ScanReport),
}

impl Reconciled {
    fn into_report(self) -> ScanReport {
        match self {
            Reconciled::Ran(r) | Reconciled::Waiting(r) => r,
        }
    }
}

/// The long-lived agent state.
pub struct Agent {
    pub settings: Settings,
    sources: Sources,
    target: Arc<dyn Target>,
    service: Box<dyn ServiceManager>,
    ledger: Ledger,
    pub metrics: Arc<Metrics>,
    pub status: Arc<RwLock<Option<Status>>>,
    /// Set on SIGTERM: ops not yet started are skipped.
    pub(crate) stop: Arc<AtomicBool>,
    restarted_target: bool,
    /// Operator override for the deletion brake, for the next scan only.
    pub release_brake: bool,
    /// What saveconfig.json was last written from (see [`Job::saved_state`]).
    saved_state: Option<Fingerprint>,
    /// The ledger kept in the Kubernetes API (None: REMOTE_LEDGER off).
    mirror: Option<mirror::Mirror>,
    /// No local ledger was found at start (new disk, rebuild, corrupt file).
    local_missing: bool,
    /// When a scan last converged (seconds since the epoch).
    last_converged: Option<u64>,
    /// When the agent started (seconds since the epoch).
    started_at: u64,
    /// Where the scan is, for the watchdog and `/healthz`.
    pub progress: Arc<Progress>,
    /// An LIO job a scan stopped waiting for (past its deadlines): no other job runs
    /// until it returns.
    pending: Option<stuck::Pending>,
}

impl Agent {
    /// Builds the agent from settings with the real adapters.
    pub(crate) fn new(
        settings: Settings,
        service: Box<dyn ServiceManager>,
    ) -> anyhow::Result<Agent> {
        let sources = wiring::sources(&settings)?;
        let target = wiring::target(&settings);
        let mirror = wiring::mirror(&settings);
        let agent = Agent::with_parts(settings, sources, target, service)?;
        Ok(match mirror {
            Some(m) => agent.with_mirror(m),
            None => agent,
        })
    }

    /// Builds the agent from given adapters (tests, other backends).
    pub fn with_parts(
        settings: Settings,
        sources: Sources,
        target: Arc<dyn Target>,
        service: Box<dyn ServiceManager>,
    ) -> anyhow::Result<Agent> {
        let loaded = crate::ledger::load(&settings.ledger_file(), unix_now())?;
        let local_missing = !matches!(loaded, Loaded::Existing(_));
        let ledger = match loaded {
            Loaded::Fresh(l) | Loaded::Existing(l) => l,
            Loaded::Recovered {
                ledger,
                aside,
                detail,
            } => {
                tracing::error!(
                    aside = %aside.display(),
                    "ledger {} was corrupt ({detail}); moved aside, starting from the kernel's state",
                    settings.ledger_file().display()
                );
                ledger
            }
        };
        Ok(Agent {
            metrics: Arc::new(Metrics::new(&settings)),
            status: Arc::new(RwLock::new(None)),
            stop: Arc::new(AtomicBool::new(false)),
            settings,
            sources,
            target,
            service,
            ledger,
            restarted_target: false,
            release_brake: false,
            saved_state: None,
            mirror: None,
            local_missing,
            last_converged: None,
            started_at: unix_now(),
            progress: Arc::default(),
            pending: None,
        })
    }

    /// Keeps the ledger in the Kubernetes API too (REMOTE_LEDGER).
    pub fn with_mirror(mut self, remote: Arc<dyn LedgerMirror>) -> Agent {
        self.mirror = Some(mirror::Mirror::new(remote, &self.settings.node_name));
        self
    }

    /// The ledger as it stands.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The reconciler: one pass of gather → desired → observe → plan → apply →
    /// persist, returned as a report and shown nowhere. The dry-run commands (`plan`,
    /// `status`, `explain`) print the report themselves; an applying scan is shown by
    /// its runner, [`Agent::scan_and_publish`] (the daemon's step and `scan --once`),
    /// so what a scan does and how it is reported can be read and tested apart.
    /// Never panics and never returns early without a report: every failure is in the
    /// report, and a failure before planning changes nothing.
    pub async fn reconcile(&mut self, mode: Mode) -> ScanReport {
        let report = self.pass(mode).await.into_report();
        self.progress.idle();
        report
    }

    /// [`Agent::reconcile`], telling its runner whether the pass ran. The scan's
    /// progress is left for the runner to clear once the report is shown.
    async fn pass(&mut self, mode: Mode) -> Reconciled {
        let t0 = Instant::now();
        let now = unix_now();
        if let Some(report) = self.wait_for_pending(now).await {
            return Reconciled::Waiting(report);
        }
        let dset = wiring::desired_settings(&self.settings);
        let mut timings = Timings::default();

        // Every request has its own deadline; this one bounds their sum (thousands of
        // manifests behind a slow gateway), so the scan loop keeps its period.
        let t = Instant::now();
        let deadline = self.settings.gather_timeout;
        let inventory_deadline = deadline + crate::report::progress::ENFORCED_GRACE;
        self.progress.enter("inventory", inventory_deadline);
        let gathered = match tokio::time::timeout(deadline, self.sources.gather(&dset)).await {
            Ok(g) => g,
            Err(_) => {
                let why = format!(
                    "the inventory did not complete within GATHER_TIMEOUT ({}s)",
                    deadline.as_secs()
                );
                tracing::warn!("{why}; nothing is changed this scan");
                let stats = GatherStats {
                    total: t.elapsed(),
                    ..GatherStats::default()
                };
                Gathered::unfinished(&why, stats)
            }
        };
        timings.gather = t.elapsed().saturating_sub(gathered.stats.judging);
        let (labelled, label_error) = match &gathered.node_labelled {
            None => (Some(true), None),
            Some(Ok(b)) => (Some(*b), None),
            Some(Err(e)) => (None, Some(e.clone())),
        };

        let t = Instant::now();
        if self.release_brake {
            tracing::warn!("released by the operator for this scan: the deletion brake holds nothing, and the IMS answer is taken as it stands");
        }
        // Judged once, while gathering (the mount is asked only about what it needs).
        // What the sources said (the bucket listing, every IMS record, the manifests)
        // is dropped as soon as it is judged: not held while the judgement is completed,
        // nor while LIO is observed, changed and saved.
        let Gathered {
            inventory,
            stats,
            judging,
            ..
        } = gathered;
        let mut judged = match judging {
            Some(j) => {
                let Inventory {
                    s3,
                    ims,
                    ims_unreadable,
                    manifests,
                    mount,
                } = inventory;
                drop((s3, ims, ims_unreadable, manifests));
                j.finish(&mount)
            }
            None => desired::desired(&inventory, &dset),
        };
        desired::protect_served(&mut judged, &self.ledger, self.release_brake);
        // Shared with the blocking job, not copied: thousands of projections.
        let desired = Arc::new(judged);
        timings.desired = t.elapsed() + stats.judging;

        // A systemctl that does not return in time may be a target.service restore
        // still running: LIO is not touched this scan.
        let service_failure = match mode == Mode::Apply && labelled == Some(true) {
            true => self.ensure_target_service().await.err(),
            false => None,
        };

        // The ledger in the Kubernetes API: restored, caught up, and the fleet's numbers.
        let prep = match &mut self.mirror {
            Some(m) => {
                let before = self.ledger.generation;
                let prep = m
                    .prepare(
                        &mut self.ledger,
                        self.local_missing,
                        &desired,
                        mode == Mode::Apply,
                    )
                    .await;
                let restored = self.ledger.generation != before;
                if mode == Mode::Apply && m.has_read() && (restored || self.local_missing) {
                    // Restored (or first written) from the API: the local file follows at once.
                    match crate::ledger::save(&self.ledger, &self.settings.ledger_file()) {
                        Ok(()) => self.local_missing = false,
                        Err(e) => tracing::error!("{e}"),
                    }
                }
                prep
            }
            None => mirror::Prepared::default(),
        };
        let mut policy = wiring::policy(&self.settings, labelled, self.release_brake);
        policy.numbers_frozen = prep.frozen.clone();
        if let Some(why) = &prep.frozen {
            tracing::warn!("LUN numbers are frozen this scan: {why}");
        }
        let remote = match (&self.mirror, &prep.frozen, mode) {
            (Some(m), None, Mode::Apply) => Some((m.remote(), tokio::runtime::Handle::current())),
            _ => None,
        };
        let job = Job {
            fleet: prep.fleet,
            remote,
            target: self.target.clone(),
            desired: Arc::clone(&desired),
            ledger: self.ledger.clone(),
            policy,
            now,
            mode,
            parallelism: self.settings.apply_parallelism,
            ledger_file: self.settings.ledger_file(),
            save_file: self.settings.lio_save_file.clone(),
            stop: self.stop.clone(),
            // Handed over, not copied: the job hands back what the file now mirrors.
            saved_state: match mode {
                Mode::Apply => self.saved_state.take(),
                Mode::DryRun => None,
            },
            progress: self.progress.clone(),
            deadlines: self.deadlines(),
        };
        let mut done = match service_failure {
            Some(why) => JobDone::failed(FailureKind::TargetService.because(why)),
            None => self.run_job(job, mode).await,
        };
        timings.observe = done.observe;
        timings.plan = done.plan_time;
        timings.apply = done.apply;
        timings.persist = done.persist;
        if let Some(l) = done.ledger.take() {
            self.ledger = l;
        }
        if let (Some(m), Some(g)) = (&mut self.mirror, done.remote_written) {
            m.written(g);
        }
        if mode == Mode::Apply {
            self.saved_state = done.saved_state.take();
        }
        // The job is over and dropped its handle: this unwraps without a copy.
        let desired = Arc::try_unwrap(desired).unwrap_or_else(|d| (*d).clone());
        timings.total = t0.elapsed();
        let mut report = ScanReport {
            started: now,
            desired,
            actual: done.actual,
            plan: done.plan,
            outcomes: done.outcomes,
            failure: done.failure,
            labelled,
            label_error,
            stats,
            timings,
            converged: false,
            saveconfig_written: done.saveconfig_written,
            ledger_written: done.ledger_written,
            numbers_frozen: prep.frozen.clone().or(done.numbers_frozen.take()),
        };
        // The plan exists exactly when the job got to planning; without it nothing is known.
        report.converged = report.plan.is_some() && report.problems().is_empty();
        if mode == Mode::Apply {
            self.release_brake = false;
            if report.converged {
                self.last_converged = Some(now);
                let changed = report.ledger_written || !report.outcomes.is_empty();
                let deadline = self.settings.lio_timeout;
                self.progress
                    .enter("record the converged scan in the ledger", deadline);
                report.ledger_written |= self.record_convergence(now, changed).await;
                self.maybe_restart_target_once().await;
            }
        }
        Reconciled::Ran(report)
    }

    /// Starts the target unit when the node is labelled and it is not active (the
    /// original did this with systemctl every scan). Each systemctl call has
    /// COMMAND_TIMEOUT: past it the call is killed and this is the scan's failure (a
    /// `start` that hangs may be a restore still writing LIO). Other errors are logged,
    /// as the original did.
    async fn ensure_target_service(&self) -> Result<(), String> {
        let Some(unit) = &self.settings.target_service else {
            return Ok(());
        };
        let limit = self.settings.command_timeout;
        let late = |verb: &str| {
            format!(
                "target service: `systemctl {verb} {unit}` did not return within {} s (COMMAND_TIMEOUT); killed, LIO is not touched this scan",
                limit.as_secs()
            )
        };
        self.progress.enter(
            format!("target service (systemctl is-active {unit})"),
            limit + crate::report::progress::ENFORCED_GRACE,
        );
        let active = tokio::time::timeout(limit, self.service.is_active(unit)).await;
        match active.map_err(|_| late("is-active"))? {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(unit, "not active; starting it");
                self.progress.enter(
                    format!("target service (systemctl start {unit})"),
                    limit + crate::report::progress::ENFORCED_GRACE,
                );
                let started = tokio::time::timeout(limit, self.service.start(unit)).await;
                if let Err(e) = started.map_err(|_| late("start"))? {
                    tracing::error!(unit, "cannot start: {e}");
                }
            }
            Err(e) => tracing::warn!(unit, "cannot tell whether it is active: {e}"),
        }
        Ok(())
    }

    /// The deadlines of this agent's LIO jobs. With the targetcli backend every LIO step
    /// is a targetcli run, killed at COMMAND_TIMEOUT: the step may take that long.
    fn deadlines(&self) -> Deadlines {
        let s = &self.settings;
        let lio = match s.lio_backend {
            crate::paths::Backend::Targetcli => s
                .lio_timeout
                .max(s.command_timeout + crate::report::progress::ENFORCED_GRACE),
            crate::paths::Backend::Configfs => s.lio_timeout,
        };
        Deadlines {
            lock: s.lock_timeout,
            lio,
        }
    }

    /// The ledger remembers that a scan converged: from then on it has a history of this
    /// target, and a later scan never takes it for an adoption (see
    /// [`plan::adoption_quarantine`]) even when it holds no record and no quarantine. It
    /// is written at once the first time, and after a scan that changed the target or the
    /// ledger; a steady scan writes no file, so on disk the time is that of the last
    /// converged scan that changed something.
    /// Returns whether it wrote the ledger.
    async fn record_convergence(&mut self, now: u64, changed: bool) -> bool {
        let first = self.ledger.last_converged.is_none();
        self.ledger.last_converged = Some(now);
        if !(first || changed) {
            return false;
        }
        let (ledger, file) = (self.ledger.clone(), self.settings.ledger_file());
        let saved = tokio::task::spawn_blocking(move || crate::ledger::save(&ledger, &file)).await;
        match saved {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => tracing::error!("cannot record the converged scan: {e}"),
            Err(e) => tracing::error!("cannot record the converged scan: {e}"),
        }
        false
    }

    /// RESTART_TARGET_AFTER_FIRST_SCAN: the original's one-time restart, kept as an option.
    async fn maybe_restart_target_once(&mut self) {
        if !self.settings.restart_target_after_first_scan || self.restarted_target {
            return;
        }
        self.restarted_target = true;
        let marker = self.settings.state_dir.join("state.json");
        let done = std::fs::read(&marker)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("initialized").and_then(|x| x.as_bool()))
            .unwrap_or(false);
        if done {
            return;
        }
        let Some(unit) = &self.settings.target_service else {
            return;
        };
        tracing::warn!(unit, "restarting once after the first scan (RESTART_TARGET_AFTER_FIRST_SCAN): every session drops");
        let limit = self.settings.command_timeout;
        self.progress.enter(
            format!("target service (systemctl restart {unit})"),
            limit + crate::report::progress::ENFORCED_GRACE,
        );
        match tokio::time::timeout(limit, self.service.restart(unit)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(unit, "restart failed: {e}");
                return;
            }
            Err(_) => {
                tracing::error!(
                    unit,
                    "restart did not return within {} s (COMMAND_TIMEOUT); killed",
                    limit.as_secs()
                );
                return;
            }
        }
        if let Err(e) = crate::atomic_file::write(&marker, b"{\"initialized\": true}\n") {
            tracing::error!(file = %marker.display(), "cannot record the restart: {e}");
        }
    }
}

/// The blocking part of a scan: everything that touches the kernel, under the
/// rtslib/targetcli locks: observe → plan → write-ahead ledger → apply → observe →
/// saveconfig.json. Public so crash-consistency tests drive exactly this sequence.
pub struct Job {
    pub target: Arc<dyn Target>,
    pub desired: Arc<Desired>,
    pub ledger: Ledger,
    pub policy: plan::Policy,
    pub now: u64,
    pub mode: Mode,
    pub parallelism: usize,
    pub ledger_file: std::path::PathBuf,
    pub save_file: std::path::PathBuf,
    pub stop: Arc<AtomicBool>,
    /// The state saveconfig.json was last written from (or found equal to) by this
    /// process. When nothing was applied and the kernel still shows exactly that, the
    /// file is known to be current and the full configfs dump is skipped: the most
    /// expensive part of a steady scan at thousands of LUNs.
    pub saved_state: Option<Fingerprint>,
    /// The other nodes' numbers, for new images.
    pub fleet: FleetView,
    /// Where the ledger is written ahead besides the local file (the Kubernetes API),
    /// and the runtime that talks to it.
    pub remote: Option<(Arc<dyn LedgerMirror>, tokio::runtime::Handle)>,
    /// Where the job is, each step with its deadline (see `report::progress`).
    pub progress: Arc<Progress>,
    pub deadlines: Deadlines,
}

/// The deadlines of a [`Job`]'s steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The wait for rtslib's lock files (LOCK_TIMEOUT; the wait gives up by itself).
    pub(crate) lock: std::time::Duration,
    /// Reading configfs, one operation, the ledger, saveconfig.json (LIO_TIMEOUT).
    pub(crate) lio: std::time::Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            lock: crate::lio::lock::DEFAULT_TIMEOUT,
            lio: Duration::from_secs(120),
        }
    }
}

/// What a [`Job`] did.
#[derive(Default)]
pub struct JobDone {
    pub actual: Option<Actual>,
    pub(crate) plan: Option<Plan>,
    pub outcomes: Vec<OpOutcome>,
    pub failure: Option<Failure>,
    /// The ledger now in force (written ahead), when the job got that far.
    pub ledger: Option<Ledger>,
    pub(crate) observe: Duration,
    pub(crate) plan_time: Duration,
    pub(crate) apply: Duration,
    pub(crate) persist: Duration,
    pub saveconfig_written: bool,
    pub ledger_written: bool,
    /// The state saveconfig.json now mirrors, when the job checked or wrote it.
    pub saved_state: Option<Fingerprint>,
    /// The generation written ahead to the Kubernetes API.
    pub(crate) remote_written: Option<u64>,
    /// The write ahead to the Kubernetes API failed: the plan was made again with
    /// numbers frozen, for this reason.
    pub(crate) numbers_frozen: Option<String>,
}

impl JobDone {
    fn failed(why: Failure) -> JobDone {
        JobDone {
            failure: Some(why),
            ..JobDone::default()
        }
    }
}

impl Job {
    /// Runs the job (blocking).
    pub fn run(self) -> JobDone {
        /// The job's place in the progress is cleared however it ends.
        struct Over<'a>(&'a Progress);
        impl Drop for Over<'_> {
            fn drop(&mut self) {
                self.0.job_done();
            }
        }
        let _over = Over(&self.progress);
        let (lio, progress) = (self.deadlines.lio, &self.progress);
        let mut done = JobDone::default();
        if self.mode == Mode::Apply {
            let deadline = self.deadlines.lock + crate::report::progress::ENFORCED_GRACE;
            progress.job_enter("LIO lock (targetcli.lock, rtslib_backstore.lock)", deadline);
        }
        let _guard = match (self.mode, self.target.lock()) {
            (Mode::DryRun, _) => None,
            (Mode::Apply, Ok(g)) => Some(g),
            (Mode::Apply, Err(e)) => {
                return JobDone::failed(
                    FailureKind::Lio.because(format!("cannot take the LIO locks: {e}")),
                )
            }
        };
        let t = Instant::now();
        progress.job_enter("observe LIO", lio);
        let actual = match self.target.observe() {
            Ok(a) => a,
            Err(e) => {
                return JobDone::failed(FailureKind::Lio.because(format!("cannot read LIO: {e}")))
            }
        };
        done.observe = t.elapsed();
        let t = Instant::now();
        progress.job_enter("plan", lio);
        let plan_with = |policy: &plan::Policy| {
            let fleet = &self.fleet;
            plan::plan_in_fleet(
                &self.desired,
                &actual,
                &self.ledger,
                policy,
                fleet,
                self.now,
            )
        };
        let mut p = plan_with(&self.policy);
        done.plan_time = t.elapsed();
        if self.mode == Mode::DryRun {
            done.actual = Some(actual);
            done.plan = Some(p);
            return done;
        }
        // Write-ahead: every number this plan takes, and the quarantine of every number it
        // frees, is durable (in the Kubernetes API, then on disk) before the kernel changes.
        let t = Instant::now();
        progress.job_enter("write the ledger", lio);
        let mut changed = p.ledger != self.ledger;
        if changed {
            p.ledger.generation = self.ledger.generation + 1;
            if let Some((remote, rt)) = &self.remote {
                match rt.block_on(remote.store(&p.ledger, None)) {
                    Ok(()) => done.remote_written = Some(p.ledger.generation),
                    Err(e) => {
                        let why =
                            format!("the ledger in the Kubernetes API cannot be written ({e})");
                        tracing::error!("{why}; LUN numbers are frozen this scan");
                        done.numbers_frozen = Some(why.clone());
                        let frozen = plan::Policy {
                            numbers_frozen: Some(why),
                            ..self.policy.clone()
                        };
                        p = plan_with(&frozen);
                        changed = p.ledger != self.ledger;
                        p.ledger.generation = self.ledger.generation + u64::from(changed);
                    }
                }
            }
        }
        if changed {
            if let Err(e) = crate::ledger::save(&p.ledger, &self.ledger_file) {
                done.failure =
                    Some(FailureKind::Persistence.because(format!("{e}; nothing applied")));
                done.actual = Some(actual);
                done.plan = Some(p);
                return done;
            }
            done.ledger_written = true;
        }
        done.ledger = Some(p.ledger.clone());
        done.persist = t.elapsed();

        let t = Instant::now();
        progress.job_enter("apply", lio);
        // Each operation is tracked with its own deadline, so a hung one is named.
        let watched = Watched {
            target: self.target.as_ref(),
            progress,
            deadline: lio,
        };
        let results = lio::apply_until(&watched, &p.ops, self.parallelism, &self.stop);
        done.apply = t.elapsed();

        let t = Instant::now();
        progress.job_enter("observe LIO after applying", lio);
        let after = if results.is_empty() {
            Ok(actual)
        } else {
            self.target.observe_after(actual, &results)
        };
        done.outcomes = results
            .into_iter()
            .map(|r| OpOutcome {
                op: r.op,
                error_kind: r.result.as_ref().err().map(LioError::kind),
                error: r.result.err().map(|e| e.to_string()),
                millis: r.elapsed.as_millis() as u64,
            })
            .collect();
        match after {
            Ok(a) => done.actual = Some(a),
            Err(e) => {
                done.failure =
                    Some(FailureKind::Lio.because(format!("cannot read LIO after applying: {e}")))
            }
        }
        // saveconfig.json mirrors the kernel; it is rewritten only when that changed.
        let now_state = done.actual.as_ref().map(Fingerprint::of);
        let unchanged = done.outcomes.is_empty()
            && now_state.is_some()
            && now_state == self.saved_state
            && self.save_file.exists();
        if unchanged {
            done.saved_state = self.saved_state;
        } else {
            progress.job_enter("write saveconfig.json", lio);
            match self.target.save_config(&self.save_file) {
                Ok(w) => {
                    done.saveconfig_written = w;
                    done.saved_state = now_state;
                }
                Err(e) => {
                    let msg = format!("cannot write {}: {e}", self.save_file.display());
                    done.failure
                        .get_or_insert(FailureKind::Persistence.because(msg));
                }
            }
        }
        done.persist += t.elapsed();
        done.plan = Some(p);
        done
    }
}
