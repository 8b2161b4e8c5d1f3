//! Where a measured process runs: a cgroup and/or a network namespace, both entered between
//! fork and exec (so the program runs there from its first instruction). Unlike `ip netns
//! exec`, the mount namespace stays the host's, so cgroup paths still resolve.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{cgroup::Cgroup, netns};

#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// A cgroup v2 directory.
    pub cgroup: Option<PathBuf>,
    /// A network namespace file (`/run/netns/NAME`).
    pub netns: Option<PathBuf>,
}

impl Placement {
    pub fn cgroup(cgroup: &Path) -> Self {
        Self {
            cgroup: Some(cgroup.to_owned()),
            netns: None,
        }
    }

    pub fn netns(mut self, netns: &Path) -> Self {
        self.netns = Some(netns.to_owned());
        self
    }

    /// A command for `program` that enters the cgroup and the namespace before it runs.
    #[track_caller]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = match &self.cgroup {
            Some(cg) => Cgroup::at(cg).command(program),
            None => Command::new(program),
        };
        if let Some(ns) = &self.netns {
            netns::enter_on_exec(&mut cmd, ns);
        }
        cmd
    }
}
