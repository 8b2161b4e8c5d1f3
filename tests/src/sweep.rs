//! What a killed run left behind: the harness names its cgroups ([`crate::cgroup::CgroupTree`]),
//! network namespaces ([`crate::netns::NetNs`]) and pin directories ([`crate::pins::PinDir`])
//! `egress-test-<name>-<pid>`; [`leftovers`] removes those whose process is gone. A run that
//! was killed before its guards could drop would otherwise leave programs attached, cgroups
//! policed and namespaces behind.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::cgroup::remove_tree;

/// The pid in a harness name `egress-test-<name>-<pid>`, if that process is gone (and is not
/// this one).
pub fn dead_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("egress-test-")?;
    let pid: u32 = rest.rsplit_once('-')?.1.parse().ok()?;
    let gone = pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
    gone.then_some(pid)
}

fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}

/// Removes the pin directories (detaching and unpinning what is in them), cgroups (in the
/// cgroup v2 mount and in every v1 hierarchy below `/sys/fs/cgroup`, where runc mirrors a
/// `--cgroup-parent`) and network namespaces of dead harness processes. Says what it removes.
pub fn leftovers() {
    for (name, path) in entries(Path::new("/sys/fs/bpf")) {
        if dead_owner(&name).is_some() {
            eprintln!("removing {} (left by a killed run)", path.display());
            let _ = egress_agent::status::cleanup(&path);
            let _ = fs::remove_dir(&path);
        }
    }
    let mut hierarchies = vec![PathBuf::from("/sys/fs/cgroup")];
    hierarchies.extend(
        entries(Path::new("/sys/fs/cgroup"))
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| p.join("cgroup.procs").exists()),
    );
    for h in hierarchies {
        for (name, path) in entries(&h) {
            if dead_owner(&name).is_some() && path.is_dir() {
                eprintln!("removing cgroup {} (left by a killed run)", path.display());
                remove_tree(&path);
            }
        }
    }
    for (name, _) in entries(Path::new("/run/netns")) {
        if dead_owner(&name).is_some() {
            eprintln!("removing network namespace {name} (left by a killed run)");
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stdin(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dead_owner;

    #[test]
    fn only_names_of_dead_processes_count() {
        assert_eq!(
            dead_owner("egress-test-bench-free-4194999"),
            Some(4_194_999)
        );
        assert_eq!(dead_owner("egress-test-bench-4194999"), Some(4_194_999));
        assert_eq!(dead_owner("egress-test-bench-1"), None); // init is alive
        let me = format!("egress-test-bench-docker-{}", std::process::id());
        assert_eq!(dead_owner(&me), None);
        assert_eq!(dead_owner("egress-e2e-x-4194999"), None);
        assert_eq!(dead_owner("egress-test-4194999"), None);
    }
}
