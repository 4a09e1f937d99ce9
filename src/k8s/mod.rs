//! The Kubernetes API: one client builder ([`client`]), typed errors ([`error`]), and
//! the two things the agent does there: read Node labels (`inventory::node`) and keep
//! ConfigMaps ([`configmaps`]).
//!
//! kube-rs does the protocol (kubeconfig, authentication, typed objects); this module
//! adds the agent's rules on top: its TLS trust, a time bound on every request, a cap
//! on every answer, and errors that say whether something is *absent* or *unknown*.

pub mod client;
pub mod configmaps;
pub mod error;
pub mod tls;

pub use client::{InCluster, KubeConnector, KubeSettings};
pub use configmaps::{ConfigMapStore, KubeConfigMaps, MemoryConfigMaps, StoredConfigMap};
pub use error::{KubeError, Op};
