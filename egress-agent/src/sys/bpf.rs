//! The bpf(2) commands the agent needs that aya 0.14 does not expose: forcing a link to detach
//! (BPF_LINK_DETACH), asking the kernel which programs are attached to a cgroup
//! (BPF_PROG_QUERY, which `status` and the tests use as the kernel's own view), and making and
//! pinning a cgroup link aya cannot hand out as a plain fd link (BPF_LINK_CREATE, BPF_OBJ_PIN:
//! aya's `CgroupSockoptLink` has no conversion to `FdLink`).

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

// BPF_OBJ_GET's attr: pathname (u64 pointer), bpf_fd, file_flags, path_fd.

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The cgroup attach types of the program table (`egress_common::programs`).
pub use egress_common::programs::CgroupAttachType;

/// bpf(2) with the attribute union in `attr` (its length is the size passed); returns the
/// syscall's non-negative result (a new descriptor for the commands that make one).
pub fn sys_bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<libc::c_long> {
    // SAFETY: attr points to attr.len() initialised bytes that the kernel may read and write;
    // pointers inside it are the caller's to keep valid.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Detaches a link from its hook even if other file descriptors or pins still hold it.
pub fn link_detach(link: impl AsFd) -> io::Result<()> {
    let mut attr = [0u8; 8];
    attr[..4].copy_from_slice(&(link.as_fd().as_raw_fd() as u32).to_ne_bytes());
    sys_bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// Attaches the loaded program `prog` to the cgroup `cgroup` for `attach_type` through a new
/// bpf_link (the link goes when its last descriptor or pin does).
pub fn link_create(
    prog: impl AsFd,
    cgroup: impl AsFd,
    attach_type: CgroupAttachType,
) -> io::Result<std::os::fd::OwnedFd> {
    // union bpf_attr for BPF_LINK_CREATE: prog_fd, target_fd, attach_type, flags.
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(prog.as_fd().as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(cgroup.as_fd().as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(attach_type as u32).to_ne_bytes());
    let fd = sys_bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: BPF_LINK_CREATE returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

/// Pins the bpf object behind `fd` at `path` (on a bpffs).
pub fn obj_pin(fd: impl AsFd, path: &std::path::Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = [0u8; 16];
    attr[..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd.as_fd().as_raw_fd() as u32).to_ne_bytes());
    sys_bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Opens a pinned bpf object (map, program or link) by path.
pub fn obj_get(path: &std::path::Path) -> io::Result<std::os::fd::OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = [0u8; 16];
    attr[..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// Ids of the programs attached directly to `cgroup` for `attach_type` (not inherited ones).
pub fn attached_programs(cgroup: impl AsFd, attach_type: CgroupAttachType) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_fd().as_raw_fd() as u32,
        attach_type: attach_type as u32,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    let size = std::mem::size_of::<QueryAttr>();
    // SAFETY: QueryAttr is repr(C) plain data; viewing it as bytes for the syscall is sound.
    let bytes = unsafe { std::slice::from_raw_parts_mut((&raw mut attr).cast::<u8>(), size) };
    sys_bpf(BPF_PROG_QUERY, bytes)?;
    ids.truncate(attr.prog_cnt.min(64) as usize);
    Ok(ids)
}
