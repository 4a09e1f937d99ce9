//! The Kubernetes API: one client builder ([`KubeConnector`]), typed errors ([`error`]), and
//! the two things the agent does there: read Node labels (`inventory::node`) and keep
//! ConfigMaps ([`ConfigMapStore`]).
//!
//! kube-rs does the protocol (kubeconfig, authentication, typed objects); this module
//! adds the agent's rules on top: its TLS trust, a time bound on every request, a cap
//! on every answer, and errors that say whether something is *absent* or *unknown*.

#![warn(unreachable_pub)]

pub(crate) mod client;
pub(crate) mod configmaps;
pub mod error;
pub(crate) mod tls;

pub use client::{InCluster, KubeConnector, KubeSettings};
pub use configmaps::{ConfigMapStore, KubeConfigMaps, MemoryConfigMaps, StoredConfigMap};
pub use error::{KubeError, Op};
