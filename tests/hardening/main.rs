//! Hardening suite (issue "Hardening"): crash consistency, a hostile inventory
//! corpus, bounded fuzzing of every parser, TLS policy, secrets, resource limits.
//! Everything binds 127.0.0.1 only.

#[path = "../support/mod.rs"]
mod lio_support;
#[path = "../sources/support.rs"]
mod support;

mod capture;
mod corpus;
mod crash;
mod doubles;
mod fuzz;
mod kernel_kill;
mod limits;
mod secrets;
mod tls;
