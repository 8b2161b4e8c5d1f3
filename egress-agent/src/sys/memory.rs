//! Giving freed heap back to the kernel.
//!
//! Loading the programs reads and parses the kernel's BTF (several MiB, freed at once), and
//! glibc keeps freed memory in its arenas: without a trim the agent's resident set would carry
//! that peak for its whole life. [`spawn_trimmer`] trims once at start and then every minute,
//! which also returns what a burst of containers (or of DNS questions) left behind.

use std::time::Duration;

/// How often freed heap is handed back.
const EVERY: Duration = Duration::from_secs(60);

/// Returns the free pages of every malloc arena to the kernel (no-op off glibc).
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keeps glibc's malloc to one arena: with an arena per thread that ever allocated, a
/// multi-threaded runtime spreads a small heap over several partly used arenas (the agent's
/// threads allocate little and briefly; they do not contend).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets a glibc tunable; called before the runtime starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Trims now and then every minute, for the life of the runtime.
pub fn spawn_trimmer() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            release_free_heap();
        }
    })
}
