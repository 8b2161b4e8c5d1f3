//! Host checks and small libc wrappers: root, kernel filesystems, signals.

use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};

use crate::say;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Filesystem magic numbers (linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const TRACEFS_MAGIC: i64 = 0x7472_6163;

/// The filesystem type (`f_type`) of what is mounted at `at`, or None if `at` does not exist.
fn fs_type_at(at: &Path) -> Option<i64> {
    let path = CString::new(at.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs only writes into the zeroed struct; path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // f_type is not i64 on every libc
    Some(st.f_type as i64)
}

/// `mount -t FSTYPE FSTYPE AT`.
fn mount_fs(fs_type: &str, at: &str) -> Result<()> {
    fs::create_dir_all(at).with_context(|| format!("creating {at}"))?;
    let src = CString::new(fs_type)?;
    let target = CString::new(at)?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call; data may be NULL.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("mount -t {fs_type} {at}"));
    }
    Ok(())
}

/// The places a cgroup v2 hierarchy is mounted by systemd: pure v2, then hybrid.
const CGROUP2_PLACES: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// Checks cgroup v2, mounts bpffs at /sys/fs/bpf and tracefs at /sys/kernel/tracing if they
/// are missing. Returns the cgroup v2 mount. (The agent and the tests find the mount from the
/// mount table themselves; this only checks the host is fit to run them.)
pub fn ensure_kernel_fs() -> Result<PathBuf> {
    let usual = CGROUP2_PLACES
        .iter()
        .map(PathBuf::from)
        .find(|p| fs_type_at(p) == Some(CGROUP2_SUPER_MAGIC));
    let Some(cg2) = usual.or_else(cgroup2_elsewhere) else {
        bail!(
            "no cgroup v2 at {} (the enforcer attaches to cgroup v2). Mount it, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`",
            CGROUP2_PLACES.join(" or ")
        );
    };
    for (fs_type, magic, at) in [
        ("bpf", BPF_FS_MAGIC, "/sys/fs/bpf"),
        ("tracefs", TRACEFS_MAGIC, "/sys/kernel/tracing"),
    ] {
        if fs_type_at(Path::new(at)) != Some(magic) {
            say(&format!("mounting {fs_type} at {at}"));
            mount_fs(fs_type, at)?;
        }
    }
    Ok(cg2)
}

/// A cgroup v2 mounted somewhere else, from /proc/self/mounts (`SOURCE TARGET FSTYPE ...`).
fn cgroup2_elsewhere() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let target = f.nth(1)?;
        (f.next()? == "cgroup2").then(|| PathBuf::from(target))
    })
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Keeps this process alive through SIGINT/SIGTERM/SIGHUP so that it can clean up (stop the
/// dockerd it started) after its child, which gets the terminal's signal too, has exited.
/// Handlers (unlike ignored signals) are reset in children at exec.
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_this_hosts_kernel_filesystems() {
        assert_eq!(fs_type_at(Path::new("/nonexistent/egress")), None);
        // /proc is procfs, never cgroup2 or bpffs.
        let proc_fs = fs_type_at(Path::new("/proc"));
        assert!(proc_fs.is_some());
        assert_ne!(proc_fs, Some(CGROUP2_SUPER_MAGIC));
        assert_ne!(proc_fs, Some(BPF_FS_MAGIC));
    }
}
