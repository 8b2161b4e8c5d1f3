//! Finding a Docker container's cgroup v2 directory, for every layout in the field.
//!
//! | host cgroups | driver   | `--cgroup-parent` | directory                                      |
//! |--------------|----------|-------------------|------------------------------------------------|
//! | pure v2      | systemd  | –                 | `/sys/fs/cgroup/system.slice/docker-<id>.scope` |
//! | pure v2      | systemd  | `a-b.slice`       | `/sys/fs/cgroup/a.slice/a-b.slice/docker-<id>.scope` |
//! | pure v2      | cgroupfs | –                 | `/sys/fs/cgroup/docker/<id>`                    |
//! | pure v2      | cgroupfs | `/x/y` or `x/y`   | `/sys/fs/cgroup/x/y/<id>`                       |
//! | hybrid       | any      | any               | the same below `/sys/fs/cgroup/unified`         |
//!
//! The mount (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`) comes from
//! [`crate::sys::mounts::cgroup2_mount`]; the driver from `docker info` (see
//! [`super::watch::DockerEvent::Sync`]). The best source is the container's init process:
//! `/proc/<pid>/cgroup` names the cgroup the kernel really put it in, whatever layout, daemon
//! option (a daemon-wide `cgroup-parent` is not visible in the container's `HostConfig`) or
//! cgroup namespace: read from the host, the path is the host's, also for `--cgroupns=private`.
//! [`find`] prefers it and falls back to the [`candidates`] of the layout.
//!
//! Every directory found here ends in a component that
//! [`egress_common::container::find_container_id`] recognises (`<id>` or `docker-<id>.scope`),
//! so user space and the `cgroup_mkdir` tracepoint agree on what a container cgroup is. A path
//! from `/proc` that points *below* that (a container running systemd moves its init into
//! `<container>/init.scope`) is cut back to the container's own directory.
//!
//! Limits: a relative cgroupfs `--cgroup-parent` is taken relative to the cgroup v2 root (where
//! runc puts it when dockerd runs in the root cgroup); the pid-based lookup covers the rest.
//! An agent running in a private cgroup namespace of its own sees `/proc` paths relative to its
//! namespace root and must run with `--cgroupns=host`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::sys::{
    cgroup::{self, CgroupId},
    kernel_path::KernelPath,
};
use egress_common::container::ContainerId;

/// How dockerd names its containers' cgroups (`docker info`'s `CgroupDriver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CgroupDriver {
    /// `/docker/<id>`, or `<cgroup-parent>/<id>`.
    #[default]
    Cgroupfs,
    /// `/system.slice/docker-<id>.scope`, or `<expanded parent slice>/docker-<id>.scope`.
    Systemd,
}

impl CgroupDriver {
    /// From `docker info`'s `CgroupDriver` (`cgroupfs`, `systemd`); None for anything else
    /// (`none` on rootless daemons without cgroups, empty on very old daemons).
    pub fn from_docker(name: &str) -> Option<Self> {
        match name {
            "cgroupfs" => Some(Self::Cgroupfs),
            "systemd" => Some(Self::Systemd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Cgroupfs => "cgroupfs",
            Self::Systemd => "systemd",
        }
    }
}

impl std::fmt::Display for CgroupDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The cgroup v2 path in the text of `/proc/<pid>/cgroup`: the `0::<path>` line (pure v2 and
/// hybrid hosts have one). None on a pure cgroup v1 host, or when the process's cgroup was
/// removed (` (deleted)`).
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.strip_prefix("0::")?;
        if path.is_empty() || !path.starts_with('/') || path.ends_with(" (deleted)") {
            return None;
        }
        Some(path.to_owned())
    })
}

/// Where the container's cgroup v2 directory should be for this driver and cgroup parent, most
/// likely first. `mount` is the cgroup v2 mount.
pub fn candidates(
    mount: &Path,
    id: &ContainerId,
    cgroup_parent: Option<&str>,
    driver: CgroupDriver,
) -> Vec<PathBuf> {
    let name = match driver {
        CgroupDriver::Cgroupfs => id.to_string(),
        CgroupDriver::Systemd => format!("docker-{id}.scope"),
    };
    vec![parent_dir(mount, cgroup_parent, driver).join(name)]
}

/// The directory dockerd makes a container's cgroup in, for this driver and
/// `--cgroup-parent` (None or empty: the driver's default, `/docker` or `/system.slice`).
/// `mount` is the cgroup v2 mount.
pub fn parent_dir(mount: &Path, cgroup_parent: Option<&str>, driver: CgroupDriver) -> PathBuf {
    let parent = cgroup_parent.map(str::trim).filter(|p| !p.is_empty());
    match driver {
        CgroupDriver::Cgroupfs => under(mount, parent.unwrap_or("/docker")),
        CgroupDriver::Systemd => {
            let parent = parent.unwrap_or("system.slice");
            match parent.strip_suffix(".slice") {
                // `a-b.slice` lives at `a.slice/a-b.slice` (systemd.slice(5)); `-.slice` is the
                // root.
                Some(_) if !parent.contains('/') => mount.join(expand_slice(parent)),
                // Docker refuses other parents with the systemd driver; take them as a path.
                _ => under(mount, parent),
            }
        }
    }
}

/// This dockerd's cgroup parents as the kernel names them (see
/// [`egress_common::maps::CONTAINER_PARENTS`]): the default parent of `driver`.
pub fn default_parent(driver: CgroupDriver) -> KernelPath {
    parent_path(None, driver).unwrap_or_else(KernelPath::root)
}

/// The parent a container's cgroup is made in for its `--cgroup-parent`, as the kernel names
/// it; None for a parent that is no path below the root (`..`).
pub fn parent_path(cgroup_parent: Option<&str>, driver: CgroupDriver) -> Option<KernelPath> {
    let root = Path::new("/");
    KernelPath::of_dir(root, &parent_dir(root, cgroup_parent, driver)).ok()
}

/// The parent of a container's cgroup directory `dir` (below the cgroup v2 mount `mount`), as
/// the kernel names it.
pub fn parent_of_dir(mount: &Path, dir: &Path) -> Option<KernelPath> {
    KernelPath::of_dir(mount, dir).ok()?.parent()
}

/// `parent` (absolute or relative) below the cgroup v2 mount.
fn under(mount: &Path, parent: &str) -> PathBuf {
    let rel = parent.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_owned()
    } else {
        mount.join(rel)
    }
}

/// systemd's path of a slice unit: `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`,
/// `-.slice` → `` (the root).
fn expand_slice(slice: &str) -> PathBuf {
    let name = slice.strip_suffix(".slice").unwrap_or(slice);
    let mut out = PathBuf::new();
    if name.is_empty() || name == "-" {
        return out;
    }
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push(format!("{prefix}.slice"));
    }
    out
}

/// The container's cgroup v2 directory on this host, if it exists: from `/proc/<pid>/cgroup`
/// of its init process when `pid` is known (the truth, whatever the layout), else the first of
/// the [`candidates`] that exists.
pub fn find(
    mount: &Path,
    id: &ContainerId,
    pid: Option<u32>,
    cgroup_parent: Option<&str>,
    driver: CgroupDriver,
) -> Option<PathBuf> {
    let proc_text = pid.and_then(|p| fs::read_to_string(crate::host::get().proc_cgroup(p)).ok());
    choose(
        mount,
        id,
        proc_text.as_deref(),
        cgroup_parent,
        driver,
        &|p: &Path| p.is_dir(),
    )
}

/// [`find`] without the file system reads: `proc_text` is `/proc/<pid>/cgroup`'s text,
/// `exists` tells whether a directory exists.
fn choose(
    mount: &Path,
    id: &ContainerId,
    proc_text: Option<&str>,
    cgroup_parent: Option<&str>,
    driver: CgroupDriver,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(dir) = proc_text
        .and_then(parse_proc_cgroup)
        .and_then(|p| container_dir(&p, id).map(|d| under(mount, d)))
        && exists(&dir)
    {
        return Some(dir);
    }
    candidates(mount, id, cgroup_parent, driver)
        .into_iter()
        .find(|p| exists(p))
}

/// `path` (a cgroup path from `/proc`) cut after the component that names container `id`
/// (`<id>` or `docker-<id>.scope`); None if no component does (e.g. `/` as seen from inside a
/// private cgroup namespace, or the process is not in the container's cgroup).
fn container_dir<'a>(path: &'a str, id: &ContainerId) -> Option<&'a str> {
    let mut end = 0;
    for comp in path.split('/') {
        let comp_end = end + comp.len();
        if ContainerId::of_cgroup_path(&path[..comp_end]) == Some(*id) {
            // Not the first component: a bare id is no container (see egress_common).
            return (end > 0).then(|| &path[..comp_end]);
        }
        end = comp_end + 1;
    }
    None
}

/// The cgroup ids of `dir` and of every cgroup below it (`dir` first); empty if `dir` does not
/// exist. Cgroups removed during the walk are left out.
pub fn subtree_ids(dir: &Path) -> Vec<CgroupId> {
    cgroup::subtree(dir).into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use std::os::unix::fs::MetadataExt;

    use egress_common::container::{PATH_SCAN, find_container_id, key_at};

    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    const OTHER: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const V2: &str = "/sys/fs/cgroup";
    const HYBRID: &str = "/sys/fs/cgroup/unified";

    fn id() -> ContainerId {
        ID.parse().unwrap()
    }

    fn cands(mount: &str, parent: Option<&str>, driver: CgroupDriver) -> Vec<PathBuf> {
        candidates(Path::new(mount), &id(), parent, driver)
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// `choose` over a fake file system holding exactly `dirs`.
    fn choose_in(
        mount: &str,
        dirs: &[String],
        proc_text: Option<&str>,
        parent: Option<&str>,
        driver: CgroupDriver,
    ) -> Option<PathBuf> {
        let set: HashSet<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        choose(
            Path::new(mount),
            &id(),
            proc_text,
            parent,
            driver,
            &|q: &Path| set.contains(q),
        )
    }

    /// The kernel side's verdict on a cgroup path relative to the mount.
    fn kernel_sees(mount: &str, dir: &Path) -> Option<String> {
        let rel = format!("/{}", dir.strip_prefix(mount).unwrap().display());
        let mut buf = [0u8; PATH_SCAN];
        buf[..rel.len()].copy_from_slice(rel.as_bytes());
        let at = find_container_id(&buf, rel.len())?;
        Some(String::from_utf8(key_at(&buf, at).id.to_vec()).unwrap())
    }

    #[test]
    fn driver_names() {
        assert_eq!(
            CgroupDriver::from_docker("cgroupfs"),
            Some(CgroupDriver::Cgroupfs)
        );
        assert_eq!(
            CgroupDriver::from_docker("systemd"),
            Some(CgroupDriver::Systemd)
        );
        assert_eq!(CgroupDriver::from_docker("none"), None);
        assert_eq!(CgroupDriver::from_docker(""), None);
        assert_eq!(CgroupDriver::Systemd.to_string(), "systemd");
    }

    #[test]
    fn proc_cgroup_pure_v2() {
        let text = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            parse_proc_cgroup(&text),
            Some(format!("/system.slice/docker-{ID}.scope"))
        );
    }

    #[test]
    fn proc_cgroup_hybrid() {
        // Seen on this project's hosts (Debian, docker 20.10, cgroupfs driver).
        let text = format!(
            "9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n4:memory:/docker/{ID}\n\
             1:cpu:/docker/{ID}\n0::/docker/{ID}\n"
        );
        assert_eq!(parse_proc_cgroup(&text), Some(format!("/docker/{ID}")));
    }

    #[test]
    fn proc_cgroup_pure_v1_has_no_v2_path() {
        let text = format!(
            "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n2:cpu,cpuacct:/docker/{ID}\n\
             1:name=systemd:/docker/{ID}\n"
        );
        assert_eq!(parse_proc_cgroup(&text), None);
        assert_eq!(parse_proc_cgroup(""), None);
    }

    #[test]
    fn proc_cgroup_deleted_or_odd() {
        assert_eq!(parse_proc_cgroup("0::/docker/x (deleted)\n"), None);
        assert_eq!(parse_proc_cgroup("0::\n"), None);
        assert_eq!(parse_proc_cgroup("0::/\n"), Some("/".into()));
    }

    #[test]
    fn pure_v2_systemd_driver() {
        let want = p(&format!("{V2}/system.slice/docker-{ID}.scope"));
        assert_eq!(cands(V2, None, CgroupDriver::Systemd), vec![want.clone()]);
        assert_eq!(
            choose_in(
                V2,
                &[want.display().to_string()],
                None,
                None,
                CgroupDriver::Systemd
            ),
            Some(want.clone())
        );
        let proc = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            choose_in(
                V2,
                &[want.display().to_string()],
                Some(&proc),
                None,
                CgroupDriver::Systemd
            ),
            Some(want)
        );
    }

    #[test]
    fn pure_v2_cgroupfs_driver() {
        let want = p(&format!("{V2}/docker/{ID}"));
        assert_eq!(cands(V2, None, CgroupDriver::Cgroupfs), vec![want.clone()]);
        assert_eq!(
            choose_in(
                V2,
                &[want.display().to_string()],
                None,
                None,
                CgroupDriver::Cgroupfs
            ),
            Some(want)
        );
    }

    #[test]
    fn hybrid_unified_differs_only_by_the_mount() {
        assert_eq!(
            cands(HYBRID, None, CgroupDriver::Cgroupfs),
            vec![p(&format!("{HYBRID}/docker/{ID}"))]
        );
        assert_eq!(
            cands(HYBRID, None, CgroupDriver::Systemd),
            vec![p(&format!("{HYBRID}/system.slice/docker-{ID}.scope"))]
        );
        let want = p(&format!("{HYBRID}/docker/{ID}"));
        let proc = format!("4:memory:/docker/{ID}\n0::/docker/{ID}\n");
        assert_eq!(
            choose_in(
                HYBRID,
                &[want.display().to_string()],
                Some(&proc),
                None,
                CgroupDriver::Cgroupfs
            ),
            Some(want)
        );
    }

    #[test]
    fn cgroupfs_custom_parent_absolute_or_relative() {
        for parent in ["/x", "x", "/x/", " /x "] {
            assert_eq!(
                cands(V2, Some(parent), CgroupDriver::Cgroupfs),
                vec![p(&format!("{V2}/x/{ID}"))],
                "{parent:?}"
            );
        }
        assert_eq!(
            cands(HYBRID, Some("/a/b/c"), CgroupDriver::Cgroupfs),
            vec![p(&format!("{HYBRID}/a/b/c/{ID}"))]
        );
        // An empty parent is Docker's default.
        assert_eq!(
            cands(V2, Some(""), CgroupDriver::Cgroupfs),
            vec![p(&format!("{V2}/docker/{ID}"))]
        );
    }

    #[test]
    fn systemd_custom_parent_slices_expand() {
        assert_eq!(
            cands(V2, Some("my.slice"), CgroupDriver::Systemd),
            vec![p(&format!("{V2}/my.slice/docker-{ID}.scope"))]
        );
        assert_eq!(
            cands(V2, Some("a-b.slice"), CgroupDriver::Systemd),
            vec![p(&format!("{V2}/a.slice/a-b.slice/docker-{ID}.scope"))]
        );
        assert_eq!(
            cands(HYBRID, Some("a-b-c.slice"), CgroupDriver::Systemd),
            vec![p(&format!(
                "{HYBRID}/a.slice/a-b.slice/a-b-c.slice/docker-{ID}.scope"
            ))]
        );
        assert_eq!(
            cands(V2, Some("-.slice"), CgroupDriver::Systemd),
            vec![p(&format!("{V2}/docker-{ID}.scope"))]
        );
        // Not a slice: taken as a path (Docker itself refuses this).
        assert_eq!(
            cands(V2, Some("/odd/place"), CgroupDriver::Systemd),
            vec![p(&format!("{V2}/odd/place/docker-{ID}.scope"))]
        );
    }

    #[test]
    fn cgroupns_private_reads_the_host_path() {
        // From inside the container's own cgroup namespace, its cgroup is the root ...
        let inside = "0::/\n";
        // ... while the host (where the agent reads /proc/<pid>/cgroup) sees the real path.
        let host = format!("0::/system.slice/docker-{ID}.scope\n");
        let dir = p(&format!("{V2}/system.slice/docker-{ID}.scope"));
        let dirs = [dir.display().to_string()];
        assert_eq!(
            choose_in(V2, &dirs, Some(&host), None, CgroupDriver::Systemd),
            Some(dir.clone())
        );
        // A namespace-relative text never yields the mount root: fall back to the layout.
        assert_eq!(
            choose_in(V2, &dirs, Some(inside), None, CgroupDriver::Systemd),
            Some(dir)
        );
        assert_eq!(
            choose_in(V2, &[], Some(inside), None, CgroupDriver::Systemd),
            None
        );
    }

    #[test]
    fn proc_path_wins_over_the_layout() {
        // A daemon-wide cgroup-parent is not in the container's HostConfig: only /proc knows.
        let real = p(&format!("{V2}/custom/daemon/parent/{ID}"));
        let proc = format!("0::/custom/daemon/parent/{ID}\n");
        assert_eq!(
            choose_in(
                V2,
                &[real.display().to_string()],
                Some(&proc),
                None,
                CgroupDriver::Cgroupfs
            ),
            Some(real)
        );
    }

    #[test]
    fn proc_path_below_the_container_is_cut_back() {
        // systemd inside the container moved its init to init.scope.
        let dir = p(&format!("{V2}/system.slice/docker-{ID}.scope"));
        let proc = format!("0::/system.slice/docker-{ID}.scope/init.scope\n");
        assert_eq!(
            choose_in(
                V2,
                &[dir.display().to_string()],
                Some(&proc),
                None,
                CgroupDriver::Systemd
            ),
            Some(dir)
        );
    }

    #[test]
    fn proc_path_of_another_container_is_ignored() {
        // A recycled pid: the text names someone else.
        let ours = p(&format!("{V2}/docker/{ID}"));
        let theirs = format!("{V2}/docker/{OTHER}");
        let proc = format!("0::/docker/{OTHER}\n");
        assert_eq!(
            choose_in(
                V2,
                &[ours.display().to_string(), theirs],
                Some(&proc),
                None,
                CgroupDriver::Cgroupfs
            ),
            Some(ours)
        );
    }

    #[test]
    fn missing_everywhere_is_none() {
        assert_eq!(choose_in(V2, &[], None, None, CgroupDriver::Cgroupfs), None);
        let proc = format!("0::/docker/{ID}\n");
        assert_eq!(
            choose_in(V2, &[], Some(&proc), None, CgroupDriver::Cgroupfs),
            None
        );
    }

    #[test]
    fn container_dir_cuts_at_the_id() {
        let id = id();
        assert_eq!(
            container_dir(&format!("/docker/{ID}"), &id),
            Some(format!("/docker/{ID}").as_str())
        );
        assert_eq!(
            container_dir(&format!("/docker/{ID}/sub/more"), &id),
            Some(format!("/docker/{ID}").as_str())
        );
        assert_eq!(container_dir(ID, &id), None, "a bare id is no container");
        assert_eq!(container_dir("/", &id), None);
        assert_eq!(container_dir(&format!("/docker/{OTHER}"), &id), None);
    }

    /// Every directory this module can choose ends in a component the kernel side recognises
    /// as this container's.
    #[test]
    fn chosen_directories_are_recognised_by_the_kernel_side() {
        let layouts: [(&str, Option<&str>, CgroupDriver); 10] = [
            (V2, None, CgroupDriver::Systemd),
            (V2, None, CgroupDriver::Cgroupfs),
            (HYBRID, None, CgroupDriver::Cgroupfs),
            (HYBRID, None, CgroupDriver::Systemd),
            (V2, Some("/x"), CgroupDriver::Cgroupfs),
            (V2, Some("x/y"), CgroupDriver::Cgroupfs),
            (HYBRID, Some("/x"), CgroupDriver::Cgroupfs),
            (V2, Some("a-b.slice"), CgroupDriver::Systemd),
            (V2, Some("-.slice"), CgroupDriver::Systemd),
            (HYBRID, Some("a-b-c.slice"), CgroupDriver::Systemd),
        ];
        for (mount, parent, driver) in layouts {
            for dir in cands(mount, parent, driver) {
                assert_eq!(
                    kernel_sees(mount, &dir).as_deref(),
                    Some(ID),
                    "{} ({driver}, parent {parent:?})",
                    dir.display()
                );
                let chosen = choose_in(mount, &[dir.display().to_string()], None, parent, driver);
                assert_eq!(chosen.as_ref(), Some(&dir));
            }
        }
        let proc = format!("0::/system.slice/docker-{ID}.scope/init.scope\n");
        let dir = choose_in(
            V2,
            &[format!("{V2}/system.slice/docker-{ID}.scope")],
            Some(&proc),
            None,
            CgroupDriver::Systemd,
        )
        .unwrap();
        assert_eq!(kernel_sees(V2, &dir).as_deref(), Some(ID));
    }

    /// The parent registered for a container's cgroup is where the container's cgroup is made,
    /// whatever the driver and `--cgroup-parent`.
    #[test]
    fn parents_are_where_the_candidates_are() {
        let layouts: [(Option<&str>, CgroupDriver, &str); 8] = [
            (None, CgroupDriver::Cgroupfs, "/docker"),
            (None, CgroupDriver::Systemd, "/system.slice"),
            (Some("/x/y"), CgroupDriver::Cgroupfs, "/x/y"),
            (Some("x/y/"), CgroupDriver::Cgroupfs, "/x/y"),
            (Some("/"), CgroupDriver::Cgroupfs, "/"),
            (
                Some("a-b.slice"),
                CgroupDriver::Systemd,
                "/a.slice/a-b.slice",
            ),
            (Some("-.slice"), CgroupDriver::Systemd, "/"),
            (Some(""), CgroupDriver::Systemd, "/system.slice"),
        ];
        for mount in [V2, HYBRID] {
            for (parent, driver, want) in layouts {
                let got = parent_path(parent, driver).unwrap();
                assert_eq!(got.to_string(), want, "{parent:?} {driver}");
                let dir = &cands(mount, parent, driver)[0];
                assert_eq!(
                    parent_of_dir(Path::new(mount), dir),
                    Some(got),
                    "{}",
                    dir.display()
                );
            }
        }
        assert_eq!(
            default_parent(CgroupDriver::Cgroupfs).to_string(),
            "/docker"
        );
        assert_eq!(
            default_parent(CgroupDriver::Systemd).to_string(),
            "/system.slice"
        );
        assert_eq!(parent_path(Some("/a/../b"), CgroupDriver::Cgroupfs), None);
        assert_eq!(
            parent_of_dir(Path::new(V2), Path::new("/elsewhere/x")),
            None
        );
    }

    #[test]
    fn subtree_ids_walks_a_directory_tree() {
        let root = std::env::temp_dir().join(format!(
            "egress-subtree-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("c")).unwrap();
        fs::write(root.join("cgroup.procs"), "").unwrap();
        let ino = |q: &Path| fs::metadata(q).unwrap().ino();
        let ids = subtree_ids(&root);
        assert_eq!(
            ids,
            vec![
                ino(&root),
                ino(&root.join("a")),
                ino(&root.join("a/b")),
                ino(&root.join("c"))
            ]
        );
        assert!(subtree_ids(&root.join("missing")).is_empty());
        assert!(subtree_ids(&root.join("cgroup.procs")).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }
}
