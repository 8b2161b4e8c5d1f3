//! Finding and making the mounts the agent needs (bpffs, cgroup v2).

use std::{
    ffi::CStr,
    fs, io,
    path::{Path, PathBuf},
};

use crate::host::{self, Host};

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `statfs` magic of cgroup v2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("could not mount bpffs at {path}: {source} (the agent needs root / CAP_SYS_ADMIN)")]
    MountBpf { path: PathBuf, source: io::Error },
    #[error("could not mount tracefs at /sys/kernel/tracing: {source}")]
    MountTracefs { source: io::Error },
    #[error(
        "{path} is not on a BPF filesystem; pin directories must be under a bpffs mount such as /sys/fs/bpf"
    )]
    NotBpffs { path: PathBuf },
    #[error(
        "no cgroup v2 hierarchy is mounted (looked for a cgroup2 mount in {}, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified); the agent needs cgroup v2", table.display()
    )]
    NoCgroup2 { table: PathBuf },
}

fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// True if `path` is on bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    fs_magic(path).is_ok_and(|m| m == BPF_FS_MAGIC)
}

/// True if `path` is in a cgroup v2 hierarchy.
pub fn is_cgroup2(path: &Path) -> bool {
    fs_magic(path).is_ok_and(|m| m == CGROUP2_SUPER_MAGIC)
}

/// Makes sure `pin_dir` exists on bpffs, mounting bpffs at `/sys/fs/bpf` first if the pin
/// directory lies under it and nothing is mounted there. Returns true if it mounted.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<bool, MountError> {
    let default = Path::new("/sys/fs/bpf");
    let mut mounted = false;
    if pin_dir.starts_with(default) && !is_bpffs(default) {
        fs::create_dir_all(default).map_err(|source| MountError::Io {
            path: default.into(),
            source,
        })?;
        mount_fs(c"bpf", c"/sys/fs/bpf").map_err(|source| MountError::MountBpf {
            path: default.into(),
            source,
        })?;
        mounted = true;
    }
    fs::create_dir_all(pin_dir).map_err(|source| MountError::Io {
        path: pin_dir.into(),
        source,
    })?;
    if !is_bpffs(pin_dir) {
        return Err(MountError::NotBpffs {
            path: pin_dir.into(),
        });
    }
    Ok(mounted)
}

/// Mounts tracefs at /sys/kernel/tracing if nothing is there (tracepoints are found through it).
pub fn ensure_tracefs() -> Result<(), MountError> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").is_dir() || Path::new("/sys/kernel/debug/tracing/events").is_dir() {
        return Ok(());
    }
    mount_fs(c"tracefs", c"/sys/kernel/tracing")
        .map_err(|source| MountError::MountTracefs { source })
}

/// The LSMs the kernel runs, from `/sys/kernel/security/lsm` (securityfs is mounted there
/// first if nothing is), e.g. `["lockdown", "capability", "landlock", "bpf"]`.
pub fn active_lsms() -> Result<Vec<String>, MountError> {
    let dir = Path::new("/sys/kernel/security");
    let file = dir.join("lsm");
    if !file.exists() {
        mount_fs(c"securityfs", c"/sys/kernel/security").map_err(|source| MountError::Io {
            path: dir.into(),
            source,
        })?;
    }
    let list = fs::read_to_string(&file).map_err(|source| MountError::Io { path: file, source })?;
    Ok(list
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

/// `mount -t FSTYPE FSTYPE TARGET`.
fn mount_fs(fstype: &CStr, target: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The mount point of the cgroup v2 hierarchy of the host ([`host::get`]), from its mount table
/// (`/proc/self/mountinfo`): `/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones.
pub fn cgroup2_mount() -> Result<PathBuf, MountError> {
    cgroup2_mount_of(host::get())
}

/// [`cgroup2_mount`] of `host`: read from its mount table, the mount point taken below its root.
pub fn cgroup2_mount_of(host: &Host) -> Result<PathBuf, MountError> {
    let table = host.mount_table();
    let info = fs::read_to_string(&table).map_err(|source| MountError::Io {
        path: table.clone(),
        source,
    })?;
    find_cgroup2_mount(&info)
        .map(|m| host.mount_point(&m))
        .ok_or(MountError::NoCgroup2 { table })
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Parses mountinfo text (`ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE
/// SOURCE SUPEROPTS`). Octal escapes (`\040` for a space) in mount points are decoded.
pub fn parse_mountinfo(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            Some(Mount {
                mount_point: PathBuf::from(unescape_octal(left.split_whitespace().nth(4)?)),
                fs_type: right.split_whitespace().next()?.to_owned(),
            })
        })
        .collect()
}

/// The first cgroup2 mount, preferring `/sys/fs/cgroup*`.
pub fn pick_cgroup2(mounts: &[Mount]) -> Option<PathBuf> {
    let mut found: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point.as_path())
        .collect();
    found.sort_by_key(|p| !p.starts_with("/sys/fs/cgroup"));
    found.first().map(|p| p.to_path_buf())
}

/// Parses mountinfo text for the first cgroup2 mount (preferring `/sys/fs/cgroup*`).
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    pick_cgroup2(&parse_mountinfo(mountinfo))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_unified_mount() {
        let info = "\
25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
";
        assert_eq!(
            find_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_pure_v2_mount() {
        let info =
            "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn prefers_sys_fs_cgroup_over_other_cgroup2_mounts() {
        let info = "\
40 24 0:50 / /run/other rw - cgroup2 cgroup2 rw
35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn no_cgroup2_at_all() {
        let info = "27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(find_cgroup2_mount(info), None);
    }

    #[test]
    fn another_host_root_is_read_and_prefixed() {
        let root = std::env::temp_dir().join(format!("egress-host-root-{}", std::process::id()));
        fs::create_dir_all(root.join("proc/1")).unwrap();
        fs::write(
            root.join("proc/1/mountinfo"),
            "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
        )
        .unwrap();
        let host = Host::new(&root).unwrap();
        assert_eq!(
            cgroup2_mount_of(&host).unwrap(),
            root.join("sys/fs/cgroup"),
            "the host's mount table, its mount point below the root"
        );
        fs::write(root.join("proc/1/mountinfo"), "").unwrap();
        let e = cgroup2_mount_of(&host).unwrap_err();
        assert!(
            e.to_string()
                .contains(&root.join("proc/1/mountinfo").display().to_string()),
            "{e}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unescapes_spaces() {
        assert_eq!(unescape_octal(r"/a\040b"), "/a b");
    }
}
