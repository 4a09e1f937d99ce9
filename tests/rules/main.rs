//! The core's rules, one module per room: `desired()` over hand-made inventories, the
//! plan's safety rules one test each, its properties over generated histories, the
//! ledger and the fleet's numbers; `support` builds the values. Pure but for the
//! parsers and the mount check a few rules are taken through, as the agent takes them.

mod desired_rules;
mod plan_fleet;
mod plan_ledger;
mod plan_properties;
mod plan_rules;
mod support;
