//! sbps-marshal: the agent. Its adapters (inventory sources, LIO backends, the ledger's
//! file and ConfigMap, telemetry) and its runner; what decides lives in [`sbps_core`],
//! re-exported here under the same names.

pub use sbps_core::{desired, fleet, identity, paths, plan};

pub mod agent;
pub mod allocator;
mod atomic_file;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod inventory;
pub mod k8s;
pub mod ledger;
pub mod lio;
pub mod report;
pub mod telemetry;

#[cfg(test)]
mod layering;
