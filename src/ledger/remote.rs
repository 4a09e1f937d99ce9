//! The ledger kept in the Kubernetes API: one ConfigMap per node.
//!
//! A worker rebuild re-images the node's disk, and the local ledger goes with it; the
//! copy in the API outlives the node, so the rebuilt agent restores every LUN number
//! from it (see `crate::agent::mirror` for when it is read and written). This module
//! is the document: its name, labels and encoding, and the [`LedgerMirror`] trait the
//! agent talks to.
//!
//! The ledger travels gzipped in `binaryData` (5,000 images are about 1.3 MB of JSON,
//! over the API's 1 MiB object limit; gzipped they are a fraction of it, see
//! BENCHMARKS.md); the agent's small status is plain JSON in `data` so that
//! `kubectl get configmap -o yaml` shows it.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;

use crate::fleet::{NodeDoc, NodeStatus};
use crate::ledger::Ledger;

/// `app.kubernetes.io/name` of every document, for listing the fleet.
pub(crate) const APP_LABEL: (&str, &str) = ("app.kubernetes.io/name", "sbps-marshal");
/// `app.kubernetes.io/component` of a ledger document.
pub(crate) const COMPONENT_LABEL: (&str, &str) = ("app.kubernetes.io/component", "ledger");
/// The node a document belongs to (an annotation: node names may be longer than a
/// label value may be).
pub(crate) const NODE_ANNOTATION: &str = "sbps-marshal/node";
/// The ledger's generation, for people reading the object.
pub(crate) const GENERATION_ANNOTATION: &str = "sbps-marshal/generation";
/// `binaryData` key of the gzipped ledger JSON.
pub(crate) const LEDGER_KEY: &str = "ledger.json.gz";
/// `data` key of the agent's status JSON.
pub(crate) const STATUS_KEY: &str = "status.json";
/// The API server refuses a ConfigMap whose data and binaryData exceed 1 MiB.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The label selector that lists every node's document.
pub(crate) fn selector() -> String {
    format!(
        "{}={},{}={}",
        APP_LABEL.0, APP_LABEL.1, COMPONENT_LABEL.0, COMPONENT_LABEL.1
    )
}

/// The ConfigMap name of `node`'s ledger: `sbps-marshal-ledger-<node>`, as a DNS-1123
/// subdomain (Kubernetes node names already are; a hostname in other case is lowered).
pub fn configmap_name(node: &str) -> String {
    let mut name = String::from("sbps-marshal-ledger-");
    for c in node.chars() {
        let c = c.to_ascii_lowercase();
        name.push(if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            c
        } else {
            '-'
        });
    }
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    name.truncate(253);
    name
}

/// A node's document as the API stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) data: BTreeMap<String, String>,
    pub(crate) binary_data: BTreeMap<String, Vec<u8>>,
}

impl Document {
    /// Bytes the API server counts against [`MAX_BYTES`].
    pub fn size(&self) -> usize {
        let d: usize = self.data.iter().map(|(k, v)| k.len() + v.len()).sum();
        let b: usize = self
            .binary_data
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        d + b
    }
}

/// Why a document cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("the ledger document of {node} is {size} bytes, over the API's limit of {MAX_BYTES}")]
    TooLarge { node: String, size: usize },
    #[error("the ledger document of {node} has no {LEDGER_KEY}")]
    Missing { node: String },
    #[error("the ledger document of {node} is unreadable: {detail}")]
    Unreadable { node: String, detail: String },
}

/// Encodes `node`'s ledger and status.
pub fn encode(
    node: &str,
    ledger: &Ledger,
    status: Option<&NodeStatus>,
) -> Result<Document, CodecError> {
    let unreadable = |e: &dyn std::fmt::Display| CodecError::Unreadable {
        node: node.to_string(),
        detail: e.to_string(),
    };
    let json = serde_json::to_vec(ledger).map_err(|e| unreadable(&e))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json).map_err(|e| unreadable(&e))?;
    let gz = gz.finish().map_err(|e| unreadable(&e))?;
    let mut doc = Document::default();
    for (k, v) in [APP_LABEL, COMPONENT_LABEL] {
        doc.labels.insert(k.into(), v.into());
    }
    doc.annotations.insert(NODE_ANNOTATION.into(), node.into());
    doc.annotations
        .insert(GENERATION_ANNOTATION.into(), ledger.generation.to_string());
    doc.binary_data.insert(LEDGER_KEY.into(), gz);
    if let Some(s) = status {
        let s = serde_json::to_string(s).map_err(|e| unreadable(&e))?;
        doc.data.insert(STATUS_KEY.into(), s);
    }
    let size = doc.size();
    if size > MAX_BYTES {
        return Err(CodecError::TooLarge {
            node: node.into(),
            size,
        });
    }
    Ok(doc)
}

/// Decodes a document; `name` (the object's name) stands in for a missing node annotation.
pub fn decode(name: &str, doc: &Document) -> Result<NodeDoc, CodecError> {
    let node = doc
        .annotations
        .get(NODE_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| name.trim_start_matches("sbps-marshal-ledger-").to_string());
    let unreadable = |detail: String| CodecError::Unreadable {
        node: node.clone(),
        detail,
    };
    let gz = doc
        .binary_data
        .get(LEDGER_KEY)
        .ok_or_else(|| CodecError::Missing { node: node.clone() })?;
    // A bound on what is inflated: a document is at most 1 MiB, the ledger inside at most
    // a few tens of MiB; past that it is not ours.
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .take(64 * 1024 * 1024)
        .read_to_end(&mut json)
        .map_err(|e| unreadable(format!("{LEDGER_KEY}: {e}")))?;
    let mut ledger: Ledger =
        serde_json::from_slice(&json).map_err(|e| unreadable(format!("{LEDGER_KEY}: {e}")))?;
    if ledger.version > crate::ledger::VERSION {
        return Err(unreadable(format!(
            "ledger version {} is newer than this agent's {}",
            ledger.version,
            crate::ledger::VERSION
        )));
    }
    ledger.version = crate::ledger::VERSION;
    // A status that cannot be read is only a missing status: the ledger is what matters.
    let status = doc
        .data
        .get(STATUS_KEY)
        .and_then(|s| serde_json::from_str(s).ok());
    Ok(NodeDoc {
        node,
        ledger,
        status,
    })
}

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the API's copy could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    /// The API did not answer as asked (down, slow, refused, forbidden …).
    #[error("{0}")]
    Unavailable(String),
    /// This node's document is there but cannot be read.
    #[error("{0}")]
    Unreadable(String),
}

/// This node's ledger in the Kubernetes API, and the fleet's.
pub trait LedgerMirror: Send + Sync {
    /// This node's document; `None` when the API holds none.
    fn load(&self) -> BoxFut<'_, Result<Option<NodeDoc>, MirrorError>>;
    /// Writes this node's document (creates it, or replaces it with optimistic
    /// concurrency: a conflict re-reads and retries). `status: None` keeps the one
    /// last written.
    fn store<'a>(
        &'a self,
        ledger: &'a Ledger,
        status: Option<&'a NodeStatus>,
    ) -> BoxFut<'a, Result<(), MirrorError>>;
    /// Every node's document (this node's included). Unreadable ones are skipped with a
    /// warning naming them.
    fn fleet(&self) -> BoxFut<'_, Result<Vec<NodeDoc>, MirrorError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Kind;
    use crate::identity::Identity;
    use crate::ledger::LunRecord;

    /// A ledger of `n` rootfs images as IMS names them.
    pub(crate) fn ledger_of(n: usize) -> Ledger {
        let mut l = Ledger::new();
        for i in 0..n {
            let key = format!(
                "s3://boot-images/{i:08x}-1c8e-4c3a-9f52-7e0b5a3c{i:04x}/rootfs|{:032x}-{}",
                i * 7919,
                i % 40
            );
            let id = Identity::of_key(&key);
            l.luns.insert(
                id.serial.clone(),
                std::sync::Arc::new(LunRecord {
                    lun: i as u64 + 1,
                    name: id.name.clone(),
                    kind: Some(Kind::Rootfs),
                    key: Some(key),
                    image_id: Some(format!("{i:08x}-1c8e-4c3a-9f52-7e0b5a3c{i:04x}")),
                    etag: Some(format!("{:032x}-{}", i * 7919, i % 40)),
                    size: Some(1_500_000_000 + i as u64),
                    since: 1_780_000_000 + i as u64,
                }),
            );
        }
        l.generation = 42;
        l
    }

    #[test]
    fn a_document_round_trips() {
        let l = ledger_of(3);
        let st = NodeStatus {
            version: "1.2.3".into(),
            scan_frequency: 180,
            labelled: Some(true),
            tpg_enabled: Some(true),
            converged: true,
            last_converged: Some(5),
            started: 1,
            content_changed: [("s".to_string(), "e2".to_string())].into(),
        };
        let doc = encode("ncn-w001", &l, Some(&st)).unwrap();
        assert_eq!(doc.annotations[GENERATION_ANNOTATION], "42");
        let back = decode("sbps-marshal-ledger-ncn-w001", &doc).unwrap();
        assert_eq!(back.node, "ncn-w001");
        assert_eq!(back.ledger, l);
        assert_eq!(back.status, Some(st));
    }

    #[test]
    fn five_thousand_images_fit_one_configmap() {
        let doc = encode("ncn-w001", &ledger_of(5000), None).unwrap();
        let json = serde_json::to_vec(&ledger_of(5000)).unwrap().len();
        eprintln!(
            "5000 images: ledger JSON {json} bytes, document {} bytes",
            doc.size()
        );
        assert!(doc.size() < MAX_BYTES / 2, "{} bytes", doc.size());
    }

    #[test]
    fn names_are_dns_subdomains() {
        assert_eq!(configmap_name("ncn-w001"), "sbps-marshal-ledger-ncn-w001");
        assert_eq!(
            configmap_name("NCN_W001.local."),
            "sbps-marshal-ledger-ncn-w001.local"
        );
        assert!(configmap_name(&"x".repeat(400)).len() <= 253);
    }

    #[test]
    fn bad_documents_are_named_errors() {
        let mut doc = encode("w", &ledger_of(1), None).unwrap();
        doc.binary_data
            .insert(LEDGER_KEY.into(), b"not gzip".to_vec());
        let e = decode("x", &doc).unwrap_err().to_string();
        assert!(e.contains("unreadable") && e.contains(LEDGER_KEY), "{e}");
        doc.binary_data.clear();
        assert!(matches!(decode("x", &doc), Err(CodecError::Missing { .. })));
        let mut newer = ledger_of(1);
        newer.version = 99;
        let doc = encode("w", &newer, None).unwrap();
        assert!(decode("x", &doc).unwrap_err().to_string().contains("newer"));
    }
}
