//! Finding the network namespace a container's processes use.
//!
//! - `--network host`: the agent's own;
//! - a container whose process Docker has told (its pid, or the pid of the container whose
//!   namespace it joins): that process's;
//! - a container being started, before Docker tells its pid: the namespace of a process in its
//!   cgroup that has left the agent's namespace. runc's init process enters the container's
//!   namespace before it runs the container's program, so the proxy can be listening before
//!   the program asks its first question.

use std::{fs, io, os::unix::fs::MetadataExt, path::PathBuf};

use super::netns::Netns;

/// Where to look for a container's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsSource {
    /// The agent's own namespace (`--network host`).
    Own,
    /// The namespace of this host pid.
    Pid(u32),
    /// The namespace of a process in one of these cgroup directories that is not in the
    /// agent's namespace.
    Cgroups(Vec<PathBuf>),
}

/// The namespace `source` names, if it can be found now; `own` is the agent's namespace's
/// inode.
pub fn find(source: &NetnsSource, own: u64) -> io::Result<Option<Netns>> {
    match source {
        NetnsSource::Own => Netns::current().map(Some),
        NetnsSource::Pid(pid) => Netns::open(&ns_path(*pid)).map(Some),
        NetnsSource::Cgroups(dirs) => {
            for dir in dirs {
                let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
                    continue;
                };
                for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                    let path = ns_path(pid);
                    if fs::metadata(&path).is_ok_and(|m| m.ino() != own)
                        && let Ok(ns) = Netns::open(&path)
                        && ns.inode() != own
                    {
                        return Ok(Some(ns));
                    }
                }
            }
            Ok(None)
        }
    }
}

fn ns_path(pid: u32) -> PathBuf {
    crate::host::get().path(format!("/proc/{pid}/ns/net"))
}
