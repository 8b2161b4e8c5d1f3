//! What can go wrong in the enforcer, and how a failed insert is described: one line that names
//! the owner, what did not fit, the map and its capacity, and what was done about it.

use std::{fmt, path::PathBuf};

use aya::maps::MapError;

use super::{ids::NoFreeId, layout};
use crate::sys::{
    cgroup::{self, CgroupId},
    mounts,
};
use egress_common::container::ContainerId;

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Pin(#[from] layout::PinIoError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error(
        "program {name}: the kernel's BTF (/sys/kernel/btf/vmlinux) is needed for the BPF LSM and could not be read: {detail}"
    )]
    Btf { name: &'static str, detail: String },
    #[error("program {name}: could not attach it through a new bpf_link: {source}")]
    RawLink {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("could not pin a link at {path}: {source}")]
    PinRawLink {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("program {name}: link: {source}")]
    Link {
        name: &'static str,
        source: aya::programs::links::LinkError,
    },
    #[error("pinning link {path}: {source}")]
    PinLink {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error(
        "{owner}: writing its DNS redirect (policy {policy_id}) into map EG_DNS_REDIR: {source}; its DNS is denied (reason dns_proxy_not_ready) until it fits"
    )]
    DnsRedirect {
        /// The owner, as `Owner` displays it.
        owner: String,
        policy_id: u32,
        source: MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error(transparent)]
    NoPolicyId(#[from] NoFreeId),
    #[error(
        "cgroup {cgroup}: not policed: the agent polices at most {limit} cgroups of its own (--policy), its share of map EG_CGRP_POLICY; the rest is kept for container cgroups"
    )]
    CgroupShareFull { cgroup: CgroupId, limit: u32 },
    #[error("cgroup {cgroup}: {what}: {source}")]
    Write {
        cgroup: CgroupId,
        what: String,
        source: MapError,
    },
    /// An insert failed and the owner was failed closed; see [`FailedClosed`].
    #[error(transparent)]
    FailedClosed(Box<FailedClosed>),
    #[error("map {map}: writing the entry of cgroup path {path}: {source} (map full?)")]
    PathWrite {
        map: &'static str,
        path: String,
        source: MapError,
    },
    #[error(
        "cgroup path {path} is {len} bytes long: the cgroup_mkdir tracepoint names paths of at most {max} bytes exactly, so a re-made cgroup there could not be recognised"
    )]
    PathTooLong {
        path: String,
        len: usize,
        max: usize,
    },
    #[error(
        "cgroup path {path} is {depth} levels deep: the cgroup_mkdir tracepoint recognises the cgroups below a policed path only down to {max} levels"
    )]
    PathTooDeep {
        path: String,
        depth: usize,
        max: usize,
    },
    #[error(
        "a policy on the cgroup v2 root would police every cgroup of the host; name a cgroup below it"
    )]
    RootPath,
}

impl EnforcerError {
    /// True for a fail-closed error the caller has been told about before (the same owner, the
    /// same map, with no success in between): log it once, not at every retry.
    pub fn is_repeated(&self) -> bool {
        matches!(self, Self::FailedClosed(f) if f.repeated)
    }
}

/// Whose policy it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    Container(ContainerId),
    /// A cgroup policed on its own (`--policy`).
    Cgroup(CgroupId),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Container(c) => write!(f, "container {}", c.short()),
            Owner::Cgroup(cg) => write!(f, "cgroup {cg}"),
        }
    }
}

/// An insert into `map` failed; the owner was failed closed as `outcome` says.
#[derive(Debug)]
pub struct FailedClosed {
    pub owner: Owner,
    /// What did not fit (`rule 10.0.0.5:443`, `its entry`, ...).
    pub what: String,
    pub map: &'static str,
    pub capacity: u32,
    pub source: MapError,
    /// What was done so that nothing runs unpoliced.
    pub outcome: String,
    /// Reported before (see [`EnforcerError::is_repeated`]).
    pub repeated: bool,
}

impl fmt::Display for FailedClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} did not fit in map {} ({} entries): {}; {}",
            self.owner,
            self.what,
            self.map,
            self.capacity,
            cause(&self.source),
            self.outcome
        )
    }
}

impl std::error::Error for FailedClosed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// "the map is full" for the errors a full map gives, the error itself otherwise.
pub fn cause(e: &MapError) -> String {
    if let MapError::SyscallError(aya::sys::SyscallError { io_error, .. }) = e
        && matches!(
            io_error.raw_os_error(),
            Some(libc::E2BIG) | Some(libc::ENOSPC) | Some(libc::ENOMEM)
        )
    {
        return format!("the map is full ({io_error})");
    }
    e.to_string()
}

/// A delete of a key that is not there (aya reports ENOENT from the syscall as it is).
pub fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(aya::sys::SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall(errno: i32) -> MapError {
        MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: std::io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn one_line_names_the_owner_the_map_its_size_and_the_outcome() {
        let id: ContainerId = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899"
            .parse()
            .unwrap();
        let e = FailedClosed {
            owner: Owner::Container(id),
            what: "rule 10.0.0.5:443".into(),
            map: "EG_ALLOW_V4",
            capacity: 262_144,
            source: syscall(libc::E2BIG),
            outcome: "denying all its egress until its policy fits".into(),
            repeated: false,
        };
        let line = e.to_string();
        for part in [
            "container 3f4e5d6c7b8a",
            "rule 10.0.0.5:443",
            "EG_ALLOW_V4 (262144 entries)",
            "the map is full",
            "denying all its egress",
        ] {
            assert!(line.contains(part), "{part:?} missing in {line:?}");
        }
        assert!(!line.contains('\n'));
        assert!(!EnforcerError::FailedClosed(Box::new(e)).is_repeated());
    }

    #[test]
    fn other_errors_are_told_as_they_are() {
        assert!(!cause(&syscall(libc::EPERM)).contains("full"));
        assert!(is_not_found(&syscall(libc::ENOENT)));
        assert!(!is_not_found(&syscall(libc::E2BIG)));
    }
}
