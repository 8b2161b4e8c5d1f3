//! Host checks and small libc wrappers: root, kernel filesystems, signals, processes.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};

use egress_agent::sys::mounts::{Mount, parse_mountinfo, pick_cgroup2};

use crate::say;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn mounts() -> Result<Vec<Mount>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

fn is_mounted(mounts: &[Mount], at: &str, fs_type: &str) -> bool {
    mounts
        .iter()
        .any(|m| m.mount_point == Path::new(at) && m.fs_type == fs_type)
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

/// Checks cgroup v2, mounts bpffs at /sys/fs/bpf and tracefs at /sys/kernel/tracing if they
/// are missing. Returns the cgroup v2 mount.
pub fn ensure_kernel_fs() -> Result<PathBuf> {
    let m = mounts()?;
    let Some(cg2) = pick_cgroup2(&m) else {
        bail!(
            "no cgroup v2 mount found (looked for fstype cgroup2 in /proc/self/mountinfo); the \
             enforcer attaches to cgroup v2. Mount it, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`"
        );
    };
    for (fs_type, at) in [("bpf", "/sys/fs/bpf"), ("tracefs", "/sys/kernel/tracing")] {
        if !is_mounted(&m, at, fs_type) {
            say(&format!("mounting {fs_type} at {at}"));
            mount_fs(fs_type, at)?;
        }
    }
    Ok(cg2)
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

pub fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
33 31 0:28 / /sys/fs/cgroup/cpu,cpuacct rw shared:11 - cgroup cgroup rw,cpu,cpuacct
40 25 0:35 / /sys/fs/bpf rw,relatime shared:15 - bpf bpf rw
41 30 0:36 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
";

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 6);
        assert_eq!(m[2].mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m[2].fs_type, "cgroup2");
        assert_eq!(m[5].mount_point, Path::new("/mnt/with space"));
        assert!(is_mounted(&m, "/sys/fs/bpf", "bpf"));
        assert!(!is_mounted(&m, "/sys/kernel/tracing", "tracefs"));
    }

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_layouts() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(
            pick_cgroup2(&m).as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let unified = parse_mountinfo(
            "31 25 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n\
             50 30 0:40 / /tmp/cg rw - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(
            pick_cgroup2(&unified).as_deref(),
            Some(Path::new("/sys/fs/cgroup"))
        );
        let none = parse_mountinfo("33 31 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n");
        assert_eq!(pick_cgroup2(&none), None);
    }
}
