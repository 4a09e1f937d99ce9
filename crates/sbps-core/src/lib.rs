//! The pure core of sbps-marshal: everything that decides, and nothing that touches
//! the world.
//!
//! A scan flows one way: the adapters fill an [`inventory::Inventory`], [`desired`]
//! decides which images this node projects, [`plan`] turns that, the [`ledger`] and the
//! observed [`lio`] model into operations, and the agent applies them. Every function
//! here takes values (the time included) and returns values, so every rule can be
//! property-tested and the compiler keeps I/O out: this crate depends on no runtime,
//! no HTTP client and no clock.

#![warn(unreachable_pub)]

pub mod desired;
pub mod fleet;
pub mod identity;
pub mod inventory;
pub mod ledger;
pub mod lio;
pub mod paths;
pub mod plan;
