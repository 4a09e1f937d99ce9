//! [`LedgerMirror`] on ConfigMaps: this node's document read, created and replaced with
//! the API's optimistic concurrency, and every node's document listed.
//!
//! Only this node's agent writes this node's document (one agent per host holds the
//! instance lock), so a conflict means the version read is stale (an operator's edit, or
//! a write whose answer was lost): the document is read again and the write repeated,
//! a few times at most. The node's own ledger is the truth for its numbers.

use std::sync::{Arc, Mutex};

use crate::fleet::{NodeDoc, NodeStatus};
use crate::k8s::configmaps::{ConfigMapStore, StoredConfigMap};
use crate::k8s::error::KubeError;
use crate::ledger::remote::{
    configmap_name, decode, encode, selector, BoxFut, Document, LedgerMirror, MirrorError,
};
use crate::ledger::Ledger;

/// Writes repeated after a conflict before the scan gives up (and numbers freeze).
const ATTEMPTS: usize = 3;

/// This node's ledger in a namespace's ConfigMaps.
pub struct ConfigMapMirror {
    store: Arc<dyn ConfigMapStore>,
    node: String,
    name: String,
    /// What this agent last read or wrote: the version a replace names, and the status
    /// a ledger-only write keeps.
    last: Mutex<Last>,
}

#[derive(Default)]
struct Last {
    resource_version: Option<String>,
    status: Option<NodeStatus>,
}

impl ConfigMapMirror {
    pub fn new(store: Arc<dyn ConfigMapStore>, node: &str) -> ConfigMapMirror {
        ConfigMapMirror {
            store,
            node: node.to_string(),
            name: configmap_name(node),
            last: Mutex::new(Last::default()),
        }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Last> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write(&self, doc: &Document) -> Result<(), KubeError> {
        let mut cm = StoredConfigMap {
            name: self.name.clone(),
            labels: doc.labels.clone(),
            annotations: doc.annotations.clone(),
            data: doc.data.clone(),
            binary_data: doc.binary_data.clone(),
            resource_version: self.last().resource_version.clone(),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match cm.resource_version {
                None => self.store.create(&cm).await,
                Some(_) => self.store.replace(&cm).await,
            };
            let stale = match result {
                Ok(stored) => {
                    self.last().resource_version = stored.resource_version;
                    return Ok(());
                }
                Err(e @ (KubeError::Conflict { .. } | KubeError::AlreadyExists { .. })) => e,
                // Deleted under us: made again.
                Err(KubeError::NotFound { .. }) if cm.resource_version.is_some() => {
                    cm.resource_version = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if attempt >= ATTEMPTS {
                return Err(stale);
            }
            let current = self.store.get(&self.name).await?;
            if let Some(c) = &current {
                let theirs = decode(&c.name, &to_doc(c)).map(|d| d.ledger.generation);
                tracing::warn!(
                    configmap = %self.name,
                    "the ledger document changed since this agent read it (generation there: {}); writing this node's ledger over it",
                    theirs.map_or_else(|e| format!("unreadable, {e}"), |g| g.to_string())
                );
            }
            cm.resource_version = current.and_then(|c| c.resource_version);
        }
    }
}

impl LedgerMirror for ConfigMapMirror {
    fn load(&self) -> BoxFut<'_, Result<Option<NodeDoc>, MirrorError>> {
        Box::pin(async move {
            let Some(cm) = self.store.get(&self.name).await.map_err(mirror_error)? else {
                self.last().resource_version = None;
                return Ok(None);
            };
            // Remembered even when the document is unreadable, so it can be replaced.
            self.last().resource_version = cm.resource_version.clone();
            let doc = decode(&cm.name, &to_doc(&cm))
                .map_err(|e| MirrorError::Unreadable(e.to_string()))?;
            self.last().status = doc.status.clone();
            Ok(Some(doc))
        })
    }

    fn store<'a>(
        &'a self,
        ledger: &'a Ledger,
        status: Option<&'a NodeStatus>,
    ) -> BoxFut<'a, Result<(), MirrorError>> {
        Box::pin(async move {
            let status = status.cloned().or_else(|| self.last().status.clone());
            let doc = encode(&self.node, ledger, status.as_ref())
                .map_err(|e| MirrorError::Unavailable(e.to_string()))?;
            self.write(&doc).await.map_err(mirror_error)?;
            self.last().status = status;
            Ok(())
        })
    }

    fn fleet(&self) -> BoxFut<'_, Result<Vec<NodeDoc>, MirrorError>> {
        Box::pin(async move {
            let maps = self.store.list(&selector()).await.map_err(mirror_error)?;
            let mut docs = Vec::with_capacity(maps.len());
            for cm in &maps {
                match decode(&cm.name, &to_doc(cm)) {
                    Ok(d) => docs.push(d),
                    Err(e) => tracing::warn!(configmap = %cm.name, "skipped: {e}"),
                }
            }
            Ok(docs)
        })
    }
}

fn to_doc(cm: &StoredConfigMap) -> Document {
    Document {
        labels: cm.labels.clone(),
        annotations: cm.annotations.clone(),
        data: cm.data.clone(),
        binary_data: cm.binary_data.clone(),
    }
}

fn mirror_error(e: KubeError) -> MirrorError {
    MirrorError::Unavailable(e.to_string())
}
