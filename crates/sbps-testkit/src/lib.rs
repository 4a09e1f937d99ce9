//! The test kit of sbps-marshal: what tests, benchmarks and the VM suites need and the
//! shipped agent must not carry.
//!
//! * [`configfs`]: an in-memory configfs with the kernel's LIO semantics (the fake the
//!   contract suite proves against the real kernel);
//! * [`faults`]: [`faults::Faulty`] and [`faults::Recorder`], wrappers of any `Fs`;
//!   [`by_path`]: [`ByPath`], any `Fs` read one whole path per file;
//! * [`restore`]: builds a saved configuration into a configfs, as `targetctl restore`;
//! * [`s3`], [`ims`]: the one S3 double and the one IMS double (real-API status codes
//!   and bodies), over an in-memory store or a directory the tests edit;
//! * [`fixtures`]: a fleet of IMS images and PE objects shaped as CSM's;
//! * [`serve`]: a double on the loopback, stopped on drop;
//! * [`kube_api`]: the Kubernetes API double (HTTPS, authentication, Nodes, ConfigMaps);
//! * `spiffe` (cargo feature `spiffe`): the SPIFFE Workload API double (gRPC on a
//!   Unix socket), and [`tokens`], JWT-SVID-shaped tokens;
//! * [`moto`]: a real S3 server (moto) and an s3fs mount of it, for what a double
//!   cannot stand in for;
//! * [`rig`]: a LIO target on the fake configfs or the kernel's, set up and torn down;
//! * [`remote_fs`]: the fake configfs served to another process over a Unix socket;
//! * [`capture`]: every tracing event of a test binary, for the leak checks;
//! * the `testbed` binary: those doubles in one process for the VM suites.
//!
//! It depends on sbps-marshal and is only ever a dev-dependency of it, so nothing here
//! reaches the shipped binary (`cargo tree -p sbps-marshal -e normal` does not list it).
//! The library's own `#[cfg(test)]` unit tests do not use it, and must not: under
//! `cargo test --lib` the kit links the normal build of sbps-marshal, whose types are
//! not those of the crate under test. What needs the fake is an integration test.

pub mod by_path;
pub mod capture;
pub mod configfs;
pub mod faults;
pub mod fixtures;
pub mod ims;
pub mod kube_api;
pub mod moto;
pub mod remote_fs;
pub mod restore;
pub mod rig;
pub mod s3;
pub mod serve;
#[cfg(feature = "spiffe")]
pub mod spiffe;
pub mod tokens;

pub use by_path::ByPath;
pub use configfs::FakeConfigfs;
pub use faults::{FaultMode, Faulty, Recorder};
pub use restore::materialize;
