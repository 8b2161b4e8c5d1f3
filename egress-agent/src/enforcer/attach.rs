//! Attaching the programs of the table (`egress_common::programs::PROGRAMS`): the cgroup
//! programs to one cgroup, the tracepoints to theirs and the BPF LSM program to its hook (where
//! the kernel runs the BPF LSM), through bpf_link, pinning the links, and then releasing the
//! links of earlier runs. New and old links are both attached for a moment (cgroup links stack
//! and all must allow), so enforcement never has a gap.

use std::{
    fs::File,
    os::fd::{AsFd, OwnedFd},
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{
    Btf, Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        CgroupSockopt, Lsm, Program, ProgramError, TracePoint, links::FdLink,
    },
};

use super::{
    EnforcerError, Result,
    layout::{self, PinDir},
};
use crate::sys::{bpf, cgroup::CgroupId, mounts};
use egress_common::programs::{Attach, CgroupAttachType, PROGRAMS};

/// What [`attach_all`] did.
pub struct Attached {
    /// The link pins of earlier runs, still attached, for the caller to release once the new
    /// programs have everything they need (see [`PinDir::release`]).
    pub old_pins: Vec<std::path::PathBuf>,
    /// Why the BPF LSM program is not attached, if it is not: this host lacks that layer of
    /// the backstop (`AF_PACKET` and the other address families stay possible).
    pub lsm_missing: Option<String>,
}

/// Whether the kernel runs the BPF LSM: None if it does, else why not.
fn bpf_lsm_missing() -> Option<String> {
    match mounts::active_lsms() {
        Ok(lsms) if lsms.iter().any(|l| l == "bpf") => None,
        Ok(lsms) => Some(format!(
            "the kernel does not run the BPF LSM (active LSMs: {}; boot with `lsm=...,bpf`)",
            lsms.join(",")
        )),
        Err(e) => Some(format!("the active LSMs could not be read: {e}")),
    }
}

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
fn fd_link<L>(name: &'static str, link: L) -> Result<NewLink>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    FdLink::try_from(link)
        .map(NewLink::Aya)
        .map_err(|source| EnforcerError::Link { name, source })
}

/// A link made by this run, to pin.
enum NewLink {
    Aya(FdLink),
    /// Made with [`bpf::link_create`] (where aya gives no fd link).
    Raw(OwnedFd),
}

/// Pins a link at `path`; the pin then holds it and our descriptor goes.
fn pin_link(link: NewLink, path: &Path) -> Result<()> {
    match link {
        NewLink::Aya(link) => {
            link.pin(path).map_err(|source| EnforcerError::PinLink {
                path: path.to_owned(),
                source,
            })?;
        }
        NewLink::Raw(fd) => {
            bpf::obj_pin(&fd, path).map_err(|e| EnforcerError::PinRawLink {
                path: path.to_owned(),
                source: e,
            })?;
        }
    }
    Ok(())
}

/// Loads and attaches every program at `cgroup` and pins the links (the LSM program only where
/// the kernel runs the BPF LSM).
pub fn attach_all(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    cgroup_id: CgroupId,
    pin: &PinDir,
) -> Result<Attached> {
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
    let mut lsm_missing = bpf_lsm_missing();
    let result = (|| -> Result<()> {
        for spec in PROGRAMS {
            let name = spec.name;
            let (id, link) = match spec.attach {
                Attach::Cgroup(t) => (cgroup_id, attach_cgroup(ebpf, name, t, &cgroup_dir)?),
                Attach::Lsm { .. } if lsm_missing.is_some() => continue,
                Attach::Lsm { hook } => match attach_lsm(ebpf, name, hook) {
                    Ok(link) => (0, link),
                    // The kernel lists the BPF LSM but will not load its programs (where
                    // tracing programs are not available, e.g. under some lockdowns): the
                    // layer is missing, the rest enforces.
                    Err(e) => {
                        lsm_missing = Some(format!(
                            "the kernel lists the BPF LSM but refused its program: {e}"
                        ));
                        continue;
                    }
                },
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
    Ok(Attached {
        old_pins: before,
        lsm_missing,
    })
}

/// Loads the LSM program `name` for `hook` and attaches it.
fn attach_lsm(ebpf: &mut Ebpf, name: &'static str, hook: &str) -> Result<NewLink> {
    let btf = Btf::from_sys_fs().map_err(|e| EnforcerError::Btf {
        name,
        detail: e.to_string(),
    })?;
    let prog: &mut Lsm = program(ebpf, name)?;
    prog.load(hook, &btf).map_err(prog_err(name))?;
    let id = prog.attach().map_err(prog_err(name))?;
    let link = prog.take_link(id).map_err(prog_err(name))?;
    Ok(NewLink::Aya(link.into()))
}

/// Loads the cgroup program `name` (of the program type its attach type `t` needs) and
/// attaches it to `cgroup`.
fn attach_cgroup(
    ebpf: &mut Ebpf,
    name: &'static str,
    t: CgroupAttachType,
    cgroup: &File,
) -> Result<NewLink> {
    use CgroupAttachType as T;
    let mode = CgroupAttachMode::Single;
    match t {
        T::InetSockCreate => {
            let prog: &mut CgroupSock = program(ebpf, name)?;
            prog.load().map_err(prog_err(name))?;
            let id = prog.attach(cgroup, mode).map_err(prog_err(name))?;
            fd_link(name, prog.take_link(id).map_err(prog_err(name))?)
        }
        T::Setsockopt => {
            let prog: &mut CgroupSockopt = program(ebpf, name)?;
            prog.load().map_err(prog_err(name))?;
            let fd = prog.fd().map_err(prog_err(name))?;
            bpf::link_create(fd.as_fd(), cgroup, t)
                .map(NewLink::Raw)
                .map_err(|source| EnforcerError::RawLink { name, source })
        }
        T::InetEgress => {
            let prog: &mut CgroupSkb = program(ebpf, name)?;
            prog.load().map_err(prog_err(name))?;
            let id = prog
                .attach(cgroup, CgroupSkbAttachType::Egress, mode)
                .map_err(prog_err(name))?;
            fd_link(name, prog.take_link(id).map_err(prog_err(name))?)
        }
        T::Connect4
        | T::Connect6
        | T::Sendmsg4
        | T::Sendmsg6
        | T::Recvmsg4
        | T::Recvmsg6
        | T::Getpeername4
        | T::Getpeername6 => {
            let prog: &mut CgroupSockAddr = program(ebpf, name)?;
            prog.load().map_err(prog_err(name))?;
            let id = prog.attach(cgroup, mode).map_err(prog_err(name))?;
            fd_link(name, prog.take_link(id).map_err(prog_err(name))?)
        }
    }
}
