//! A cgroup's path as the kernel names it in the cgroup tracepoints: relative to the cgroup v2
//! root, starting with `/`, components joined by single `/`s (`/`, `/docker`,
//! `/system.slice/docker-<id>.scope`). The maps know such a path by its
//! [`PathKey`], which the `cgroup_mkdir` program computes the same way
//! (`egress_common::cgroup_path`).
//!
//! The agent's cgroup v2 mount is the root (an agent in a cgroup namespace of its own must run
//! with `--cgroupns=host`, see `docker::cgroup_path`).

use std::{
    fmt,
    os::unix::ffi::OsStrExt as _,
    path::{Component, Path, PathBuf},
};

use egress_common::cgroup_path::{MAX_REGISTERED_LEN, PathKey};

/// A cgroup path relative to the cgroup v2 root, as the tracepoints name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelPath(Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelPathError {
    #[error("{path} is not below the cgroup v2 mount {mount}")]
    OutsideMount { path: PathBuf, mount: PathBuf },
    #[error("cgroup path {path}: `..` is not allowed")]
    ParentComponent { path: PathBuf },
}

impl KernelPath {
    /// The root cgroup, `/`.
    pub fn root() -> Self {
        Self(b"/".to_vec())
    }

    /// `rel` taken relative to the root: `docker`, `/docker` and `/docker/` are all `/docker`.
    pub fn from_rel(rel: &Path) -> Result<Self, KernelPathError> {
        let mut out = Self::root();
        for c in rel.components() {
            match c {
                Component::Normal(name) => out = out.join(name.as_bytes()),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(KernelPathError::ParentComponent { path: rel.into() });
                }
            }
        }
        Ok(out)
    }

    /// The path of `dir`, a directory at or below the cgroup v2 mount `mount`.
    pub fn of_dir(mount: &Path, dir: &Path) -> Result<Self, KernelPathError> {
        let rel = dir
            .strip_prefix(mount)
            .map_err(|_| KernelPathError::OutsideMount {
                path: dir.into(),
                mount: mount.into(),
            })?;
        Self::from_rel(rel)
    }

    /// The child `name` of this path.
    pub fn join(&self, name: &[u8]) -> Self {
        let mut v = self.0.clone();
        if !self.is_root() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        Self(v)
    }

    /// This path with `rel` (a relative path below it) appended.
    pub fn join_rel(&self, rel: &Path) -> Self {
        rel.components().fold(self.clone(), |p, c| match c {
            Component::Normal(name) => p.join(name.as_bytes()),
            _ => p,
        })
    }

    pub fn is_root(&self) -> bool {
        self.0 == b"/"
    }

    /// The parent path; None for the root.
    pub fn parent(&self) -> Option<Self> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.iter().rposition(|b| *b == b'/')?;
        Some(if cut == 0 {
            Self::root()
        } else {
            Self(self.0[..cut].to_vec())
        })
    }

    /// This path and its ancestors, deepest first (the root last).
    pub fn self_and_ancestors(&self) -> impl Iterator<Item = Self> {
        std::iter::successors(Some(self.clone()), Self::parent)
    }

    /// The bytes, as the tracepoint has them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key the maps know this path by.
    pub fn key(&self) -> PathKey {
        PathKey::of(&self.0)
    }

    /// False if the path is too long for the `cgroup_mkdir` tracepoint to name it exactly (the
    /// kernel cuts paths to their first 1023 bytes).
    pub fn fits_tracepoint(&self) -> bool {
        self.0.len() <= MAX_REGISTERED_LEN
    }

    /// The number of components (`/` is 0, `/a/b` is 2).
    pub fn depth(&self) -> usize {
        if self.is_root() {
            0
        } else {
            self.0.iter().filter(|b| **b == b'/').count()
        }
    }

    /// The directory of this path below the cgroup v2 mount `mount`.
    pub fn dir_in(&self, mount: &Path) -> PathBuf {
        mount.join(std::ffi::OsStr::from_bytes(&self.0[1..]))
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use egress_common::cgroup_path::{PATH_BUF, PathWalk, walk};

    use super::*;

    fn kp(s: &str) -> KernelPath {
        KernelPath::from_rel(Path::new(s)).unwrap()
    }

    #[test]
    fn relative_and_absolute_forms_are_one_path() {
        for s in ["docker", "/docker", "/docker/", "./docker", "//docker"] {
            assert_eq!(kp(s).to_string(), "/docker", "{s:?}");
        }
        assert_eq!(kp("/").to_string(), "/");
        assert_eq!(kp("").to_string(), "/");
        assert_eq!(kp("a/b/c").to_string(), "/a/b/c");
        assert!(KernelPath::from_rel(Path::new("/a/../b")).is_err());
    }

    #[test]
    fn of_dir_is_relative_to_the_mount() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            KernelPath::of_dir(m, &m.join("docker/abc")).unwrap(),
            kp("/docker/abc")
        );
        assert_eq!(KernelPath::of_dir(m, m).unwrap(), KernelPath::root());
        assert!(KernelPath::of_dir(m, Path::new("/sys/fs/cgroup/memory/x")).is_err());
        assert_eq!(kp("/docker/abc").dir_in(m), m.join("docker/abc"));
        assert_eq!(KernelPath::root().dir_in(m), m.join(""));
    }

    #[test]
    fn parents_and_ancestors() {
        assert_eq!(kp("/a/b").parent(), Some(kp("/a")));
        assert_eq!(kp("/a").parent(), Some(KernelPath::root()));
        assert_eq!(KernelPath::root().parent(), None);
        let v: Vec<String> = kp("/a/b")
            .self_and_ancestors()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(v, ["/a/b", "/a", "/"]);
        assert_eq!(kp("/a").join_rel(Path::new("b/c")), kp("/a/b/c"));
        assert_eq!(kp("/a").join_rel(Path::new("")), kp("/a"));
    }

    /// The keys user space registers are the keys the kernel's walk computes.
    #[test]
    fn keys_agree_with_the_kernel_walk() {
        let path = kp("/system.slice/docker-abc.scope/child");
        let mut buf = [0u8; PATH_BUF];
        buf[..path.as_bytes().len()].copy_from_slice(path.as_bytes());
        let mut w = PathWalk::new();
        assert!(walk(&buf, path.as_bytes().len(), &mut w));
        let mut want: Vec<PathKey> = path
            .self_and_ancestors()
            .skip(1)
            .filter(|p| !p.is_root())
            .map(|p| p.key())
            .collect();
        want.reverse();
        assert_eq!(w.ancestors(), want.as_slice());
        assert_eq!(w.parent, path.parent().unwrap().key());
        assert_eq!(w.whole, path.key());
        assert_eq!(path.depth(), 3);
        assert_eq!(KernelPath::root().depth(), 0);
    }

    #[test]
    fn long_paths_do_not_fit() {
        let long = "x".repeat(MAX_REGISTERED_LEN);
        assert!(kp(&long[1..]).fits_tracepoint());
        assert!(!kp(&long).fits_tracepoint());
    }
}
