//! Containers that no cgroup policy can hold: what in a container's configuration lets code
//! inside it switch the programs off, change its own cgroup, or leave its namespaces.
//!
//! - `--privileged`, or `CAP_SYS_ADMIN`, `CAP_NET_ADMIN`, `CAP_BPF` (or `ALL`) added: it can
//!   detach programs, write maps, or move itself between cgroups;
//! - a mount of the Docker socket (or of a directory above it, such as `/run` or `/`): it can
//!   start a container that is not policed, or one with the host's network;
//! - a mount of a bpffs (`/sys/fs/bpf` or below): the pinned maps and links themselves;
//! - a writable mount of a cgroupfs (`/sys/fs/cgroup`, or a directory above it): it can move its
//!   processes out of its policed cgroup;
//! - the host's PID namespace (`--pid host`): it sees and can signal the host's processes,
//!   including the agent's.
//!
//! The agent still polices such a container, warns at once naming it and the reasons, and
//! `status` shows it as "policed, not enforceable".

use std::path::{Component, Path};

/// What the agent reads of a container's privileges (`docker inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    /// `HostConfig.Privileged`.
    pub privileged: bool,
    /// `HostConfig.CapAdd`, as written (`SYS_ADMIN`, `CAP_NET_ADMIN`, `ALL`, ...).
    pub cap_add: Vec<String>,
    /// `HostConfig.PidMode` (`host`, `container:<id>`, or empty).
    pub pid_mode: String,
    /// The container's mounts.
    pub mounts: Vec<MountInfo>,
}

/// One of a container's mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountInfo {
    /// `bind`, `volume`, `tmpfs`, ...
    pub kind: String,
    /// The host path (for binds) or the volume's directory.
    pub source: String,
    pub destination: String,
    pub writable: bool,
}

/// Host paths of the Docker socket.
const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];
/// Where bpffs is mounted on the host.
const BPFFS: &str = "/sys/fs/bpf";
/// Where cgroupfs is mounted on the host.
const CGROUPFS: &str = "/sys/fs/cgroup";
/// Capabilities that reach past a cgroup policy.
const ESCAPE_CAPS: [&str; 3] = ["SYS_ADMIN", "NET_ADMIN", "BPF"];

/// True if `dir` is `path` or one of its ancestors (component-wise; `/run` is above
/// `/run/docker.sock`, `/ru` is not).
fn covers(dir: &str, path: &str) -> bool {
    let normal = |p: &str| -> Vec<String> {
        Path::new(p)
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    };
    let (dir, path) = (normal(dir), normal(path));
    path.starts_with(&dir)
}

/// Why a container with these privileges can escape or switch off a cgroup policy (empty if
/// it cannot), one short reason each.
pub fn escape_reasons(p: &Privileges) -> Vec<String> {
    let mut out = Vec::new();
    if p.privileged {
        out.push("--privileged".to_owned());
    }
    for cap in &p.cap_add {
        let name = cap.trim().to_ascii_uppercase();
        let name = name.strip_prefix("CAP_").unwrap_or(&name);
        if name == "ALL" || ESCAPE_CAPS.contains(&name) {
            out.push(format!("--cap-add {cap}"));
        }
    }
    if p.pid_mode == "host" {
        out.push("--pid host".to_owned());
    }
    for m in &p.mounts {
        let src = m.source.as_str();
        if src.is_empty() {
            continue;
        }
        let at = &m.destination;
        if DOCKER_SOCKETS.iter().any(|s| covers(src, s)) {
            out.push(format!("mounts the Docker socket ({src} at {at})"));
        }
        if covers(BPFFS, src) || covers(src, BPFFS) {
            out.push(format!("mounts a bpffs ({src} at {at})"));
        }
        if m.writable && (covers(CGROUPFS, src) || covers(src, CGROUPFS)) {
            out.push(format!("mounts a cgroupfs writable ({src} at {at})"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(src: &str, dst: &str, writable: bool) -> MountInfo {
        MountInfo {
            kind: "bind".into(),
            source: src.into(),
            destination: dst.into(),
            writable,
        }
    }

    #[test]
    fn a_plain_container_cannot_escape() {
        let p = Privileges {
            cap_add: vec!["NET_BIND_SERVICE".into(), "CAP_CHOWN".into()],
            mounts: vec![
                bind("/srv/data", "/data", true),
                bind("/sys/fs/cgroup", "/sys/fs/cgroup", false),
                bind("/running", "/x", false),
            ],
            pid_mode: "container:abc".into(),
            ..Privileges::default()
        };
        assert_eq!(escape_reasons(&p), Vec::<String>::new());
    }

    #[test]
    fn every_escape_is_named() {
        let p = Privileges {
            privileged: true,
            cap_add: vec![
                "sys_admin".into(),
                "CAP_NET_ADMIN".into(),
                "BPF".into(),
                "ALL".into(),
            ],
            pid_mode: "host".into(),
            mounts: vec![
                bind("/var/run/docker.sock", "/var/run/docker.sock", false),
                bind("/run", "/hostrun", false),
                bind("/", "/host", false),
                bind("/sys/fs/bpf", "/bpf", false),
                bind("/sys/fs/bpf/egress-enforcer", "/pins", false),
                bind("/sys/fs/cgroup", "/cg", true),
                bind("/sys", "/hostsys", true),
            ],
        };
        let r = escape_reasons(&p);
        assert_eq!(r.len(), 15, "{r:#?}");
        assert!(r[0] == "--privileged");
        assert!(r.iter().any(|x| x.contains("--cap-add sys_admin")));
        assert!(r.iter().any(|x| x.contains("--pid host")));
        assert!(
            r.iter()
                .any(|x| x.contains("Docker socket (/run at /hostrun)"))
        );
        assert!(
            r.iter()
                .any(|x| x.contains("bpffs (/sys/fs/bpf/egress-enforcer"))
        );
        assert!(
            r.iter()
                .any(|x| x.contains("cgroupfs writable (/sys at /hostsys)"))
        );
    }

    #[test]
    fn paths_are_compared_by_component() {
        assert!(covers("/run", "/run/docker.sock"));
        assert!(covers("/", "/run/docker.sock"));
        assert!(covers("/run/", "/run/docker.sock"));
        assert!(!covers("/ru", "/run/docker.sock"));
        assert!(!covers("/run/docker.sock.d", "/run/docker.sock"));
    }
}
