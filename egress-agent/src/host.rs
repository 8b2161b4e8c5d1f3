//! Where the host's files are. Every host path the agent reads comes from here: the host's
//! `/etc/resolv.conf`, a process's `/proc/<pid>/cgroup`, the mount table that names the cgroup v2
//! (and bpffs) mounts, `/run/systemd/system`, the default cgroup v2 directory and Docker's default
//! socket.
//!
//! They are taken below the host's root, `--host-root` (default `/`). An agent that runs in a
//! container sees the host's file system where it is mounted (`-v /:/host`, `--host-root /host`):
//! `/host/etc/resolv.conf` is then the host's resolv.conf. With a root other than `/`, the mount
//! table is that of the host's init (`ROOT/proc/1/mountinfo`, so the host's `/proc` must be the
//! one mounted there, e.g. `--pid host`), and the mount points it names are taken below the root
//! too. With `/`, every path is the plain host path and the mount table is the agent's own
//! (`/proc/self/mountinfo`).
//!
//! Not host files, so not here: the names the agent uses inside bpffs (the default pin directory
//! and its subdirectories, in [`crate::paths`]; `--pin-dir` must be on the host's bpffs), the
//! bpffs and tracefs the agent mounts in its own mount namespace when they are missing
//! ([`crate::sys::mounts`]), and the host paths a container's mounts are compared with
//! (`crate::docker::privileges`: Docker reports mount sources as host paths).
//!
//! The daemon sets the process-wide root once at start ([`set`]); code that reads a host path
//! asks [`get`] (the root `/` until set). Functions that take a [`Host`] can be tested on a
//! directory tree of their own.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The default `--host-root`.
pub const DEFAULT_ROOT: &str = "/";

/// A `--host-root` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the host root `{}` is not an absolute path", root.display())]
    NotAbsolute { root: PathBuf },
    #[error("the host root is already set to `{}`, not `{}`", set.display(), wanted.display())]
    AlreadySet { set: PathBuf, wanted: PathBuf },
}

/// The host's root directory, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_ROOT),
        }
    }
}

impl Host {
    /// The host whose root is at `root` (an absolute path).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, HostError> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(HostError::NotAbsolute { root });
        }
        Ok(Self { root })
    }

    /// The host's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True if the host's root is the agent's own `/`.
    pub fn is_own_root(&self) -> bool {
        self.root == Path::new(DEFAULT_ROOT)
    }

    /// Where the host's `host_path` (absolute, as the host names it) is for the agent.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let p = host_path.as_ref();
        if self.is_own_root() {
            return p.to_owned();
        }
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// The host's resolv.conf (the name servers the host, and Docker's containers, use).
    pub fn resolv_conf(&self) -> PathBuf {
        self.path("/etc/resolv.conf")
    }

    /// `/proc/<pid>/cgroup` of a host process: its cgroup v2 path.
    pub fn proc_cgroup(&self, pid: u32) -> PathBuf {
        self.path(format!("/proc/{pid}/cgroup"))
    }

    /// The mount table that names the host's cgroup v2 mount (see the module doc).
    pub fn mount_table(&self) -> PathBuf {
        if self.is_own_root() {
            PathBuf::from("/proc/self/mountinfo")
        } else {
            self.path("/proc/1/mountinfo")
        }
    }

    /// Where a mount point of [`Host::mount_table`] is for the agent.
    pub fn mount_point(&self, listed: &Path) -> PathBuf {
        self.path(listed)
    }

    /// The directory that exists when systemd is the host's init.
    pub fn systemd_run_dir(&self) -> PathBuf {
        self.path("/run/systemd/system")
    }

    /// The cgroup v2 mount of a pure v2 host, where dockerd's default driver is decided.
    pub fn default_cgroup2_dir(&self) -> PathBuf {
        self.path("/sys/fs/cgroup")
    }

    /// Docker's default socket (`/var/run/docker.sock` of the host).
    pub fn docker_socket(&self) -> PathBuf {
        self.path("/var/run/docker.sock")
    }

    /// Docker's default daemon address, `unix://` and [`Host::docker_socket`].
    pub fn default_docker_host(&self) -> String {
        format!("unix://{}", self.docker_socket().display())
    }
}

static HOST: OnceLock<Host> = OnceLock::new();

/// Sets the process-wide host (once; setting the same root again is fine).
pub fn set(host: Host) -> Result<(), HostError> {
    let wanted = host.root.clone();
    let set = HOST.get_or_init(|| host);
    if set.root == wanted {
        Ok(())
    } else {
        Err(HostError::AlreadySet {
            set: set.root.clone(),
            wanted,
        })
    }
}

/// The process-wide host: the one [`set`], else the root `/`.
pub fn get() -> &'static Host {
    static OWN: OnceLock<Host> = OnceLock::new();
    HOST.get().unwrap_or_else(|| OWN.get_or_init(Host::default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_root_leaves_paths_as_they_are() {
        let h = Host::default();
        assert!(h.is_own_root());
        assert_eq!(h.resolv_conf(), Path::new("/etc/resolv.conf"));
        assert_eq!(h.proc_cgroup(42), Path::new("/proc/42/cgroup"));
        assert_eq!(h.mount_table(), Path::new("/proc/self/mountinfo"));
        assert_eq!(
            h.mount_point(Path::new("/sys/fs/cgroup")),
            Path::new("/sys/fs/cgroup")
        );
        assert_eq!(h.systemd_run_dir(), Path::new("/run/systemd/system"));
        assert_eq!(h.default_docker_host(), "unix:///var/run/docker.sock");
    }

    #[test]
    fn another_root_is_honoured_for_every_host_path() {
        let h = Host::new("/host").unwrap();
        assert!(!h.is_own_root());
        assert_eq!(h.resolv_conf(), Path::new("/host/etc/resolv.conf"));
        assert_eq!(h.proc_cgroup(42), Path::new("/host/proc/42/cgroup"));
        assert_eq!(h.mount_table(), Path::new("/host/proc/1/mountinfo"));
        assert_eq!(
            h.mount_point(Path::new("/sys/fs/cgroup/unified")),
            Path::new("/host/sys/fs/cgroup/unified")
        );
        assert_eq!(h.systemd_run_dir(), Path::new("/host/run/systemd/system"));
        assert_eq!(h.default_cgroup2_dir(), Path::new("/host/sys/fs/cgroup"));
        assert_eq!(h.docker_socket(), Path::new("/host/var/run/docker.sock"));
        assert_eq!(h.default_docker_host(), "unix:///host/var/run/docker.sock");
    }

    #[test]
    fn a_relative_root_is_refused() {
        assert_eq!(
            Host::new("host"),
            Err(HostError::NotAbsolute {
                root: PathBuf::from("host")
            })
        );
    }
}
