//! Per-LUN statistics under the names CSM's dashboards query, read from configfs
//! (`lun_N/statistics/scsi_tgt_port/{read_mbytes,in_cmds}`) each time the metrics
//! are encoded, as the separate CSM exporter did:
//!
//! - `iscsi_read_mbytes{lun,backstore}`: megabytes read through the LUN (a counter
//!   kept by the kernel, exported as a gauge under its historical name);
//! - `iscsi_in_cmds{lun,backstore}`: SCSI commands the LUN received (likewise);
//! - `iscsi_read_rate{lun,backstore}`: what CSM's metrics page calls the LUN's read
//!   IOPS: `in_cmds` per second, averaged between the agent's two latest reads of
//!   the statistics that lie at least [`MIN_WINDOW_SECS`] apart. Absent until two
//!   such reads exist. On the read-only squashfs LUNs nearly every command is a
//!   read. `rate(iscsi_in_cmds[5m])` is the same figure computed by Prometheus.
//!
//! The series go through prometheus-client's encoder (a [`Collector`]), so a label
//! value is escaped like any other.

use crate::lio::attr;
use crate::lio::fs::{FileKind, Fs, RealFs};
use crate::lio::layout::{Layout, LUN_PORT_STATISTICS};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Reads closer together than this keep the previous rate, so two scrapers a few
/// seconds apart do not turn the rate into noise over a tiny window.
pub(crate) const MIN_WINDOW_SECS: f64 = 10.0;

/// The families the collector encodes (all gauges), with their help.
pub(crate) const FAMILIES: [(&str, &str); 3] = [
    (
        "iscsi_read_mbytes",
        "Megabytes read through the LUN (configfs scsi_tgt_port/read_mbytes; never decreases while the LUN exists)",
    ),
    (
        "iscsi_in_cmds",
        "SCSI commands received by the LUN (configfs scsi_tgt_port/in_cmds; never decreases while the LUN exists)",
    ),
    (
        "iscsi_read_rate",
        "Read IOPS of the LUN: in_cmds per second between the agent's two latest reads of the statistics at least 10 s apart",
    ),
];

/// One read of a LUN's `in_cmds` counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Seconds on a monotonic clock.
    pub(crate) at: f64,
    pub(crate) cmds: u64,
}

/// The rate state of one LUN: the read the next rate is measured from, and the
/// last rate measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct RateWindow {
    pub(crate) base: Option<Sample>,
    pub(crate) rate: Option<f64>,
}

impl RateWindow {
    /// The window after a new read. A read at least `min_window` after the base
    /// measures a new rate and becomes the base; a counter that went down (the LUN
    /// was re-created) has no rate until the next read.
    pub(crate) fn advance(self, now: Sample, min_window: f64) -> RateWindow {
        let Some(base) = self.base else {
            return RateWindow {
                base: Some(now),
                rate: None,
            };
        };
        let dt = now.at - base.at;
        if dt < min_window {
            return self;
        }
        let rate = now.cmds.checked_sub(base.cmds).map(|d| d as f64 / dt);
        RateWindow {
            base: Some(now),
            rate,
        }
    }
}

/// One LUN of the TPG as configfs shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LunRow {
    pub(crate) lun: u64,
    pub(crate) backstore: String,
    pub(crate) read_mbytes: u64,
    pub(crate) in_cmds: u64,
}

/// The collector: where the TPG's LUNs are and each LUN's rate window.
#[derive(Debug)]
pub(crate) struct LunStats {
    layout: Layout,
    epoch: Instant,
    windows: Mutex<BTreeMap<(u64, String), RateWindow>>,
}

impl LunStats {
    pub(crate) fn new(layout: Layout) -> LunStats {
        LunStats {
            layout,
            epoch: Instant::now(),
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every LUN of the TPG, by number; a LUN whose statistics cannot be read shows 0.
    /// Read through [`Fs`] like every other configfs read, at the paths of [`Layout`].
    pub(crate) fn read(&self) -> Vec<LunRow> {
        let fs = RealFs;
        let luns = self.layout.luns_dir();
        let Ok(entries) = fs.read_dir(&luns) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries {
            let Some(lun) = attr::parse_lun_dir(&e.name) else {
                continue;
            };
            let dir = luns.join(&e.name);
            let stat = |f: &str| -> u64 {
                fs.read(&dir.join(LUN_PORT_STATISTICS).join(f))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            };
            let backstore = fs
                .read_dir(&dir)
                .ok()
                .and_then(|d| d.into_iter().find(|x| x.kind == FileKind::Symlink))
                .and_then(|x| fs.readlink(&dir.join(&x.name)).ok())
                .and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_default();
            out.push(LunRow {
                lun,
                backstore,
                read_mbytes: stat("read_mbytes"),
                in_cmds: stat("in_cmds"),
            });
        }
        out.sort();
        out
    }

    /// Reads the statistics and advances every LUN's rate window; LUNs gone from
    /// configfs are forgotten.
    fn sample(&self) -> Vec<(LunRow, Option<f64>)> {
        let rows = self.read();
        let at = self.epoch.elapsed().as_secs_f64();
        let Ok(mut windows) = self.windows.lock() else {
            return rows.into_iter().map(|r| (r, None)).collect();
        };
        let mut next = BTreeMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let key = (r.lun, r.backstore.clone());
            let w = windows.remove(&key).unwrap_or_default().advance(
                Sample {
                    at,
                    cmds: r.in_cmds,
                },
                MIN_WINDOW_SECS,
            );
            out.push((r, w.rate));
            next.insert(key, w);
        }
        *windows = next;
        out
    }
}

impl Collector for LunStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.sample();
        let labels = |r: &LunRow| {
            [
                ("lun", r.lun.to_string()),
                ("backstore", r.backstore.clone()),
            ]
        };
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let [(mb_name, mb_help), (cmds_name, cmds_help), (rate_name, rate_help)] = FAMILIES;
        {
            let mut m = encoder.encode_descriptor(mb_name, mb_help, None, MetricType::Gauge)?;
            for (r, _) in &rows {
                ConstGauge::new(clamp(r.read_mbytes)).encode(m.encode_family(&labels(r))?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(cmds_name, cmds_help, None, MetricType::Gauge)?;
            for (r, _) in &rows {
                ConstGauge::new(clamp(r.in_cmds)).encode(m.encode_family(&labels(r))?)?;
            }
        }
        let mut m = encoder.encode_descriptor(rate_name, rate_help, None, MetricType::Gauge)?;
        for (r, rate) in &rows {
            if let Some(rate) = rate {
                ConstGauge::new(*rate).encode(m.encode_family(&labels(r))?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(at: f64, cmds: u64) -> Sample {
        Sample { at, cmds }
    }

    #[test]
    fn the_first_read_has_no_rate_the_second_has_one() {
        let w = RateWindow::default().advance(s(0.0, 100), 10.0);
        assert_eq!(w.rate, None);
        let w = w.advance(s(28.0, 100 + 28 * 50), 10.0);
        assert_eq!(w.rate, Some(50.0));
        assert_eq!(w.base, Some(s(28.0, 1500)));
    }

    #[test]
    fn a_read_inside_the_window_keeps_the_rate_and_the_base() {
        let w = RateWindow::default()
            .advance(s(0.0, 0), 10.0)
            .advance(s(20.0, 200), 10.0);
        assert_eq!(w.advance(s(25.0, 10_000), 10.0), w);
    }

    #[test]
    fn a_counter_that_went_down_has_no_rate_until_the_next_read() {
        let w = RateWindow::default()
            .advance(s(0.0, 1000), 10.0)
            .advance(s(30.0, 5), 10.0);
        assert_eq!(w.rate, None);
        assert_eq!(w.advance(s(60.0, 305), 10.0).rate, Some(10.0));
    }

    proptest! {
        /// Over any sequence of reads of a counter that only grows, a rate is never
        /// negative and always equals the growth over the time between the reads
        /// it was measured from, which lie at least the window apart.
        #[test]
        fn rates_are_growth_over_time(steps in proptest::collection::vec((0.0f64..60.0, 0u64..10_000), 1..40)) {
            let mut w = RateWindow::default();
            let (mut at, mut cmds) = (0.0, 0u64);
            for (dt, dc) in steps {
                at += dt;
                cmds += dc;
                let before = w;
                w = w.advance(s(at, cmds), MIN_WINDOW_SECS);
                match (before.base, w.base) {
                    (Some(b), Some(n)) if n != b => {
                        prop_assert!(n.at - b.at >= MIN_WINDOW_SECS);
                        let r = w.rate.unwrap();
                        prop_assert!(r >= 0.0);
                        prop_assert!((r - (n.cmds - b.cmds) as f64 / (n.at - b.at)).abs() < 1e-9);
                    }
                    (Some(_), Some(_)) => prop_assert_eq!(w, before),
                    (None, Some(_)) => prop_assert_eq!(w.rate, None),
                    (_, None) => prop_assert!(false, "a read always leaves a base"),
                }
            }
        }
    }
}
