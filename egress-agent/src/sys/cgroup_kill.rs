//! The last resort for a cgroup that must be policed but has no room for its entry in the
//! cgroup map: freeze it (cgroup v2 `cgroup.freeze`) and kill every process in it
//! (`cgroup.kill`, Linux 5.14+), so that nothing in it runs unpoliced. The freeze stays, so a
//! process that joins later (runc writes the container's init into the cgroup after making
//! it, `docker exec` adds more) stops at once; [`kill_members`] then kills it too (the enforcer
//! calls it every retry interval while the cgroup exists).
//!
//! Why not only freeze: a frozen runc init never answers `runc start`, which would wait for it
//! forever (and `docker start`/`docker run` with it); a killed init makes the start fail ("container
//! process is already dead"). Why not remove the cgroup: on a hybrid host runc may go on without
//! the v2 cgroup, leaving the process in one that is not policed.
//!
//! [`check`] refuses anything that is not plainly the container's own cgroup: the cgroup v2 root,
//! anything outside the mount, a cgroup holding the host's init (pid 1) or the agent itself, and a
//! cgroup whose path does not name the container.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::cgroup;

/// Why a cgroup was not killed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("refused to kill the processes of {path}: {why}")]
    Refused { path: PathBuf, why: &'static str },
    #[error("writing {path}/cgroup.kill: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Checks that the processes of `path` may be killed: see the module docs. `container` (a full
/// id) must then appear in the path as a component `<id>` or `docker-<id>.scope`.
pub fn check(mount: &Path, path: &Path, container: Option<&str>) -> Result<(), KillError> {
    let refuse = |why| {
        Err(KillError::Refused {
            path: path.to_owned(),
            why,
        })
    };
    let Ok(rel) = path.strip_prefix(mount) else {
        return refuse("it is not under the cgroup v2 mount");
    };
    if rel.as_os_str().is_empty() {
        return refuse("it is the cgroup v2 root");
    }
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return refuse("its path is not plain");
    }
    for (pid, why) in [
        (1, "it holds the host's init (pid 1)"),
        (std::process::id(), "it holds the agent itself"),
    ] {
        match cgroup::of_pid(mount, pid) {
            Some(p) if p.starts_with(path) => return refuse(why),
            Some(_) => {}
            None => return refuse("the cgroup of pid 1 or of the agent is unknown"),
        }
    }
    if let Some(id) = container {
        let scope = format!("docker-{id}.scope");
        let named = rel
            .components()
            .any(|c| c.as_os_str() == id || c.as_os_str() == scope.as_str());
        if !named {
            return refuse("its path does not name the container");
        }
    }
    Ok(())
}

/// Freezes `path` and kills every process in it and below it, after [`check`].
pub fn freeze_and_kill(mount: &Path, path: &Path, container: &str) -> Result<(), KillError> {
    check(mount, path, Some(container))?;
    let io = |source| KillError::Io {
        path: path.to_owned(),
        source,
    };
    fs::write(path.join("cgroup.freeze"), "1").map_err(io)?;
    fs::write(path.join("cgroup.kill"), "1").map_err(io)
}

/// Kills whatever is in `path` again (processes that joined the frozen cgroup since). Ok(false)
/// once the cgroup is gone.
pub fn kill_members(path: &Path) -> io::Result<bool> {
    match fs::read_to_string(path.join("cgroup.events")) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
        Ok(events) => {
            if events.lines().any(|l| l.trim() == "populated 1") {
                fs::write(path.join("cgroup.kill"), "1")?;
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn refused(r: Result<(), KillError>) -> &'static str {
        match r {
            Err(KillError::Refused { why, .. }) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn never_the_root_nor_outside_the_mount() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(refused(check(m, m, None)), "it is the cgroup v2 root");
        assert_eq!(
            refused(check(m, Path::new("/tmp/x"), None)),
            "it is not under the cgroup v2 mount"
        );
        assert_eq!(
            refused(check(m, &m.join("a/../.."), None)),
            "its path is not plain"
        );
    }

    #[test]
    fn a_container_cgroup_must_name_the_container() {
        let mount = match crate::sys::mounts::cgroup2_mount() {
            Ok(m) => m,
            Err(_) => return,
        };
        let other = ID.replace('3', "4");
        for (path, ok) in [
            (format!("docker/{ID}"), true),
            (format!("system.slice/docker-{ID}.scope"), true),
            (format!("docker/{ID}/sub"), true),
            (format!("docker/{other}"), false),
            ("docker".to_owned(), false),
        ] {
            let r = check(&mount, &mount.join(&path), Some(ID));
            if ok {
                assert!(r.is_ok(), "{path}: {r:?}");
            } else {
                assert_eq!(refused(r), "its path does not name the container", "{path}");
            }
        }
    }

    #[test]
    fn never_a_cgroup_that_holds_the_agent_or_init() {
        let Ok(mount) = crate::sys::mounts::cgroup2_mount() else {
            return;
        };
        let Some(own) = cgroup::of_pid(&mount, std::process::id()) else {
            return;
        };
        if own == mount {
            // This process sits in the root: every cgroup that holds it is the root.
            return;
        }
        let why = refused(check(&mount, &own, None));
        assert!(why.contains("the agent") || why.contains("pid 1"), "{why}");
    }
}
