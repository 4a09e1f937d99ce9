//! Integration tests of the inventory sources against real or double servers on 127.0.0.1.

#[path = "../hardening/capture.rs"]
mod capture;
mod gather;
mod ims;
mod kube;
mod mount;
mod node;
mod s3;
mod spire;
mod support;
