//! The allocator: jemalloc, set to give back at once what a scan frees.
//!
//! The agent is a long-running daemon whose scans build and drop tens of MiB of small
//! objects at thousands of images, between long-lived maps (the observation, the
//! ledger, the status) that are rebuilt a piece at a time. glibc's malloc cannot give
//! back a page that still holds one live object, so those pieces, scattered over the
//! pages the scans used, kept the agent 20 MiB above what it held at 5,000 images,
//! and more after every scan that changed something, even with two arenas and
//! `malloc_trim` before each scan (BENCHMARKS.md, "The agent's own memory").
//! jemalloc groups objects by size class into their own pages and returns a page
//! as soon as it is free: the resident size follows what the agent holds.
//!
//! The binary installs it with [`Jemalloc`] and [`malloc_conf!`](crate::malloc_conf);
//! the benchmark that measures the agent's memory does the same.

#![warn(unreachable_pub)]

use std::ffi::{c_char, CStr};

pub use tikv_jemallocator::Jemalloc;

/// jemalloc's options, compiled into the binary:
///
/// - `narenas:1`: one arena. The agent's allocating threads are two runtime workers
///   and short blocking jobs; per-CPU arenas (jemalloc's default, four per core) would
///   each keep their own partly used pages.
/// - `dirty_decay_ms:0,muzzy_decay_ms:0`: a freed page goes back to the kernel at
///   once, not ten seconds later. The peak of a scan is then what it holds, not what
///   it held plus what the last ten seconds freed.
/// - `tcache_max:1024`: per-thread caches for objects up to 1 KiB only (the strings and
///   small records a scan makes by the thousand); larger ones go to the arena, so an
///   idle blocking thread does not sit on megabytes.
///
/// `_RJEM_MALLOC_CONF` in the environment is read after these and wins, option by
/// option (jemalloc's `MALLOC_CONF`, under the prefix this build of jemalloc uses).
pub const CONF: &CStr = c"narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0,tcache_max:1024";

/// Declares jemalloc's `malloc_conf` in the crate that invokes it, set to [`CONF`].
/// jemalloc's own definition is weak, so a declaration in a library object the linker
/// never pulls in would be ignored without a word: the binary (and a benchmark or test
/// that wants the agent's allocator) invokes this at its root, next to its
/// `#[global_allocator]`. [`describe`] reads back what took effect.
#[macro_export]
macro_rules! malloc_conf {
    () => {
        #[allow(non_upper_case_globals)]
        #[export_name = "_rjem_malloc_conf"]
        static malloc_conf: $crate::allocator::Conf = $crate::allocator::Conf::COMPILED;
    };
}

/// The C `const char *malloc_conf` jemalloc reads at its first allocation.
#[repr(transparent)]
pub struct Conf(*const c_char);

// SAFETY: the pointer is to a `'static` C string that nothing writes.
unsafe impl Sync for Conf {}

impl Conf {
    /// Points at [`CONF`].
    pub const COMPILED: Conf = Conf(CONF.as_ptr());
}

/// The options jemalloc runs with, as it reports them (`opt.*`), for the start-up log:
/// `jemalloc narenas=1 dirty_decay_ms=0 muzzy_decay_ms=0 tcache_max=1024` when [`CONF`] took
/// effect and the environment left it alone.
pub fn describe() -> String {
    format!(
        "jemalloc narenas={} dirty_decay_ms={} muzzy_decay_ms={} tcache_max={}",
        shown::<u32>(c"opt.narenas"),
        shown::<isize>(c"opt.dirty_decay_ms"),
        shown::<isize>(c"opt.muzzy_decay_ms"),
        shown::<usize>(c"opt.tcache_max"),
    )
}

/// A `mallctl` value as text, `?` when it cannot be read.
fn shown<T: Copy + Default + std::fmt::Display>(name: &CStr) -> String {
    read::<T>(name).map_or_else(|| "?".into(), |v| v.to_string())
}

/// Reads one of jemalloc's `mallctl` values; `None` when it has no such name or
/// another type.
fn read<T: Copy + Default>(name: &CStr) -> Option<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>();
    // SAFETY: `value` is a `T` of `len` bytes, as mallctl is told; no new value is set.
    let r = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            (&mut value as *mut T).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (r == 0 && len == std::mem::size_of::<T>()).then_some(value)
}
