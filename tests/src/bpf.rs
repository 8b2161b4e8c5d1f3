//! The kernel's view of what is attached to a cgroup, and raw bpf(2) calls to fake pinned
//! state of another layout or fill maps from outside. (The pin directory guard is
//! [`crate::pins::PinDir`].)

use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
};

use egress_agent::sys::bpf::{CgroupAttachType, attached_programs, obj_get};

/// The program ids the kernel reports attached directly to `cgroup`, per cgroup hook.
#[track_caller]
pub fn attached(cgroup: &Path) -> Vec<(CgroupAttachType, Vec<u32>)> {
    let f = File::open(cgroup).unwrap_or_else(|e| panic!("opening {}: {e}", cgroup.display()));
    CgroupAttachType::ALL
        .into_iter()
        .map(|t| {
            let ids = attached_programs(&f, t).unwrap_or_else(|e| {
                panic!("BPF_PROG_QUERY {} on {}: {e}", t.name(), cgroup.display())
            });
            (t, ids)
        })
        .collect()
}

/// `bpftool -j cgroup show <cgroup>`, parsed; fails the test if bpftool is missing.
#[track_caller]
pub fn bpftool_cgroup_show(cgroup: &Path) -> Vec<serde_json::Value> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running bpftool: {e}. The kernel-view checks need bpftool: `apt-get install -y bpftool` (the CI script installs it)"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bpftool cgroup show {} failed: {}; {}",
        cgroup.display(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    if stdout.trim().is_empty() {
        return vec![];
    }
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bpftool printed something that is not JSON ({e}): {stdout}"))
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;

fn sys_bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<libc::c_long> {
    // SAFETY: attr is a buffer of attr.len() initialised bytes the kernel may read and write.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn put_u32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Creates a map with the given shape and pins it at `path` (replacing what was pinned there),
/// the way an agent of another version would have left it.
#[track_caller]
pub fn pin_foreign_map(
    path: &Path,
    name: &str,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) {
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, map_flags,
    // inner_map_fd, numa_node, map_name[16].
    let mut attr = [0u8; 48];
    put_u32(&mut attr, 0, map_type);
    put_u32(&mut attr, 4, key_size);
    put_u32(&mut attr, 8, value_size);
    put_u32(&mut attr, 12, max_entries);
    let n = name.len().min(15);
    attr[28..28 + n].copy_from_slice(&name.as_bytes()[..n]);
    let fd =
        sys_bpf(BPF_MAP_CREATE, &mut attr).unwrap_or_else(|e| panic!("BPF_MAP_CREATE {name}: {e}"));
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => panic!("removing {}: {e}", path.display()),
    }
    std::fs::create_dir_all(path.parent().expect("pin path has a parent"))
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // BPF_OBJ_PIN: pathname (u64), bpf_fd (u32), file_flags (u32).
    let mut attr = [0u8; 16];
    put_u64(&mut attr, 0, c.as_ptr() as u64);
    put_u32(&mut attr, 8, fd.as_raw_fd() as u32);
    sys_bpf(BPF_OBJ_PIN, &mut attr).unwrap_or_else(|e| panic!("pinning {}: {e}", path.display()));
}

/// Writes a u64 into slot `index` of the pinned array map at `path`.
#[track_caller]
pub fn write_array_u64(path: &Path, index: u32, value: u64) {
    let fd = obj_get(path).unwrap_or_else(|e| panic!("opening pinned map {}: {e}", path.display()));
    // BPF_MAP_UPDATE_ELEM: map_fd (u32), pad, key (u64), value (u64), flags (u64).
    let mut attr = [0u8; 32];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u64(&mut attr, 8, (&raw const index) as u64);
    put_u64(&mut attr, 16, (&raw const value) as u64);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
        .unwrap_or_else(|e| panic!("updating {}[{index}]: {e}", path.display()));
}

/// The bytes of a plain-data map key or value (the shared `#[repr(C)]` types of egress-common,
/// which spell out every padding byte).
pub fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is plain data without hidden padding (see above); the slice lives as long as v.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// A pinned map opened behind the agent's back, written with raw `bpf(2)` calls, the way
/// `bpftool map update pinned ...` would (for tests that fill maps from outside).
pub struct PinnedMap {
    fd: OwnedFd,
    path: PathBuf,
}

/// `BPF_NOEXIST`: only make new entries.
pub const BPF_NOEXIST: u64 = 1;

impl PinnedMap {
    #[track_caller]
    pub fn open(path: &Path) -> Self {
        let fd =
            obj_get(path).unwrap_or_else(|e| panic!("opening pinned map {}: {e}", path.display()));
        Self {
            fd,
            path: path.to_owned(),
        }
    }

    /// `BPF_MAP_UPDATE_ELEM` with `flags`.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
        // BPF_MAP_UPDATE_ELEM: map_fd (u32), pad, key (u64), value (u64), flags (u64).
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put_u64(&mut attr, 8, key.as_ptr() as u64);
        put_u64(&mut attr, 16, value.as_ptr() as u64);
        put_u64(&mut attr, 24, flags);
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }

    /// Inserts new entries `key(0), key(1), ...` with `value` until the map refuses one (it is
    /// full); returns how many keys it went through (keys already there are skipped). Panics if
    /// the refusal is not "full" (E2BIG/ENOSPC).
    #[track_caller]
    pub fn fill<K: Copy, V: Copy>(&self, key: impl Fn(u64) -> K, value: V) -> u64 {
        let mut n = 0;
        loop {
            match self.update(bytes_of(&key(n)), bytes_of(&value), BPF_NOEXIST) {
                Ok(()) => n += 1,
                // Already there (a key of a real entry): skip it.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => n += 1,
                Err(e) if matches!(e.raw_os_error(), Some(libc::E2BIG) | Some(libc::ENOSPC)) => {
                    return n;
                }
                Err(e) => panic!("filling {}: entry {n}: {e}", self.path.display()),
            }
            assert!(n < 1 << 24, "{} never filled up", self.path.display());
        }
    }

    /// Deletes one entry (`BPF_MAP_DELETE_ELEM`).
    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        // BPF_MAP_DELETE_ELEM: map_fd (u32), pad, key (u64).
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put_u64(&mut attr, 8, key.as_ptr() as u64);
        sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(|_| ())
    }
}

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
