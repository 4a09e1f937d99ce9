//! What the source tests stand on, all of it from the test kit: the real S3 server
//! (moto) and an s3fs mount of it, doubles served on the loopback, the log capture and
//! SPIRE-shaped tokens.

pub use sbps_testkit::capture::Capture;
pub use sbps_testkit::moto::{credential_file, free_port, Moto, S3fsMount, ACCESS, SECRET};
pub use sbps_testkit::serve::Served;
pub use sbps_testkit::tokens::token_exp;
