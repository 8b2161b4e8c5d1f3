//! The `--policy` cgroups: policed by path, the cgroup and every cgroup below it, now and
//! whenever they are made again (a restarted service), before any process runs in them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tracing::{info, warn};

use crate::{
    config::PolicySpec,
    owner::EnforcerHandle,
    sys::{cgroup, kernel_path::KernelPath},
};
use egress_policy::policy::mode_name;

/// Applies every `--policy`. A cgroup outside `attach_cgroup` is refused: no program would
/// judge it.
pub async fn apply(
    handle: &EnforcerHandle,
    cgroup_mount: &Path,
    attach_cgroup: &Path,
    specs: &[PolicySpec],
) -> anyhow::Result<()> {
    for spec in specs {
        let (dir, exists) = policy_dir(cgroup_mount, &spec.cgroup)
            .with_context(|| format!("--policy for cgroup {}", spec.cgroup.display()))?;
        let path = KernelPath::of_dir(cgroup_mount, &dir)
            .with_context(|| format!("--policy for cgroup {}", spec.cgroup.display()))?;
        // A policy no program would judge is a configuration error, not a policy.
        if !dir.starts_with(attach_cgroup) {
            anyhow::bail!(
                "--policy for cgroup {}: it is outside --attach-cgroup {}, so no program would judge its egress",
                dir.display(),
                attach_cgroup.display()
            );
        }
        let existing = handle
            .set_path_policy(path.clone(), dir.clone(), spec.policy.clone())
            .await
            .with_context(|| format!("applying the policy of cgroup {}", dir.display()))?;
        if !exists {
            warn!(cgroup = %dir.display(), path = %path,
                "--policy cgroup does not exist yet; it is policed from the moment it is made");
        }
        info!(cgroup = %dir.display(), path = %path, mode = mode_name(spec.policy.mode),
            rules = spec.policy.rules.len(), existing_cgroups = existing,
            "policy applied to the cgroup and every cgroup below it, also when they are made again");
    }
    Ok(())
}

/// The directory a `--policy` names and whether it exists: as [`cgroup::resolve`] takes it, but
/// a cgroup that does not exist yet is taken below the cgroup v2 mount (policed once made).
fn policy_dir(mount: &Path, cg: &Path) -> anyhow::Result<(PathBuf, bool)> {
    match cgroup::resolve(cg) {
        Ok(dir) => Ok((dir, true)),
        Err(e) => {
            let dir = if cg.starts_with(mount) {
                cg.to_owned()
            } else {
                mount.join(cg.strip_prefix("/").unwrap_or(cg))
            };
            if dir.exists() {
                return Err(e.into());
            }
            Ok((dir, false))
        }
    }
}
