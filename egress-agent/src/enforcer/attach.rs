//! Attaching the programs of the table (`egress_common::programs::PROGRAMS`): the cgroup
//! programs to one cgroup and the tracepoints to theirs, through bpf_link, pinning the links,
//! and then releasing the links of earlier runs. New and old links are both attached for a moment
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
use egress_common::programs::{Attach, PROGRAMS};

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

/// A program's link as a plain fd link, to pin.
fn fd_link<L>(name: &'static str, link: L) -> Result<FdLink>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    FdLink::try_from(link).map_err(|source| EnforcerError::Link { name, source })
}

/// Pins a link at `path`; the pin then holds it and our descriptor goes.
fn pin_link(link: FdLink, path: &Path) -> Result<()> {
    link.pin(path).map_err(|source| EnforcerError::PinLink {
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
        for spec in PROGRAMS {
            let name = spec.name;
            let (id, link) = match spec.attach {
                Attach::Cgroup(_) => {
                    let prog: &mut CgroupSockAddr = program(ebpf, name)?;
                    prog.load().map_err(prog_err(name))?;
                    let id = prog
                        .attach(&cgroup_dir, CgroupAttachMode::Single)
                        .map_err(prog_err(name))?;
                    (
                        cgroup_id,
                        fd_link(name, prog.take_link(id).map_err(prog_err(name))?)?,
                    )
                }
                Attach::Tracepoint { category } => {
                    let prog: &mut TracePoint = program(ebpf, name)?;
                    prog.load().map_err(prog_err(name))?;
                    let id = prog.attach(category, name).map_err(prog_err(name))?;
                    (
                        0,
                        fd_link(name, prog.take_link(id).map_err(prog_err(name))?)?,
                    )
                }
            };
            let path = pin.links().join(layout::link_pin_name(name, id, stamp));
            pin_link(link, &path)?;
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
