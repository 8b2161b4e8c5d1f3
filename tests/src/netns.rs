//! A throw-away network namespace whose loopback carries extra IPv6 addresses, for rules that
//! need more than `::1` (IPv6 CIDR edges). Traffic never leaves the namespace's `lo`. Removed on
//! drop.

use std::{
    fs::File,
    io,
    net::IpAddr,
    os::fd::AsRawFd as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

/// `ip netns add egress-test-<name>-<pid>`, with `lo` up; deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

#[track_caller]
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e} (the test needs iproute2)"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    #[track_caller]
    pub fn create(name: &str) -> Self {
        let name = format!("egress-test-{name}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's file in /run/netns.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Adds `addr` to the namespace's `lo` (usable at once: no duplicate address detection).
    #[track_caller]
    pub fn add_addr(&self, addr: IpAddr) {
        let (cidr, extra): (String, &[&str]) = match addr {
            IpAddr::V4(a) => (format!("{a}/32"), &[]),
            IpAddr::V6(a) => (format!("{a}/128"), &["nodad"]),
        };
        let mut args = vec!["-n", &self.name, "addr", "add", &cidr, "dev", "lo"];
        args.extend(extra);
        ip(&args);
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it creates live there.
    #[track_caller]
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()));
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this thread only; the descriptor is valid.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .expect("the thread in the namespace panicked")
        })
    }
}

/// Makes `cmd`'s process enter the network namespace at `path` between fork and exec.
#[track_caller]
pub fn enter_on_exec(cmd: &mut Command, path: &Path) {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    // SAFETY: setns is async-signal-safe; the descriptor stays open in the closure.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Moves the calling thread into the network namespace of process `pid` (for good: call it on
/// a thread of its own). Processes it spawns start there too.
pub fn enter_netns_of(pid: u32) -> Result<(), String> {
    let path = format!("/proc/{pid}/ns/net");
    let ns = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
    // SAFETY: setns(2) on a namespace descriptor we hold; it changes this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", io::Error::last_os_error()));
    }
    Ok(())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
