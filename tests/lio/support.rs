//! What the LIO suites stand on: the test kit's rig (a target on the fake configfs or
//! the kernel's, set up and torn down) and its helpers.

pub use sbps_testkit::rig::*;
