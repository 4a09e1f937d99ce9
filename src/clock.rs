//! The wall clock, read in one place: the core takes the time as a value, and the
//! agent reads it here.

#![warn(unreachable_pub)]

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
