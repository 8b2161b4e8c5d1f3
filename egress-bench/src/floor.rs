//! The kernel's own price of a cgroup `sock_addr` hook: a two-instruction program (`return 1`,
//! allow) attached to a cgroup of its own; and the same after one call of
//! `bpf_get_current_cgroup_id`, the helper any per-cgroup policy starts with. Whatever a client pays there over a cgroup without
//! any program is the hook machinery every `connect4`/`sendmsg4` program pays (the cgroup walk,
//! the context set-up, the socket lock around `sendmsg`), not ours; what the enforcer pays over
//! it is ours.
//!
//! The program is loaded from raw instructions with bpf(2) because it is not part of the
//! product's object and aya loads programs only from ELF objects. Each program is attached
//! through a BPF link held by this process; dropping the [`Floor`] closes the links (which
//! detaches the programs) before its cgroup goes.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use anyhow::{Context, Result};
use egress_agent::sys::bpf::{CgroupAttachType, sys_bpf};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;

/// Instructions are 8 bytes each: code, dst/src registers, offset, immediate.
/// BPF_ALU64 | BPF_MOV | BPF_K: r0 = 1 (allow).
const ALLOW: [u8; 8] = [0xb7, 0x00, 0, 0, 1, 0, 0, 0];
/// BPF_JMP | BPF_EXIT.
const EXIT: [u8; 8] = [0x95, 0x00, 0, 0, 0, 0, 0, 0];
/// BPF_JMP | BPF_CALL of helper 80, `bpf_get_current_cgroup_id`.
const CALL_CGROUP_ID: [u8; 8] = [0x85, 0x00, 0, 0, 80, 0, 0, 0];

/// What the minimal program does before it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorProgram {
    /// `r0 = 1; exit`: the hook machinery alone.
    Empty,
    /// `call bpf_get_current_cgroup_id; r0 = 1; exit`: plus the helper every per-cgroup
    /// policy needs first (a helper call, on this CPU with its return thunk).
    CgroupId,
}

impl FloorProgram {
    fn insns(self) -> Vec<[u8; 8]> {
        match self {
            Self::Empty => vec![ALLOW, EXIT],
            Self::CgroupId => vec![CALL_CGROUP_ID, ALLOW, EXIT],
        }
    }
}

/// bpf(2) for a command that returns a new descriptor.
fn bpf_fd(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<OwnedFd> {
    let fd = sys_bpf(cmd, attr)?;
    // SAFETY: both commands used here return a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put(attr: &mut [u8], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Loads the allow-all program for one attach type.
fn load(program: FloorProgram, hook: CgroupAttachType) -> io::Result<OwnedFd> {
    let insns = program.insns();
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"hook_floor");
    // union bpf_attr for BPF_PROG_LOAD, up to expected_attach_type.
    let mut attr = [0u8; 72];
    put(&mut attr, 0, &BPF_PROG_TYPE_CGROUP_SOCK_ADDR.to_ne_bytes());
    put(&mut attr, 4, &(insns.len() as u32).to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 48, &name);
    put(&mut attr, 68, &(hook as u32).to_ne_bytes());
    bpf_fd(BPF_PROG_LOAD, &mut attr)
}

/// Attaches `prog` to `cgroup` for `hook` through a new link.
fn link(prog: &OwnedFd, cgroup: &std::fs::File, hook: CgroupAttachType) -> io::Result<OwnedFd> {
    // union bpf_attr for BPF_LINK_CREATE: prog_fd, target_fd, attach_type, flags.
    let mut attr = [0u8; 16];
    put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &(cgroup.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 8, &(hook as u32).to_ne_bytes());
    bpf_fd(BPF_LINK_CREATE, &mut attr)
}

/// Allow-all programs attached to one cgroup for the given hooks, detached on drop.
pub struct Floor {
    // Links first: they are dropped (detached) before the programs' descriptors.
    _links: Vec<OwnedFd>,
    _progs: Vec<OwnedFd>,
}

impl Floor {
    pub fn attach(
        cgroup: &Path,
        program: FloorProgram,
        hooks: &[CgroupAttachType],
    ) -> Result<Self> {
        let dir = std::fs::File::open(cgroup)
            .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        let mut links = Vec::new();
        let mut progs = Vec::new();
        for &hook in hooks {
            let prog = load(program, hook).with_context(|| {
                format!(
                    "loading the allow-all {} program ({program:?})",
                    hook.name()
                )
            })?;
            links.push(link(&prog, &dir, hook).with_context(|| {
                format!(
                    "attaching the allow-all {} program to {}",
                    hook.name(),
                    cgroup.display()
                )
            })?);
            progs.push(prog);
        }
        Ok(Self {
            _links: links,
            _progs: progs,
        })
    }
}
