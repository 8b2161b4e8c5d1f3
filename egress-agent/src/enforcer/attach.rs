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
    programs::{
        CgroupAttachMode, CgroupSockAddr, Program, ProgramError, TracePoint, links::FdLink,
    },
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

fn prog_err(name: &'static str) -> impl FnOnce(ProgramError) -> EnforcerError {
    move |source| EnforcerError::Program { name, source }
}

/// The program `name` of the object, as type `P`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| prog_err(name)(ProgramError::UnexpectedProgramType))?
        .try_into()
        .map_err(prog_err(name))
}

/// Pins a link at `path`; the pin then holds it and our descriptor goes.
fn pin_link<L>(name: &'static str, link: L, path: &Path) -> Result<()>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let fd = FdLink::try_from(link).map_err(|source| EnforcerError::Link { name, source })?;
    fd.pin(path).map_err(|source| EnforcerError::PinLink {
        path: path.to_owned(),
        source,
    })?;
    Ok(())
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
            let prog: &mut CgroupSockAddr = program(ebpf, name)?;
            prog.load().map_err(prog_err(name))?;
            let id = prog
                .attach(&cgroup_dir, CgroupAttachMode::Single)
                .map_err(prog_err(name))?;
            let link = prog.take_link(id).map_err(prog_err(name))?;
            let path = pin
                .links()
                .join(layout::link_pin_name(name, cgroup_id, stamp));
            pin_link(name, link, &path)?;
            new_pins.push(path);
        }
        for name in TRACEPOINTS {
            let prog: &mut TracePoint = program(ebpf, name)?;
            prog.load().map_err(prog_err(name))?;
            let id = prog.attach("cgroup", name).map_err(prog_err(name))?;
            let link = prog.take_link(id).map_err(prog_err(name))?;
            let path = pin.links().join(layout::link_pin_name(name, 0, stamp));
            pin_link(name, link, &path)?;
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
