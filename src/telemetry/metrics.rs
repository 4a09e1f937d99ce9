//! The Prometheus registry. Names CSM dashboards already use are kept:
//! `iscsi_rootfs_lun_cnt`, `iscsi_pe_lun_cnt`, and per-LUN `iscsi_read_mbytes`,
//! `iscsi_in_cmds` and `iscsi_read_rate` read from configfs statistics at encoding
//! time (what the separate CSM exporter read, see `telemetry::lun_stats`). Everything
//! else is `sbps_marshal_*`. The same registry is served on `/metrics` (OpenMetrics)
//! and written to the node-exporter textfile (Prometheus text 0.0.4).

use std::path::PathBuf;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::lun_stats::LunStats;
use crate::config::Settings;
use crate::desired::{Kind, Outcome};
use crate::lio::layout::Layout;
use crate::plan::{HoldReason, Warning};
use crate::report::ScanReport;

type Labels = Vec<(String, String)>;

/// All metrics of the agent.
pub struct Metrics {
    registry: Registry,
    scan_duration: Histogram,
    last_scan: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    converged: Gauge,
    projections: Family<Labels, Gauge>,
    rootfs_luns: Gauge,
    pe_luns: Gauge,
    skipped: Family<Labels, Gauge>,
    unknown: Family<Labels, Gauge>,
    source_errors: Family<Labels, Counter>,
    operations: Family<Labels, Counter>,
    operation_errors: Family<Labels, Counter>,
    scan_failures: Family<Labels, Counter>,
    held: Family<Labels, Gauge>,
    brake: Gauge,
    ims_guard: Gauge,
    tpg_enabled: Gauge,
    labelled: Gauge,
    content_changed: Gauge,
    requests: Family<Labels, Counter>,
    unmanaged: Gauge,
    quarantined: Gauge,
    waiting: Gauge,
    numbers_frozen: Gauge,
    /// METRICS_TEXTFILE: rewritten after every scan.
    textfile: Option<PathBuf>,
    /// Every registered family and its type, for [`Metrics::sample_names`].
    families: Vec<(String, MetricType)>,
}

/// Registers `metric` and remembers its name and type.
fn reg<M: prometheus_client::registry::Metric + TypedMetric>(
    registry: &mut Registry,
    families: &mut Vec<(String, MetricType)>,
    name: &str,
    help: &str,
    metric: M,
) {
    families.push((name.to_string(), M::TYPE));
    registry.register(name, help, metric);
}

impl Metrics {
    pub fn new(s: &Settings) -> Metrics {
        let mut registry = Registry::default();
        let mut families = super::lun_stats::FAMILIES
            .iter()
            .map(|(name, _)| (name.to_string(), MetricType::Gauge))
            .collect::<Vec<_>>();
        let scan_duration =
            Histogram::new([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]);
        let m = Metrics {
            scan_duration,
            last_scan: Gauge::default(),
            last_success: Gauge::default(),
            converged: Gauge::default(),
            projections: Family::default(),
            rootfs_luns: Gauge::default(),
            pe_luns: Gauge::default(),
            skipped: Family::default(),
            unknown: Family::default(),
            source_errors: Family::default(),
            operations: Family::default(),
            operation_errors: Family::default(),
            scan_failures: Family::default(),
            held: Family::default(),
            brake: Gauge::default(),
            ims_guard: Gauge::default(),
            tpg_enabled: Gauge::default(),
            labelled: Gauge::default(),
            content_changed: Gauge::default(),
            requests: Family::default(),
            unmanaged: Gauge::default(),
            quarantined: Gauge::default(),
            waiting: Gauge::default(),
            numbers_frozen: Gauge::default(),
            textfile: s.metrics_textfile.clone(),
            families: Vec::new(),
            registry: Registry::default(),
        };
        let build_info = Family::<Labels, Gauge>::default();
        build_info
            .get_or_create(&vec![
                ("version".into(), super::VERSION.into()),
                ("revision".into(), super::REVISION.into()),
            ])
            .set(1);
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_build_info",
            "Always 1; the labels name the agent's version and git revision",
            build_info,
        );
        registry.register_collector(Box::new(LunStats::new(Layout::new(
            &s.configfs_root,
            &s.target_iqn,
            s.tpg_tag,
        ))));
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_scan_duration_seconds",
            "Wall time of a scan",
            m.scan_duration.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_last_scan_timestamp_seconds",
            "When the last scan ran",
            m.last_scan.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_last_success_timestamp_seconds",
            "When a scan last converged",
            m.last_success.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_converged",
            "1 when the last scan converged",
            m.converged.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_projections",
            "Desired projections by kind",
            m.projections.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "iscsi_rootfs_lun_cnt",
            "Exported rootfs LUNs",
            m.rootfs_luns.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "iscsi_pe_lun_cnt",
            "Exported PE LUNs",
            m.pe_luns.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_skipped",
            "Candidates not projected, by rule",
            m.skipped.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_unknown",
            "Candidates whose state is unknown, by rule",
            m.unknown.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_source_errors",
            "Scans in which a source failed, by source",
            m.source_errors.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_operations",
            "LIO operations applied, by op and result",
            m.operations.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_operation_errors",
            "LIO operations that failed, by op and error kind (busy, not-found, denied …)",
            m.operation_errors.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_scan_failures",
            "Scans that stopped before finishing with LIO, by kind (target-service, lio, stuck, persistence, internal)",
            m.scan_failures.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_held_removals",
            "Removals held back, by reason",
            m.held.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_deletion_brake_engaged",
            "1 when the deletion brake held removals",
            m.brake.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_ims_answer_held",
            "1 when the IMS answer named none of the rootfs images this node serves and was taken as IMS unknown (released by scan --once --release-brake)",
            m.ims_guard.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_tpg_enabled",
            "1 when the target portal group is enabled",
            m.tpg_enabled.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_node_labelled",
            "1 labelled, 0 not, -1 unknown",
            m.labelled.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_pe_content_changed",
            "PE objects whose content changed under the same key",
            m.content_changed.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_source_requests",
            "Requests made to each source",
            m.requests.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_unmanaged_backstores",
            "Backstores in LIO the agent does not own",
            m.unmanaged.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_quarantined_luns",
            "LUN numbers in quarantine: freed, not given to new images yet",
            m.quarantined.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_waiting_images",
            "Desired images that got no LUN number this scan (numbers frozen, or none left)",
            m.waiting.clone(),
        );
        reg(
            &mut registry,
            &mut families,
            "sbps_marshal_numbers_frozen",
            "1 when no LUN number could be taken or freed this scan: the ledger in the Kubernetes API could not be read or written",
            m.numbers_frozen.clone(),
        );
        Metrics {
            registry,
            families,
            ..m
        }
    }

    /// Updates everything from one scan.
    pub fn record_scan(&self, r: &ScanReport) {
        self.scan_duration.observe(r.timings.total.as_secs_f64());
        self.last_scan.set(r.started as f64);
        if r.converged {
            self.last_success.set(r.started as f64);
        }
        self.converged.set(i64::from(r.converged));
        for kind in [Kind::Pe, Kind::Rootfs] {
            let n = r
                .desired
                .projections
                .values()
                .filter(|p| p.kind == kind)
                .count();
            self.projections
                .get_or_create(&vec![("kind".into(), kind.to_string())])
                .set(n as i64);
        }
        let (mut rootfs, mut pe) = (0, 0);
        if let Some(a) = &r.actual {
            let luns = a.lun_by_serial();
            for p in r.desired.projections.values() {
                if luns.contains_key(p.identity.serial.as_str()) {
                    match p.kind {
                        Kind::Rootfs => rootfs += 1,
                        Kind::Pe => pe += 1,
                    }
                }
            }
            self.tpg_enabled
                .set(a.tpg.as_ref().map_or(0, |t| i64::from(t.enabled)));
        }
        self.rootfs_luns.set(rootfs);
        self.pe_luns.set(pe);
        self.skipped.clear();
        self.unknown.clear();
        let held_ims = r.desired.verdicts.iter().any(|v| {
            matches!(
                v.outcome,
                Outcome::Unknown {
                    reason: crate::desired::Reason::ImsNamesNoneServed { .. }
                }
            )
        });
        self.ims_guard.set(i64::from(held_ims));
        for v in &r.desired.verdicts {
            match &v.outcome {
                Outcome::Skipped { reason } => {
                    self.skipped
                        .get_or_create(&vec![("reason".into(), reason.label().into())])
                        .inc();
                }
                Outcome::Unknown { reason } => {
                    self.unknown
                        .get_or_create(&vec![("reason".into(), reason.label().into())])
                        .inc();
                }
                Outcome::Projected { .. } => {}
            }
        }
        for (source, stats) in r.stats.by_source() {
            let l = vec![("source".to_string(), source.to_string())];
            self.requests.get_or_create(&l).inc_by(stats.requests);
            if stats.error.is_some() {
                self.source_errors.get_or_create(&l).inc();
            }
        }
        if let Some(f) = &r.failure {
            self.source_errors
                .get_or_create(&vec![("source".into(), "lio".into())])
                .inc();
            self.scan_failures
                .get_or_create(&vec![("kind".into(), f.kind.label().into())])
                .inc();
        }
        for o in &r.outcomes {
            let op = serde_json::to_value(&o.op)
                .ok()
                .and_then(|v| v.get("op").and_then(|x| x.as_str()).map(String::from))
                .unwrap_or_default();
            let result = if o.error.is_none() { "ok" } else { "error" };
            if o.error.is_some() {
                let kind = o.error_kind.unwrap_or("unknown");
                self.operation_errors
                    .get_or_create(&vec![
                        ("op".into(), op.clone()),
                        ("kind".into(), kind.into()),
                    ])
                    .inc();
            }
            self.operations
                .get_or_create(&vec![("op".into(), op), ("result".into(), result.into())])
                .inc();
        }
        self.held.clear();
        let mut changed = 0;
        if let Some(p) = &r.plan {
            for h in &p.held {
                let reason = match h.reason {
                    HoldReason::Unknown { .. } => "unknown",
                    HoldReason::Grace { .. } => "grace",
                    HoldReason::Brake { .. } => "brake",
                    HoldReason::NumbersFrozen { .. } => "numbers-frozen",
                };
                self.held
                    .get_or_create(&vec![("reason".into(), reason.into())])
                    .inc();
            }
            self.brake.set(i64::from(p.brake));
            self.unmanaged.set(p.unmanaged.len() as i64);
            self.quarantined.set(p.ledger.quarantine.len() as i64);
            self.waiting.set(p.waiting.len() as i64);
            changed = p
                .warnings
                .iter()
                .filter(|w| matches!(w, Warning::ContentChanged { .. }))
                .count();
        }
        self.content_changed.set(changed as i64);
        self.numbers_frozen
            .set(i64::from(r.numbers_frozen.is_some()));
        self.labelled.set(match r.labelled {
            Some(true) => 1,
            Some(false) => 0,
            None => -1,
        });
        if let Err(e) = self.write_textfile() {
            if let Some(path) = &self.textfile {
                tracing::warn!(file = %path.display(), "cannot write the metrics textfile: {e}");
            }
        }
    }

    /// Every sample name the agent can export, whether or not it has a sample now:
    /// what a dashboard or an alert rule may query (a counter `x` is sampled as
    /// `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`).
    pub fn sample_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, kind) in &self.families {
            match kind {
                MetricType::Counter => out.push(format!("{name}_total")),
                MetricType::Histogram => {
                    for s in ["bucket", "sum", "count"] {
                        out.push(format!("{name}_{s}"));
                    }
                }
                MetricType::Info => out.push(format!("{name}_info")),
                _ => out.push(name.clone()),
            }
        }
        out.sort();
        out
    }

    /// The OpenMetrics text for `/metrics`, with the per-LUN statistics read now.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if text::encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        out
    }

    /// The Prometheus text format (0.0.4) node-exporter's textfile collector reads,
    /// with the per-LUN statistics read now.
    pub(crate) fn render_prometheus_text(&self) -> String {
        let mut out = String::new();
        if prometheus_text::encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        out
    }

    /// Rewrites METRICS_TEXTFILE, if set (after every scan). A failure is logged and
    /// retried after the next scan; node-exporter keeps reading the previous whole
    /// file meanwhile.
    pub fn write_textfile(&self) -> std::io::Result<()> {
        let Some(path) = &self.textfile else {
            return Ok(());
        };
        super::textfile::write(path, &self.render_prometheus_text())
    }
}
