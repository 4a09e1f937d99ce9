//! The fleet: every worker's ledger side by side.
//!
//! Each agent keeps its node's ledger in the Kubernetes API (one ConfigMap per node), so
//! the LUN map is a fact of the cluster, not of one disk. Two things follow from reading
//! the other nodes' ledgers, both pure functions of them:
//!
//! * [`FleetView`]: the numbers the rest of the fleet gave each image, so a new image
//!   takes the same LUN number on every worker (`multipath -ll` on a compute node then
//!   shows one number per image on all its paths, as ceph-iscsi's gateways present each
//!   disk under one LUN id);
//! * [`survey`]: the operator's view (`sbps-marshal fleet`): per image, which nodes export
//!   it under which number and content, and what looks wrong.
//!
//! No clock and no I/O here: `now` and the documents are passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::desired::Kind;
use crate::ledger::Ledger;

/// The LUN numbers the other nodes of the fleet use, for allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    /// Unit serial → the numbers other nodes gave it, each with how many nodes did.
    by_serial: HashMap<String, BTreeMap<u64, usize>>,
    /// Numbers some other node holds (exported or quarantined): not free fleet-wide.
    busy: BTreeSet<u64>,
}

impl FleetView {
    /// The view of the given ledgers (the other nodes', not this node's own).
    pub fn from_ledgers<'a>(others: impl IntoIterator<Item = &'a Ledger>) -> FleetView {
        let mut v = FleetView::default();
        for l in others {
            for (serial, r) in &l.luns {
                *v.by_serial
                    .entry(serial.clone())
                    .or_default()
                    .entry(r.lun)
                    .or_default() += 1;
                v.busy.insert(r.lun);
            }
            v.busy.extend(l.quarantine.keys().copied());
        }
        v
    }

    /// True when no other node has a ledger.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_serial.is_empty() && self.busy.is_empty()
    }

    /// The number most other nodes gave `serial` (the lowest among equals), if any.
    pub(crate) fn hint(&self, serial: &str) -> Option<u64> {
        let numbers = self.by_serial.get(serial)?;
        // max_by_key keeps the last maximum; iterate from the top so that is the lowest.
        numbers
            .iter()
            .rev()
            .max_by_key(|(_, count)| **count)
            .map(|(n, _)| *n)
    }

    /// True when another node holds `n` (for an image or in quarantine).
    pub(crate) fn busy(&self, n: u64) -> bool {
        self.busy.contains(&n)
    }
}

/// What an agent says of itself next to its ledger. Written only when one of its states
/// changes (not for a new `last_converged` alone), so a steady agent makes no API write:
/// it records transitions, not heartbeats. What it exports is in its ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The agent's version (with its revision).
    pub version: String,
    /// The agent's scan period, seconds: the fleet judges "no converged scan" by it.
    pub scan_frequency: u64,
    /// The node label as last read (`None`: unknown).
    pub labelled: Option<bool>,
    /// Whether the target portal group is enabled (`None`: no target).
    pub tpg_enabled: Option<bool>,
    /// Whether the last scan converged.
    pub converged: bool,
    /// The last scan that converged (seconds since the epoch), if any since the agent started.
    pub last_converged: Option<u64>,
    /// When the agent started.
    pub started: u64,
    /// PE images whose content changed under their live LUN here (same key, same size,
    /// another ETag): unit serial → the ETag the node now serves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub content_changed: BTreeMap<String, String>,
}

/// One node's document: its ledger and, when it wrote one, its status.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDoc {
    pub node: String,
    pub ledger: Ledger,
    pub status: Option<NodeStatus>,
}

/// One node's copy of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Copy {
    pub(crate) lun: u64,
    pub(crate) etag: Option<String>,
    pub(crate) size: Option<u64>,
    pub(crate) since: u64,
}

/// One image across the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRow {
    pub(crate) serial: String,
    pub(crate) name: String,
    pub(crate) kind: Option<Kind>,
    pub(crate) key: Option<String>,
    pub(crate) image_id: Option<String>,
    /// Node → its copy.
    pub(crate) nodes: BTreeMap<String, Copy>,
}

/// Something in the fleet that an operator should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "flag", rename_all = "kebab-case")]
pub enum Flag {
    /// A labelled node does not export an image the others have exported for longer than
    /// the grace period.
    Missing {
        serial: String,
        name: String,
        node: String,
        /// Since when the other nodes export it.
        elsewhere_since: u64,
    },
    /// Nodes export one image under different LUN numbers.
    LunDiffers {
        serial: String,
        name: String,
        luns: BTreeMap<String, u64>,
    },
    /// Nodes project different content (ETag or size) for one key: the documented
    /// "image projection inconsistent across nodes".
    ContentDiffers {
        serial: String,
        key: Option<String>,
        copies: BTreeMap<String, (Option<String>, Option<u64>)>,
    },
    /// An agent has not converged for three of its periods.
    NotConverging {
        node: String,
        last_converged: Option<u64>,
    },
    /// A labelled node has no ledger in the API: no agent wrote one there.
    NoLedger { node: String },
    /// A PE object's content changed under a live LUN on a node (re-uploaded under the
    /// same key): initiators may read a mix of old and new blocks.
    ContentChanged {
        node: String,
        serial: String,
        key: Option<String>,
        now: String,
    },
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flag::Missing {
                name,
                node,
                elsewhere_since,
                ..
            } => write!(
                f,
                "{node} does not export {name}, which other nodes export since {elsewhere_since}"
            ),
            Flag::LunDiffers { name, luns, .. } => {
                let l: Vec<String> = luns.iter().map(|(n, l)| format!("{n}={l}")).collect();
                write!(f, "{name} has different LUN numbers: {}", l.join(", "))
            }
            Flag::ContentDiffers {
                serial,
                key,
                copies,
            } => {
                let c: Vec<String> = copies
                    .iter()
                    .map(|(n, (e, s))| {
                        format!(
                            "{n}: etag {} size {}",
                            e.as_deref().unwrap_or("?"),
                            s.map_or("?".to_string(), |s| s.to_string())
                        )
                    })
                    .collect();
                write!(
                    f,
                    "{} is projected with different content: {}",
                    key.as_deref().unwrap_or(serial),
                    c.join("; ")
                )
            }
            Flag::NotConverging {
                node,
                last_converged,
            } => match last_converged {
                Some(t) => write!(f, "{node}: no converged scan since {t}"),
                None => write!(f, "{node}: no converged scan since the agent started"),
            },
            Flag::NoLedger { node } => write!(f, "{node} is labelled but has no ledger"),
            Flag::ContentChanged {
                node,
                serial,
                key,
                now,
            } => write!(
                f,
                "{node}: the content of {} changed under its live LUN (now ETag {now})",
                key.as_deref().unwrap_or(serial)
            ),
        }
    }
}

/// The fleet, image by image, and its flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survey {
    pub(crate) nodes: Vec<String>,
    pub images: Vec<ImageRow>,
    pub flags: Vec<Flag>,
}

/// What [`survey`] needs besides the documents.
#[derive(Debug, Clone)]
pub struct SurveyPolicy {
    /// The nodes carrying the label, when known: each must export every image.
    pub labelled: Option<BTreeSet<String>>,
    /// An image missing on a node is flagged only after this long elsewhere.
    pub grace_secs: u64,
    /// Periods without a converged scan before an agent is flagged.
    pub periods: u64,
    pub now: u64,
}

/// Lays the nodes' ledgers side by side and flags what differs.
pub fn survey(docs: &[NodeDoc], policy: &SurveyPolicy) -> Survey {
    let mut images: BTreeMap<&str, ImageRow> = BTreeMap::new();
    for d in docs {
        let changed = d.status.as_ref().map(|s| &s.content_changed);
        for (serial, r) in &d.ledger.luns {
            // What the node serves now: a changed PE object's new content.
            let served = changed.and_then(|c| c.get(serial)).cloned();
            let row = images.entry(serial).or_insert_with(|| ImageRow {
                serial: serial.clone(),
                name: r.name.clone(),
                kind: r.kind,
                key: r.key.clone(),
                image_id: r.image_id.clone(),
                nodes: BTreeMap::new(),
            });
            row.kind = row.kind.or(r.kind);
            row.key = row.key.take().or_else(|| r.key.clone());
            row.image_id = row.image_id.take().or_else(|| r.image_id.clone());
            row.nodes.insert(
                d.node.clone(),
                Copy {
                    lun: r.lun,
                    etag: served.or_else(|| r.etag.clone()),
                    size: r.size,
                    since: r.since,
                },
            );
        }
    }
    let with_ledger: BTreeSet<&str> = docs.iter().map(|d| d.node.as_str()).collect();
    let mut flags = Vec::new();
    if let Some(labelled) = &policy.labelled {
        for n in labelled
            .iter()
            .filter(|n| !with_ledger.contains(n.as_str()))
        {
            flags.push(Flag::NoLedger { node: n.clone() });
        }
    }
    for row in images.values() {
        flag_image(row, policy, &mut flags);
    }
    for d in docs {
        let Some(s) = &d.status else { continue };
        for (serial, now) in &s.content_changed {
            flags.push(Flag::ContentChanged {
                node: d.node.clone(),
                serial: serial.clone(),
                key: d.ledger.luns.get(serial).and_then(|r| r.key.clone()),
                now: now.clone(),
            });
        }
        {
            let period = s.scan_frequency.max(1);
            let base = s.last_converged.unwrap_or(s.started);
            let overdue = policy.now.saturating_sub(base) > policy.periods.saturating_mul(period);
            if !s.converged && overdue {
                flags.push(Flag::NotConverging {
                    node: d.node.clone(),
                    last_converged: s.last_converged,
                });
            }
        }
    }
    Survey {
        nodes: with_ledger.iter().map(|n| n.to_string()).collect(),
        images: images.into_values().collect(),
        flags,
    }
}

impl Survey {
    /// One line per image (its number and how many nodes export it), then the flags.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} node(s) with a ledger: {}",
            self.nodes.len(),
            self.nodes.join(", ")
        );
        let _ = writeln!(
            out,
            "{:<15}  {:<6}  {:<12}  {:<5}  KEY",
            "IMAGE", "KIND", "LUN", "NODES"
        );
        for row in &self.images {
            let luns: BTreeSet<u64> = row.nodes.values().map(|c| c.lun).collect();
            let luns: Vec<String> = luns.iter().map(u64::to_string).collect();
            let kind = row.kind.map_or("?".to_string(), |k| k.to_string());
            let key = row.key.as_deref().unwrap_or("?");
            let _ = writeln!(
                out,
                "{:<15}  {:<6}  {:<12}  {:<5}  {key}",
                row.name,
                kind,
                luns.join(","),
                format!("{}/{}", row.nodes.len(), self.nodes.len()),
            );
        }
        if self.flags.is_empty() {
            let _ = writeln!(out, "no flags");
        }
        for f in &self.flags {
            let _ = writeln!(out, "FLAG: {f}");
        }
        out
    }
}

fn flag_image(row: &ImageRow, policy: &SurveyPolicy, flags: &mut Vec<Flag>) {
    let luns: BTreeSet<u64> = row.nodes.values().map(|c| c.lun).collect();
    if luns.len() > 1 {
        flags.push(Flag::LunDiffers {
            serial: row.serial.clone(),
            name: row.name.clone(),
            luns: row.nodes.iter().map(|(n, c)| (n.clone(), c.lun)).collect(),
        });
    }
    let contents: BTreeSet<(Option<&str>, Option<u64>)> = row
        .nodes
        .values()
        .map(|c| (c.etag.as_deref(), c.size))
        .collect();
    if contents.len() > 1 {
        flags.push(Flag::ContentDiffers {
            serial: row.serial.clone(),
            key: row.key.clone(),
            copies: row
                .nodes
                .iter()
                .map(|(n, c)| (n.clone(), (c.etag.clone(), c.size)))
                .collect(),
        });
    }
    if let Some(labelled) = &policy.labelled {
        // Since when the image has been exported somewhere: the earliest copy.
        let Some(since) = row.nodes.values().map(|c| c.since).min() else {
            return;
        };
        if policy.now.saturating_sub(since) <= policy.grace_secs {
            return;
        }
        for n in labelled.iter().filter(|n| !row.nodes.contains_key(*n)) {
            flags.push(Flag::Missing {
                serial: row.serial.clone(),
                name: row.name.clone(),
                node: n.clone(),
                elsewhere_since: since,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{LunRecord, Quarantine};

    fn ledger(records: &[(&str, u64)], quarantined: &[u64]) -> Ledger {
        let mut l = Ledger::new();
        for (serial, lun) in records {
            l.luns.insert(
                serial.to_string(),
                std::sync::Arc::new(LunRecord {
                    lun: *lun,
                    name: serial[..3.min(serial.len())].to_string(),
                    kind: Some(Kind::Pe),
                    key: Some(format!("s3://b/PE/{serial}")),
                    image_id: None,
                    etag: Some("e".into()),
                    size: Some(1),
                    since: 0,
                }),
            );
        }
        for n in quarantined {
            l.quarantine.insert(
                *n,
                Quarantine {
                    serial: None,
                    etag: None,
                    size: None,
                    same_serial_may_return: false,
                    until: u64::MAX,
                },
            );
        }
        l
    }

    #[test]
    fn the_hint_is_the_number_most_nodes_gave_and_the_lowest_among_equals() {
        let a = ledger(&[("x", 4)], &[]);
        let b = ledger(&[("x", 7)], &[]);
        let c = ledger(&[("x", 7)], &[9]);
        let v = FleetView::from_ledgers([&a, &b, &c]);
        assert_eq!(v.hint("x"), Some(7));
        let v = FleetView::from_ledgers([&b, &a]);
        assert_eq!(v.hint("x"), Some(4));
        assert_eq!(v.hint("y"), None);
        let v = FleetView::from_ledgers([&a, &b, &c]);
        assert!(v.busy(4) && v.busy(7) && v.busy(9) && !v.busy(5));
    }

    fn doc(node: &str, l: Ledger) -> NodeDoc {
        NodeDoc {
            node: node.into(),
            ledger: l,
            status: None,
        }
    }

    fn policy(labelled: &[&str], now: u64) -> SurveyPolicy {
        SurveyPolicy {
            labelled: Some(labelled.iter().map(|s| s.to_string()).collect()),
            grace_secs: 600,
            periods: 3,
            now,
        }
    }

    #[test]
    fn a_consistent_fleet_has_no_flag() {
        let docs = [
            doc("w1", ledger(&[("x", 1), ("y", 2)], &[])),
            doc("w2", ledger(&[("x", 1), ("y", 2)], &[3])),
        ];
        let s = survey(&docs, &policy(&["w1", "w2"], 10_000));
        assert_eq!(s.flags, vec![]);
        assert_eq!(s.images.len(), 2);
        assert_eq!(s.nodes, ["w1", "w2"]);
    }

    #[test]
    fn differing_numbers_content_and_missing_images_are_flagged() {
        let mut w2 = ledger(&[("x", 2)], &[]);
        let x = w2.luns.get_mut("x").unwrap();
        std::sync::Arc::make_mut(x).etag = Some("other".into());
        let docs = [doc("w1", ledger(&[("x", 1), ("y", 2)], &[])), doc("w2", w2)];
        let s = survey(&docs, &policy(&["w1", "w2", "w3"], 10_000));
        let kinds: Vec<String> = s
            .flags
            .iter()
            .map(|f| {
                serde_json::to_value(f).unwrap()["flag"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "no-ledger",
                "lun-differs",
                "content-differs",
                "missing",
                "missing",
                "missing"
            ],
            "{:#?}",
            s.flags
        );
        // Within the grace period a missing copy is not (yet) a flag.
        let s = survey(&docs, &policy(&["w1", "w2"], 500));
        assert!(!s.flags.iter().any(|f| matches!(f, Flag::Missing { .. })));
    }

    #[test]
    fn an_agent_that_has_not_converged_for_three_periods_is_flagged() {
        let status = |converged, last| NodeStatus {
            version: "v".into(),
            scan_frequency: 180,
            labelled: Some(true),
            tpg_enabled: Some(true),
            converged,
            last_converged: last,
            started: 100,
            content_changed: BTreeMap::new(),
        };
        let mut d = doc("w1", Ledger::new());
        d.status = Some(status(false, Some(1_000)));
        let p = |now| policy(&["w1"], now);
        assert!(survey(std::slice::from_ref(&d), &p(1_000 + 540))
            .flags
            .is_empty());
        assert_eq!(
            survey(std::slice::from_ref(&d), &p(1_000 + 541)).flags,
            [Flag::NotConverging {
                node: "w1".into(),
                last_converged: Some(1_000)
            }]
        );
        d.status = Some(status(true, Some(1_000)));
        assert!(survey(std::slice::from_ref(&d), &p(99_999))
            .flags
            .is_empty());
    }
}
