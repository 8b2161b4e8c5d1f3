//! Temporary cgroup v2 directories for one test, removed again even when the test panics.
//!
//! Each test gets `<cgroup2 mount>/egress-test-<name>-<pid>`; the enforcer is attached there and
//! the test polices child cgroups of it. The test process itself stays in its own cgroup, which
//! is never policed.

use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use egress_agent::sys::{cgroup as agent_cgroup, mounts};

/// A cgroup v2 directory and its id (the inode number `bpf_get_current_cgroup_id()` returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub path: PathBuf,
    pub id: u64,
}

impl Cgroup {
    /// The cgroup at `path` (which must exist).
    #[track_caller]
    pub fn at(path: &Path) -> Self {
        let id = agent_cgroup::id_of(path)
            .unwrap_or_else(|e| panic!("cgroup id of {}: {e}", path.display()));
        Self {
            path: path.to_owned(),
            id,
        }
    }

    /// A command whose process enters this cgroup between fork and exec: it writes its own pid
    /// into `cgroup.procs` before `exec`, so it runs in the cgroup from its first instruction.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let procs = CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes())
            .expect("cgroup path without NUL");
        let mut cmd = Command::new(program);
        // SAFETY: the hook only makes async-signal-safe calls (open, getpid, write, close) and
        // does not allocate: the path was prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut buf = [0u8; 20];
                let digits = format_pid(libc::getpid() as u32, &mut buf);
                let rc = libc::write(fd, digits.as_ptr().cast(), digits.len());
                let err = io::Error::last_os_error();
                libc::close(fd);
                if rc < 0 { Err(err) } else { Ok(()) }
            });
        }
        cmd
    }

    /// The pids in this cgroup.
    pub fn procs(&self) -> Vec<u32> {
        read_procs(&self.path)
    }
}

/// The cgroup v2 directory of the test process itself (outside every test subtree; never
/// policed).
#[track_caller]
pub fn own() -> Cgroup {
    let text = fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line (0::) in /proc/self/cgroup");
    let mount = mounts::cgroup2_mount().expect("a cgroup v2 mount");
    Cgroup::at(&mount.join(rel.trim_start_matches('/')))
}

/// Writes `pid` in decimal into `buf` without allocating; returns the digits.
fn format_pid(mut pid: u32, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    &buf[i..]
}

fn read_procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The test's own cgroup subtree; removed on drop.
#[derive(Debug)]
pub struct CgroupTree {
    /// The test's parent cgroup (the enforcer attaches here).
    pub root: Cgroup,
}

impl CgroupTree {
    /// Creates `<cgroup2 mount>/egress-test-<name>-<pid>` (removing a leftover of that name).
    #[track_caller]
    pub fn create(name: &str) -> Self {
        let mount = mounts::cgroup2_mount().expect("a cgroup v2 mount");
        let path = mount.join(format!("egress-test-{name}-{}", std::process::id()));
        if path.exists() {
            remove_tree(&path);
        }
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        Self {
            root: Cgroup::at(&path),
        }
    }

    /// Creates a child cgroup `name` under the test's parent cgroup.
    #[track_caller]
    pub fn child(&self, name: &str) -> Cgroup {
        let path = self.root.path.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        Cgroup::at(&path)
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        remove_tree(&self.root.path);
    }
}

/// Removes a cgroup directory and everything below it, deepest first, moving processes that are
/// still in it to the parent cgroup. A directory that does not exist is fine.
pub fn remove_tree(dir: &Path) {
    let children: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    for c in children {
        remove_tree(&c);
    }
    let parent = dir.parent().expect("a cgroup has a parent");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for pid in read_procs(dir) {
            let _ = fs::write(parent.join("cgroup.procs"), pid.to_string());
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            // Exiting tasks keep a cgroup busy for a moment.
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                eprintln!("warning: could not remove cgroup {}: {e}", dir.display());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_pids() {
        let mut b = [0u8; 20];
        assert_eq!(super::format_pid(0, &mut b), b"0");
        assert_eq!(super::format_pid(4_194_304, &mut b), b"4194304");
    }
}
