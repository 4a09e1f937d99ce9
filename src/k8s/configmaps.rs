//! ConfigMaps of one namespace, with the API's optimistic concurrency.
//!
//! [`ConfigMapStore`] is the small surface a persisted document needs: read by name,
//! create (failing when the name exists), replace *the version that was read*
//! (failing when someone wrote in between), list by label. [`KubeConfigMaps`] is
//! the Kubernetes API behind it; [`MemoryConfigMaps`] keeps the same rules in memory
//! for tests of the code built on top.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::Api;

use super::client::KubeConnector;
use super::error::{KubeError, Op, CONFIGMAP_DATA_LIMIT};

/// A ConfigMap as the store reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredConfigMap {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, String>,
    /// `binaryData`, decoded (the API carries it base64-encoded).
    pub(crate) binary_data: BTreeMap<String, Vec<u8>>,
    /// The version read, which a replace must name; `None` for one not created yet.
    pub resource_version: Option<String>,
}

impl StoredConfigMap {
    pub fn new(name: &str) -> StoredConfigMap {
        StoredConfigMap {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Bytes the API counts against [`CONFIGMAP_DATA_LIMIT`]: the `data` values and the
    /// decoded `binaryData` values.
    pub fn data_size(&self) -> usize {
        let text: usize = self.data.values().map(String::len).sum();
        text + self.binary_data.values().map(Vec::len).sum::<usize>()
    }
}

/// ConfigMaps of one namespace.
pub trait ConfigMapStore: Send + Sync {
    /// The namespace this store reads and writes.
    fn namespace(&self) -> &str;
    /// The ConfigMap, or `None` when the API says it does not exist.
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredConfigMap>, KubeError>>;
    /// Creates it; [`KubeError::AlreadyExists`] when the name is taken.
    fn create<'a>(
        &'a self,
        cm: &'a StoredConfigMap,
    ) -> BoxFuture<'a, Result<StoredConfigMap, KubeError>>;
    /// Replaces the version `cm.resource_version` names; [`KubeError::Conflict`] when
    /// the stored one is newer, [`KubeError::NotFound`] when it was deleted.
    fn replace<'a>(
        &'a self,
        cm: &'a StoredConfigMap,
    ) -> BoxFuture<'a, Result<StoredConfigMap, KubeError>>;
    /// Every ConfigMap matching a label selector (`key=value,other`).
    fn list<'a>(
        &'a self,
        label_selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredConfigMap>, KubeError>>;
}

/// The Kubernetes API's ConfigMaps of one namespace.
pub struct KubeConfigMaps {
    connector: Arc<KubeConnector>,
    namespace: String,
}

impl KubeConfigMaps {
    pub fn new(connector: Arc<KubeConnector>, namespace: &str) -> KubeConfigMaps {
        KubeConfigMaps {
            connector,
            namespace: namespace.to_string(),
        }
    }

    fn op(&self, verb: &'static str, name: Option<&str>) -> Op {
        let op = Op::new(verb, "configmaps").in_namespace(&self.namespace);
        match name {
            Some(n) => op.named(n),
            None => op,
        }
    }

    fn api(&self, client: kube::Client) -> Api<ConfigMap> {
        Api::namespaced(client, &self.namespace)
    }
}

impl ConfigMapStore for KubeConfigMaps {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredConfigMap>, KubeError>> {
        Box::pin(async move {
            let op = self.op("get", Some(name));
            match self
                .connector
                .run(op.clone(), |c| async move { self.api(c).get(name).await })
                .await
            {
                Ok(cm) => from_api(&op, cm).map(Some),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn create<'a>(
        &'a self,
        cm: &'a StoredConfigMap,
    ) -> BoxFuture<'a, Result<StoredConfigMap, KubeError>> {
        Box::pin(async move {
            let op = self.op("create", Some(&cm.name));
            let mut body = to_api(cm);
            // A create names no version; the API would refuse one.
            body.metadata.resource_version = None;
            let made = self
                .connector
                .run(op.clone(), |c| async move {
                    self.api(c).create(&PostParams::default(), &body).await
                })
                .await?;
            from_api(&op, made)
        })
    }

    fn replace<'a>(
        &'a self,
        cm: &'a StoredConfigMap,
    ) -> BoxFuture<'a, Result<StoredConfigMap, KubeError>> {
        Box::pin(async move {
            let op = self.op("update", Some(&cm.name));
            // Without a version the API would overwrite whatever is stored: refuse.
            if cm.resource_version.is_none() {
                return Err(KubeError::Invalid {
                    op,
                    message: "replace without the resourceVersion that was read".into(),
                });
            }
            let body = to_api(cm);
            let name = cm.name.as_str();
            let stored = self
                .connector
                .run(op.clone(), |c| async move {
                    self.api(c)
                        .replace(name, &PostParams::default(), &body)
                        .await
                })
                .await?;
            from_api(&op, stored)
        })
    }

    fn list<'a>(
        &'a self,
        label_selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredConfigMap>, KubeError>> {
        Box::pin(async move {
            let op = self.op("list", None);
            let lp = ListParams::default().labels(label_selector);
            let list = self
                .connector
                .run(op.clone(), |c| async move { self.api(c).list(&lp).await })
                .await?;
            list.items.into_iter().map(|cm| from_api(&op, cm)).collect()
        })
    }
}

fn to_api(cm: &StoredConfigMap) -> ConfigMap {
    let nonempty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(cm.name.clone()),
            labels: nonempty(&cm.labels),
            annotations: nonempty(&cm.annotations),
            resource_version: cm.resource_version.clone(),
            ..Default::default()
        },
        data: nonempty(&cm.data),
        binary_data: (!cm.binary_data.is_empty()).then(|| {
            let bytes = cm.binary_data.iter();
            bytes
                .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
                .collect()
        }),
        ..Default::default()
    }
}

fn from_api(op: &Op, cm: ConfigMap) -> Result<StoredConfigMap, KubeError> {
    let unexpected = |detail: &str| KubeError::Unexpected {
        op: op.clone(),
        detail: detail.to_string(),
    };
    let name = cm
        .metadata
        .name
        .ok_or_else(|| unexpected("ConfigMap without metadata.name"))?;
    Ok(StoredConfigMap {
        name,
        labels: cm.metadata.labels.unwrap_or_default(),
        annotations: cm.metadata.annotations.unwrap_or_default(),
        data: cm.data.unwrap_or_default(),
        binary_data: (cm.binary_data.unwrap_or_default().into_iter())
            .map(|(k, v)| (k, v.0))
            .collect(),
        resource_version: cm.metadata.resource_version,
    })
}

/// The same rules in memory: versions, conflicts, existing names, the size limit.
#[derive(Default)]
pub struct MemoryConfigMaps {
    namespace: String,
    state: Mutex<(u64, BTreeMap<String, StoredConfigMap>)>,
}

impl MemoryConfigMaps {
    pub fn new(namespace: &str) -> MemoryConfigMaps {
        MemoryConfigMaps {
            namespace: namespace.to_string(),
            state: Mutex::new((0, BTreeMap::new())),
        }
    }

    fn write(
        &self,
        verb: &'static str,
        cm: &StoredConfigMap,
    ) -> Result<StoredConfigMap, KubeError> {
        let op = Op::new(verb, "configmaps")
            .in_namespace(&self.namespace)
            .named(&cm.name);
        if cm.data_size() > CONFIGMAP_DATA_LIMIT {
            return Err(KubeError::TooLarge {
                op,
                message: format!("Too long: may not be more than {CONFIGMAP_DATA_LIMIT} bytes"),
            });
        }
        if verb == "update" && cm.resource_version.is_none() {
            return Err(KubeError::Invalid {
                op,
                message: "replace without the resourceVersion that was read".into(),
            });
        }
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (version, maps) = &mut *guard;
        let current = maps.get(&cm.name).map(|c| c.resource_version.clone());
        match (verb, current) {
            ("create", Some(_)) => {
                return Err(KubeError::AlreadyExists {
                    op,
                    message: format!("configmaps {:?} already exists", cm.name),
                })
            }
            ("update", None) => {
                return Err(KubeError::NotFound {
                    op,
                    message: format!("configmaps {:?} not found", cm.name),
                })
            }
            ("update", Some(v)) if v != cm.resource_version => {
                return Err(KubeError::Conflict {
                    op,
                    message: "the object has been modified".into(),
                })
            }
            _ => {}
        }
        *version += 1;
        let stored = StoredConfigMap {
            resource_version: Some(version.to_string()),
            ..cm.clone()
        };
        maps.insert(cm.name.clone(), stored.clone());
        Ok(stored)
    }
}

impl ConfigMapStore for MemoryConfigMaps {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredConfigMap>, KubeError>> {
        let found = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .get(name)
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn create<'a>(
        &'a self,
        cm: &'a StoredConfigMap,
    ) -> BoxFuture<'a, Result<StoredConfigMap, KubeError>> {
        let r = self.write("create", cm);
        Box::pin(async move { r })
    }

    fn replace<'a>(
        &'a self,
        cm: &'a StoredConfigMap,
    ) -> BoxFuture<'a, Result<StoredConfigMap, KubeError>> {
        let r = self.write("update", cm);
        Box::pin(async move { r })
    }

    fn list<'a>(
        &'a self,
        label_selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredConfigMap>, KubeError>> {
        let r = match parse_equality_selector(label_selector) {
            Some(want) => Ok(self
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .values()
                .filter(|cm| want.iter().all(|(k, v)| cm.labels.get(k) == Some(v)))
                .cloned()
                .collect()),
            None => Err(KubeError::Invalid {
                op: Op::new("list", "configmaps").in_namespace(&self.namespace),
                message: format!("unsupported label selector {label_selector:?}"),
            }),
        };
        Box::pin(async move { r })
    }
}

/// `a=b,c=d` as pairs (the only selectors the in-memory store understands).
fn parse_equality_selector(s: &str) -> Option<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.strip_prefix('=').unwrap_or(v);
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_size_counts_values_only() {
        let mut cm = StoredConfigMap::new("x");
        cm.data.insert("ledger.json".into(), "12345".into());
        cm.data.insert("k".into(), "6".into());
        assert_eq!(cm.data_size(), 6);
    }

    #[test]
    fn api_round_trip_keeps_everything() {
        let mut cm = StoredConfigMap::new("sbps-ledger-ncn-w001");
        cm.labels.insert("app".into(), "sbps-marshal".into());
        cm.annotations.insert("a".into(), "b".into());
        cm.data.insert("ledger.json".into(), "{}".into());
        cm.resource_version = Some("7".into());
        let op = Op::new("get", "configmaps");
        assert_eq!(from_api(&op, to_api(&cm)).unwrap(), cm);
    }

    #[test]
    fn binary_data_round_trips_and_counts() {
        let mut cm = StoredConfigMap::new("x");
        cm.binary_data
            .insert("ledger.json.gz".into(), vec![0x1f, 0x8b, 0, 255]);
        cm.data.insert("status.json".into(), "{}".into());
        assert_eq!(cm.data_size(), 6);
        assert_eq!(
            from_api(&Op::new("get", "configmaps"), to_api(&cm)).unwrap(),
            cm
        );
    }

    #[test]
    fn selectors() {
        assert_eq!(
            parse_equality_selector("a=b,c==d"),
            Some(vec![("a".into(), "b".into()), ("c".into(), "d".into())])
        );
        assert_eq!(parse_equality_selector("a"), None);
        assert_eq!(parse_equality_selector(""), Some(vec![]));
    }
}
