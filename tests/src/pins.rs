//! A test's own bpffs pin directory, `/sys/fs/bpf/egress-test-<tag>-<pid>`: everything under it
//! is detached and unpinned on drop (or [`PinDir::cleanup`]) through
//! `egress_agent::status::cleanup`, the code of `egress-agent cleanup`. Pin directories of test
//! processes that were killed before their cleanup are swept when a new one is made: their
//! programs would keep judging every cgroup below their attach point (and deny new containers
//! as unclassified).

use std::{
    fs,
    path::{Path, PathBuf},
};

use egress_agent::enforcer::layout;
use serde_json::Value;

use crate::agent;

/// Where bpffs is mounted.
const BPFFS: &str = "/sys/fs/bpf";
/// Name prefixes of test pin directories (`egress-e2e-` is what older harnesses used).
const PREFIXES: &[&str] = &["egress-test-", "egress-e2e-"];

/// A pin directory of the test's own; cleaned up on drop.
#[derive(Debug)]
pub struct PinDir {
    pub path: PathBuf,
    cleaned: bool,
}

impl PinDir {
    pub fn new(tag: &str) -> Self {
        sweep_stale();
        let path = PathBuf::from(format!("{BPFFS}/egress-test-{tag}-{}", std::process::id()));
        if path.exists() {
            cleanup(&path);
        }
        Self {
            path,
            cleaned: false,
        }
    }

    /// Detaches and unpins everything now (the agent using it must be stopped).
    pub fn cleanup(&mut self) {
        if !self.cleaned {
            cleanup(&self.path);
            self.cleaned = true;
        }
    }

    /// The agent's view of the directory (its layout: maps, links, checks).
    pub fn dir(&self) -> layout::PinDir {
        layout::PinDir::new(&self.path)
    }

    /// Path of a pinned map.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir().map(name)
    }

    /// `egress-agent status --json --pin-dir P`, parsed.
    #[track_caller]
    pub fn status(&self) -> Value {
        agent::status_json(&self.path)
    }

    /// The `containers` entry of the status with this full id, if any.
    #[track_caller]
    pub fn container(&self, id: &str) -> Option<Value> {
        self.status()["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["id"] == id)
            .cloned()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Detaches and unpins everything under `path`, then removes the directory.
fn cleanup(path: &Path) {
    if let Err(e) = egress_agent::status::cleanup(path) {
        eprintln!("warning: cleaning up pin directory {}: {e}", path.display());
    }
    let _ = fs::remove_dir(path);
}

/// Cleans up the pin directories of test processes that no longer run.
fn sweep_stale() {
    let Ok(rd) = fs::read_dir(BPFFS) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing the stale pin directory {}", e.path().display());
            cleanup(&e.path());
        }
    }
}
