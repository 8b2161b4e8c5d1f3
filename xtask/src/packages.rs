//! The host programs the tests and the benchmark run, and the Debian packages that bring them:
//! one table, checked before anything runs and installed (`apt-get install`) when missing, so
//! a fresh Debian or Ubuntu host needs nothing but the test command.
//!
//! A program counts as present when it is on PATH (or in /usr/sbin, /sbin), whatever installed
//! it: a host with Docker CE's `dockerd` does not get Debian's `docker.io` on top.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::say;

/// Who needs a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The privileged tests.
    Tests,
    /// The Docker end-to-end tests (`--with-docker`) and the benchmark's agent part.
    Docker,
    /// `cargo xtask bench`.
    Bench,
}

/// What shows that a package is there.
#[derive(Debug, Clone, Copy)]
enum Present {
    /// A program on PATH (or in /usr/sbin, /sbin).
    Program(&'static str),
    /// A file it installs.
    File(&'static str),
}

struct Package {
    name: &'static str,
    present: Present,
    need: Need,
    /// Why, for the log line that installs it.
    why: &'static str,
}

/// Every host package of the tests and the benchmark: one row each.
const PACKAGES: &[Package] = &[
    Package {
        name: "bpftool",
        present: Present::Program("bpftool"),
        need: Need::Tests,
        why: "the tests compare the kernel's view of attached programs",
    },
    Package {
        name: "iproute2",
        present: Present::Program("ip"),
        need: Need::Tests,
        why: "network namespaces and veth pairs",
    },
    Package {
        name: "dnsmasq",
        present: Present::Program("dnsmasq"),
        need: Need::Tests,
        why: "one resolver test runs a real dnsmasq",
    },
    Package {
        name: "docker.io",
        present: Present::Program("dockerd"),
        need: Need::Docker,
        why: "dockerd for the end-to-end tests",
    },
    Package {
        name: "iptables",
        present: Present::Program("iptables"),
        need: Need::Docker,
        why: "dockerd needs it",
    },
    Package {
        name: "nginx",
        present: Present::Program("nginx"),
        need: Need::Bench,
        why: "the nginx stream proxy the enforcer is compared with",
    },
    Package {
        name: "libnginx-mod-stream",
        present: Present::File("/usr/lib/nginx/modules/ngx_stream_module.so"),
        need: Need::Bench,
        why: "nginx's stream module",
    },
    Package {
        name: "wrk",
        present: Present::Program("wrk"),
        need: Need::Bench,
        why: "HTTP load",
    },
    Package {
        name: "iperf3",
        present: Present::Program("iperf3"),
        need: Need::Bench,
        why: "bulk throughput",
    },
    Package {
        name: "nftables",
        present: Present::Program("nft"),
        need: Need::Bench,
        why: "the nftables cgroup + set the enforcer is compared with",
    },
];

/// Services that installing a package may start (where no policy-rc.d forbids it); the bench
/// runs its own instances, so one that was not running before the install is stopped again.
const SERVICES: &[&str] = &["nginx", "iperf3"];

/// Installs the packages of `needs` that are missing; a no-op (and no network) when none is.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let missing: Vec<&Package> = PACKAGES
        .iter()
        .filter(|p| needs.contains(&p.need) && !is_present(p.present))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    for p in &missing {
        say(&format!("missing Debian package {}: {}", p.name, p.why));
    }
    if find_program("apt-get").is_none() {
        bail!(
            "missing packages {} and no apt-get to install them: install them with the host's package manager",
            names.join(" ")
        );
    }
    let running: Vec<&str> = SERVICES.iter().copied().filter(|s| is_running(s)).collect();
    say("apt-get update");
    apt(&["update", "-qq"])?;
    say(&format!("apt-get install {}", names.join(" ")));
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&names);
    apt(&args)?;
    for s in SERVICES {
        if !running.contains(s) && is_running(s) {
            say(&format!(
                "stopping the {s} service that installing it started"
            ));
            let stopped = Command::new("service")
                .args([s, "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success());
            if !stopped {
                let _ = Command::new("pkill").args(["-x", s]).status();
            }
        }
    }
    let still: Vec<&str> = missing
        .iter()
        .filter(|p| !is_present(p.present))
        .map(|p| p.name)
        .collect();
    if !still.is_empty() {
        bail!(
            "installed {} but still missing what they provide: {}",
            names.join(" "),
            still.join(" ")
        );
    }
    Ok(())
}

fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn is_present(p: Present) -> bool {
    match p {
        Present::Program(name) => find_program(name).is_some(),
        Present::File(path) => Path::new(path).exists(),
    }
}

/// `name` on PATH, or in the sbin directories a non-root PATH leaves out.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_running(name: &str) -> bool {
    Command::new("pgrep")
        .args(["-x", name])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_package_is_listed_once() {
        let mut names: Vec<&str> = PACKAGES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn a_program_on_path_is_present_and_a_made_up_one_is_not() {
        assert!(is_present(Present::Program("sh")));
        assert!(!is_present(Present::Program("egress-no-such-program")));
        assert!(!is_present(Present::File("/nonexistent/egress")));
    }
}
