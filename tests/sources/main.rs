//! Integration tests of the inventory sources against real or double servers on
//! 127.0.0.1: S3 (moto and the S3 double), IMS, the s3fs mount, the Kubernetes API
//! (ledger store and Node label), and the SPIRE token providers (the spire-agent CLI;
//! with the cargo feature `spiffe`, the Workload API client against its double).

mod gather;
mod ims;
mod kube;
mod mount;
mod node;
mod s3;
#[cfg(feature = "spiffe")]
mod spiffe;
mod spire;
mod support;
