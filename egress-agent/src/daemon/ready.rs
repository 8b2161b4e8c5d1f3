//! The `ready` line: policies are in place (and the first sync with Docker is done).

use std::path::PathBuf;

use tracing::{error, info};

use crate::{enforcer::OpenReport, owner::EnforcerHandle};

/// What the `ready` line says about the start.
pub struct Ready {
    pub pin_dir: PathBuf,
    pub report: OpenReport,
}

impl Ready {
    /// Releases the programs of a replaced layout (policies are in place) and logs `ready`.
    pub async fn announce(&self, handle: &EnforcerHandle) {
        if let Err(e) = handle.release_previous().await {
            error!("releasing the replaced layout's programs: {e}");
        }
        let cgroups = handle.policies().await.map(|p| p.len()).unwrap_or(0);
        let containers = handle.containers().await.map(|c| c.len()).unwrap_or(0);
        info!(
            pin_dir = %self.pin_dir.display(),
            attach_cgroup = %self.report.attach_cgroup.display(),
            reused_pinned_state = self.report.reused,
            policed_cgroups = cgroups,
            known_containers = containers,
            "ready"
        );
    }
}
