//! Forwards the programs' own aya-log records (debug detail of denials) into `tracing`.

use std::os::fd::AsRawFd;

use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;
use tracing::warn;

/// Reads kernel log records in a background task when a tokio runtime is running.
pub fn spawn(logger: EbpfLogger<&'static dyn log::Log>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let fd = logger.as_raw_fd();
        // SAFETY: the logger owns the ring buffer's descriptor for as long as the AsyncFd lives.
        let mut afd = match unsafe { AsyncFd::register(logger) } {
            Ok(a) => a,
            Err(e) => {
                warn!(fd, "kernel log reader unavailable: {e}");
                return;
            }
        };
        loop {
            let Ok(mut guard) = afd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
