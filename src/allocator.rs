//! The allocator's settings: how much of what a scan frees stays resident.
//!
//! The agent is a long-running daemon whose scans build and drop tens of MiB of small
//! objects at thousands of images; glibc's defaults would keep most of that between
//! scans (BENCHMARKS.md, "The agent's own memory").

#![warn(unreachable_pub)]

/// Bounds what glibc's malloc keeps beyond what the agent holds. By default every
/// thread that allocates may get its own arena (up to 8 per core: the blocking pool's
/// stat workers, the apply workers), and the mmap threshold rises to the largest block
/// freed, so the megabyte buffers of a scan (listings, saveconfig.json) end up in
/// arenas that keep their pages. At 5,000 images that doubled the peak RSS over the
/// peak heap (`cargo bench --bench scan`, BENCHMARKS.md). Two arenas (one per worker
/// of the runtime) and a fixed 128 KiB threshold: big buffers are mapped and returned
/// to the kernel when freed. An `MALLOC_ARENA_MAX`/`MALLOC_MMAP_THRESHOLD_` in the
/// environment still wins (glibc reads it first; this only sets what it left alone).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |k: &str| std::env::var_os(k).is_none();
        // SAFETY: mallopt only sets malloc parameters; called before threads allocate.
        unsafe {
            if unset("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if unset("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            }
        }
    }
}

/// Gives the pages the allocator holds free back to the kernel. A scan at thousands of
/// images allocates and frees tens of MiB of small objects; what stays free between
/// long-lived ones would otherwise stay resident and grow from scan to scan.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
