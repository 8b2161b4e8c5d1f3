//! cgroup v2 directories and their ids.
//!
//! A cgroup v2 directory's inode number is the id that `bpf_get_current_cgroup_id()` returns
//! in the programs, so the id of a path is one `stat` away.

use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::mounts;

/// A cgroup v2 id (the directory's inode number).
pub type CgroupId = u64;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a cgroup v2 directory (the cgroup v2 hierarchy is mounted at {mount})")]
    NotCgroup2 { path: PathBuf, mount: PathBuf },
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
}

/// Resolves `path` to a cgroup v2 directory: absolute paths are taken as they are, relative ones
/// (and ones starting with `/` that do not exist on their own) are taken under the cgroup v2
/// mount.
pub fn resolve(path: &Path) -> Result<PathBuf, CgroupError> {
    let mount = mounts::cgroup2_mount()?;
    let candidate = if path.is_absolute() && (path.starts_with(&mount) || path.exists()) {
        path.to_owned()
    } else {
        mount.join(path.strip_prefix("/").unwrap_or(path))
    };
    if !mounts::is_cgroup2(&candidate) {
        return Err(CgroupError::NotCgroup2 {
            path: candidate,
            mount,
        });
    }
    Ok(candidate)
}

/// The id of a cgroup v2 directory.
pub fn id_of(path: &Path) -> Result<CgroupId, CgroupError> {
    fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Io {
            path: path.into(),
            source,
        })
}

/// Maps ids to paths for every cgroup under `root` (for display; a cgroup that no longer exists
/// has no entry).
pub fn paths_by_id(root: &Path) -> HashMap<CgroupId, PathBuf> {
    let mut out = HashMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        if let Ok(m) = fs::metadata(&dir) {
            out.insert(m.ino(), dir.clone());
        }
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    out
}

/// `dir` and every cgroup below it (`dir` first, then depth first in name order), with their
/// ids; empty if `dir` does not exist. Cgroups removed during the walk are left out.
pub fn subtree(dir: &Path) -> Vec<(PathBuf, CgroupId)> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return out;
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(id) = id_of(&d) else { continue };
        if let Ok(rd) = fs::read_dir(&d) {
            let mut children: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            // Depth first, in name order.
            children.sort_unstable_by(|a, b| b.cmp(a));
            stack.extend(children);
        }
        out.push((d, id));
    }
    out
}

/// The path of the cgroup with id `id` under `root` (a walk that stops at the first match), if
/// it exists there.
pub fn find_by_id(root: &Path, id: CgroupId) -> Option<PathBuf> {
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        if fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
            return Some(dir);
        }
        if let Ok(rd) = fs::read_dir(&dir) {
            stack.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
}

/// The cgroup v2 path of process `pid` (`0::/...` of the host's `/proc/<pid>/cgroup`), under
/// `mount`.
pub fn of_pid(mount: &Path, pid: u32) -> Option<PathBuf> {
    let text = fs::read_to_string(crate::host::get().proc_cgroup(pid)).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim().trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cgroup_by_its_id() {
        // Any directory tree will do: the walk only compares inode numbers.
        let root = std::env::temp_dir().join(format!("egress-find-by-id-{}", std::process::id()));
        fs::create_dir_all(root.join("a/b")).unwrap();
        let id = fs::metadata(root.join("a/b")).unwrap().ino();
        assert_eq!(find_by_id(&root, id), Some(root.join("a/b")));
        assert_eq!(find_by_id(&root, u64::MAX - 3), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
