//! The Prometheus registry. Names CSM dashboards already use are kept:
//! `iscsi_rootfs_lun_cnt`, `iscsi_pe_lun_cnt`, and per-LUN `iscsi_read_mbytes` /
//! `iscsi_in_cmds` read from configfs statistics at scrape time (what the separate
//! CSM exporter read). Everything else is `sbps_marshal_*`.

use std::path::PathBuf;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::agent::ScanReport;
use crate::config::Settings;
use crate::desired::{Kind, Outcome};
use crate::plan::{HoldReason, Warning};

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
    held: Family<Labels, Gauge>,
    brake: Gauge,
    ims_guard: Gauge,
    tpg_enabled: Gauge,
    labelled: Gauge,
    content_changed: Gauge,
    requests: Family<Labels, Counter>,
    unmanaged: Gauge,
    quarantined: Gauge,
    lun_stats: LunStats,
}

/// Where the per-LUN statistics live.
struct LunStats {
    tpg_dir: PathBuf,
}

impl Metrics {
    pub fn new(s: &Settings) -> Metrics {
        let mut registry = Registry::default();
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
            held: Family::default(),
            brake: Gauge::default(),
            ims_guard: Gauge::default(),
            tpg_enabled: Gauge::default(),
            labelled: Gauge::default(),
            content_changed: Gauge::default(),
            requests: Family::default(),
            unmanaged: Gauge::default(),
            quarantined: Gauge::default(),
            lun_stats: LunStats {
                tpg_dir: s
                    .configfs_root
                    .join("iscsi")
                    .join(&s.target_iqn)
                    .join(format!("tpgt_{}", s.tpg_tag)),
            },
            registry: Registry::default(),
        };
        registry.register(
            "sbps_marshal_scan_duration_seconds",
            "Wall time of a scan",
            m.scan_duration.clone(),
        );
        registry.register(
            "sbps_marshal_last_scan_timestamp_seconds",
            "When the last scan ran",
            m.last_scan.clone(),
        );
        registry.register(
            "sbps_marshal_last_success_timestamp_seconds",
            "When a scan last converged",
            m.last_success.clone(),
        );
        registry.register(
            "sbps_marshal_converged",
            "1 when the last scan converged",
            m.converged.clone(),
        );
        registry.register(
            "sbps_marshal_projections",
            "Desired projections by kind",
            m.projections.clone(),
        );
        registry.register(
            "iscsi_rootfs_lun_cnt",
            "Exported rootfs LUNs",
            m.rootfs_luns.clone(),
        );
        registry.register("iscsi_pe_lun_cnt", "Exported PE LUNs", m.pe_luns.clone());
        registry.register(
            "sbps_marshal_skipped",
            "Candidates not projected, by rule",
            m.skipped.clone(),
        );
        registry.register(
            "sbps_marshal_unknown",
            "Candidates whose state is unknown, by rule",
            m.unknown.clone(),
        );
        registry.register(
            "sbps_marshal_source_errors",
            "Scans in which a source failed, by source",
            m.source_errors.clone(),
        );
        registry.register(
            "sbps_marshal_operations",
            "LIO operations applied, by op and result",
            m.operations.clone(),
        );
        registry.register(
            "sbps_marshal_held_removals",
            "Removals held back, by reason",
            m.held.clone(),
        );
        registry.register(
            "sbps_marshal_deletion_brake_engaged",
            "1 when the deletion brake held removals",
            m.brake.clone(),
        );
        registry.register(
            "sbps_marshal_ims_answer_held",
            "1 when the IMS answer named none of the rootfs images this node serves and was taken as IMS unknown (released by scan --once --release-brake)",
            m.ims_guard.clone(),
        );
        registry.register(
            "sbps_marshal_tpg_enabled",
            "1 when the target portal group is enabled",
            m.tpg_enabled.clone(),
        );
        registry.register(
            "sbps_marshal_node_labelled",
            "1 labelled, 0 not, -1 unknown",
            m.labelled.clone(),
        );
        registry.register(
            "sbps_marshal_pe_content_changed",
            "PE objects whose content changed under the same key",
            m.content_changed.clone(),
        );
        registry.register(
            "sbps_marshal_source_requests",
            "Requests made to each source",
            m.requests.clone(),
        );
        registry.register(
            "sbps_marshal_unmanaged_backstores",
            "Backstores in LIO the agent does not own",
            m.unmanaged.clone(),
        );
        registry.register(
            "sbps_marshal_quarantined_luns",
            "LUN numbers in quarantine: freed, not given to new images yet",
            m.quarantined.clone(),
        );
        Metrics { registry, ..m }
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
        if r.failure.is_some() {
            self.source_errors
                .get_or_create(&vec![("source".into(), "lio".into())])
                .inc();
        }
        for o in &r.outcomes {
            let op = serde_json::to_value(&o.op)
                .ok()
                .and_then(|v| v.get("op").and_then(|x| x.as_str()).map(String::from))
                .unwrap_or_default();
            let result = if o.error.is_none() { "ok" } else { "error" };
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
            changed = p
                .warnings
                .iter()
                .filter(|w| matches!(w, Warning::ContentChanged { .. }))
                .count();
        }
        self.content_changed.set(changed as i64);
        self.labelled.set(match r.labelled {
            Some(true) => 1,
            Some(false) => 0,
            None => -1,
        });
    }

    /// The OpenMetrics text, with the per-LUN statistics read now.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        // The text ends with "# EOF"; per-LUN figures go before it.
        let body = out
            .trim_end()
            .strip_suffix("# EOF")
            .unwrap_or(&out)
            .to_string();
        let mut extra = String::new();
        let luns = self.lun_stats.read();
        if !luns.is_empty() {
            extra += "# HELP iscsi_read_mbytes Megabytes read through the LUN (configfs scsi_tgt_port/read_mbytes).\n# TYPE iscsi_read_mbytes gauge\n";
            for (lun, backstore, mb, _) in &luns {
                extra +=
                    &format!("iscsi_read_mbytes{{lun=\"{lun}\",backstore=\"{backstore}\"}} {mb}\n");
            }
            extra += "# HELP iscsi_in_cmds Commands received by the LUN (configfs scsi_tgt_port/in_cmds).\n# TYPE iscsi_in_cmds gauge\n";
            for (lun, backstore, _, cmds) in &luns {
                extra +=
                    &format!("iscsi_in_cmds{{lun=\"{lun}\",backstore=\"{backstore}\"}} {cmds}\n");
            }
        }
        format!("{body}{extra}# EOF\n")
    }
}

impl LunStats {
    /// (lun, backstore name, read_mbytes, in_cmds) for every LUN of the TPG.
    fn read(&self) -> Vec<(u64, String, u64, u64)> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(self.tpg_dir.join("lun")) else {
            return out;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name
                .strip_prefix("lun_")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let stat = |f: &str| -> u64 {
                std::fs::read_to_string(e.path().join("statistics/scsi_tgt_port").join(f))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            };
            let backstore = std::fs::read_dir(e.path())
                .ok()
                .and_then(|d| {
                    d.flatten()
                        .find(|x| x.file_type().is_ok_and(|t| t.is_symlink()))
                        .and_then(|x| std::fs::read_link(x.path()).ok())
                })
                .and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_default();
            out.push((n, backstore, stat("read_mbytes"), stat("in_cmds")));
        }
        out.sort();
        out
    }
}
