//! Finding the host tools a run needs (nginx, wrk, nft, docker, ...), and saying which Debian
//! package brings a missing one.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

use anyhow::{Context, Result};

/// The executable `tool` on PATH, or in /usr/sbin, /sbin or /usr/bin (which sudo's PATH may
/// lack).
pub fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// [`find`], failing with the `apt-get install` line of `package` if `tool` is missing;
/// `needed_by` says what needs it.
pub fn require(tool: &str, package: &str, needed_by: &str) -> Result<PathBuf> {
    find(tool).with_context(|| {
        format!(
            "`{tool}` is missing; {needed_by} needs it: apt-get install -y --no-install-recommends {package}"
        )
    })
}
