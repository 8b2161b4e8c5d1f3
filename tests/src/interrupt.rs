//! Ctrl-C for long harness runs (the benchmark): SIGINT, SIGTERM and SIGHUP only raise a flag,
//! so the run can stop between steps and its guards (cgroups, pins, namespaces, containers,
//! child processes) still clean up on the way out. Handlers, unlike ignored signals, are reset
//! in children at exec, so the children still get the terminal's signal.

use std::sync::atomic::{AtomicBool, Ordering};

static RAISED: AtomicBool = AtomicBool::new(false);

extern "C" fn raise_flag(_: libc::c_int) {
    RAISED.store(true, Ordering::SeqCst);
}

/// Installs the handlers (once is enough; again is harmless).
pub fn catch() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the sigaction
    // struct is fully initialised (zeroed, then the fields we use).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = raise_flag as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// True once one of the signals arrived.
pub fn raised() -> bool {
    RAISED.load(Ordering::SeqCst)
}

/// Fails with `interrupted` once one of the signals arrived.
pub fn check() -> anyhow::Result<()> {
    if raised() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}
