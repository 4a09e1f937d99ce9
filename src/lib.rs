pub mod cli;
pub mod config;
pub mod desired;
pub mod identity;
pub mod inventory;
pub mod ledger;
pub mod lio;
pub mod plan;
