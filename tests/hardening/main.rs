//! Hardening suite (issue "Hardening"): crash consistency, a hostile inventory
//! corpus, bounded fuzzing of every parser, TLS policy, secrets, resource limits.
//! Everything binds 127.0.0.1 only.

mod corpus;
mod crash;
mod fuzz;
mod kernel_kill;
mod limits;
mod secrets;
mod support;
mod tls;
