//! The signals the daemon answers: SIGINT/SIGTERM stop it, SIGHUP reloads the policy file.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::debug;

use super::handle::DaemonHandle;

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, so a
/// signal that arrives while the agent starts up is not lost (nor fatal).
pub fn shutdown() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// The SIGHUP stream, installed at once (SIGHUP's default action would end the agent).
pub fn hangups() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}

/// Reloads on every SIGHUP (the reload logs what it did) until the stream ends.
pub async fn reload_on_hangup(mut hup: Signal, daemon: DaemonHandle) {
    while hup.recv().await.is_some() {
        if let Err(e) = daemon.reload().await {
            debug!("SIGHUP: {e}");
        }
    }
}
