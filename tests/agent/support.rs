//! What the agent's scans stand on, from the test kit: the LIO rig (the fake configfs,
//! held to the kernel by the LIO suite), a real S3 server (moto) and the doubles
//! served on the loopback.

pub use sbps_testkit::moto::{credential_file, Moto};
pub use sbps_testkit::rig::{DynFs, Rig, IQN};
pub use sbps_testkit::serve::Served;
