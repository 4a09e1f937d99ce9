//! The inventory sources: the adapters (S3, IMS, manifests, SPIRE, node label, mount)
//! that fill an [`Inventory`], the plain values [`sbps_core::inventory`] defines and
//! [`crate::desired`] decides from. [`gather::Sources::gather`] runs them all.

#![warn(unreachable_pub)]

pub mod gather;
pub mod ims;
pub mod manifest;
pub mod mount;
pub mod node;
pub mod retry;
pub mod s3;
pub mod spire;

pub use sbps_core::inventory::*;
