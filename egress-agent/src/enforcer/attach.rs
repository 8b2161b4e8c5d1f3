//! Attaching the four programs to one cgroup through bpf_link, pinning the links, and then
//! releasing the links of earlier runs. New and old links are both attached for a moment
//! (cgroup links stack and all must allow), so enforcement never has a gap.

use std::{
    fs::File,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr, TracePoint, links::FdLink},
};

use super::{
    EnforcerError, Result,
    layout::{self, PinDir},
};
use crate::sys::cgroup::CgroupId;

/// cgroup sock_addr program names in the object, which are also the hook names in link pins.
pub const PROGRAMS: [&str; 4] = ["connect4", "connect6", "sendmsg4", "sendmsg6"];
/// Tracepoint programs (category `cgroup`), pinned with cgroup id 0 in their link names.
pub const TRACEPOINTS: [&str; 2] = ["cgroup_mkdir", "cgroup_rmdir"];

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr> {
    let p = ebpf.program_mut(name).ok_or(EnforcerError::Program {
        name,
        source: aya::programs::ProgramError::UnexpectedProgramType,
    })?;
    p.try_into()
        .map_err(|source| EnforcerError::Program { name, source })
}

/// Loads and attaches every program at `cgroup` and pins the links. Returns the link pins of
/// earlier runs, still attached, for the caller to release once the new programs have
/// everything they need (see [`PinDir::release`]).
pub fn attach_all(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    cgroup_id: CgroupId,
    pin: &PinDir,
) -> Result<Vec<std::path::PathBuf>> {
    let cgroup_dir = File::open(cgroup).map_err(|source| {
        EnforcerError::Cgroup(crate::sys::cgroup::CgroupError::Io {
            path: cgroup.into(),
            source,
        })
    })?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let before = pin.link_pins();
    let mut new_pins = Vec::new();
    let result = (|| -> Result<()> {
        for name in PROGRAMS {
            let prog = program(ebpf, name)?;
            prog.load()
                .map_err(|source| EnforcerError::Program { name, source })?;
            let id = prog
                .attach(&cgroup_dir, CgroupAttachMode::Single)
                .map_err(|source| EnforcerError::Program { name, source })?;
            let link = prog
                .take_link(id)
                .map_err(|source| EnforcerError::Program { name, source })?;
            let fd: FdLink = link
                .try_into()
                .map_err(|source| EnforcerError::Link { name, source })?;
            let path = pin
                .links()
                .join(layout::link_pin_name(name, cgroup_id, stamp));
            let pinned = fd.pin(&path).map_err(|source| EnforcerError::PinLink {
                path: path.clone(),
                source,
            })?;
            // The pin holds the link; our descriptor can go.
            drop(pinned);
            new_pins.push(path);
        }
        for name in TRACEPOINTS {
            let prog: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or(EnforcerError::Program {
                    name,
                    source: aya::programs::ProgramError::UnexpectedProgramType,
                })?
                .try_into()
                .map_err(|source| EnforcerError::Program { name, source })?;
            prog.load()
                .map_err(|source| EnforcerError::Program { name, source })?;
            let id = prog
                .attach("cgroup", name)
                .map_err(|source| EnforcerError::Program { name, source })?;
            let link = prog
                .take_link(id)
                .map_err(|source| EnforcerError::Program { name, source })?;
            let fd: FdLink = link
                .try_into()
                .map_err(|source| EnforcerError::Link { name, source })?;
            let path = pin.links().join(layout::link_pin_name(name, 0, stamp));
            fd.pin(&path).map_err(|source| EnforcerError::PinLink {
                path: path.clone(),
                source,
            })?;
            new_pins.push(path);
        }
        Ok(())
    })();
    if let Err(e) = result {
        // Leave the earlier links (if any) enforcing; undo the half-made new set.
        for p in &new_pins {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    Ok(before)
}
