//! The process's own heap.

/// Gives the memory freed since back to the system. glibc's allocator keeps freed pages of its
/// arenas, and after a large allocation it raises its own thresholds so that later ones stay in
/// them: after a burst (an interval of a churning host, the unwind table of a 150 MB library)
/// the resident size would otherwise stay at the burst's peak for the life of the agent.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
