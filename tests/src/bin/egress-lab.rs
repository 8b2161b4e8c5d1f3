//! `egress-lab`: the host side of the tests — the kernel filesystems, and the shared dockerd of
//! the Docker tests, brought up and down the one way the harness knows
//! ([`egress_tests::docker::dockerd`]). `cargo xtask test`, `cargo xtask bench`,
//! `cargo xtask docker-check` and `cargo xtask stop-dockerd` run it.
//!
//! ```text
//! egress-lab dockerd-up    use the dockerd on /var/run/docker.sock or start one (recorded in
//!                          <target>/dockerd.state.json), make the test image; prints the
//!                          DOCKER_HOST to use
//! egress-lab dockerd-down  stop the dockerd recorded there and undo its host changes
//! egress-lab docker-check  `docker run --rm <image> echo hi` must print `hi`
//! egress-lab kernel-fs     check cgroup v2, mount bpffs and tracefs if missing (as the agent
//!                          does); prints the cgroup v2 mount
//! ```

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use egress_agent::sys::mounts;
use egress_tests::{
    bins,
    docker::{DEFAULT_IMAGE, Docker, dockerd, image::ensure_busybox_image},
};

#[derive(Debug, Parser)]
#[command(
    name = "egress-lab",
    about = "The host side of the tests: kernel filesystems and the shared dockerd"
)]
struct Cli {
    /// The cargo target directory (state file and dockerd log). Default: the one this binary
    /// is in.
    #[arg(long, value_name = "DIR", global = true)]
    target_dir: Option<PathBuf>,
    /// The test image.
    #[arg(long, default_value = DEFAULT_IMAGE, global = true)]
    image: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Use the dockerd on /var/run/docker.sock or start one, make the test image, print the
    /// DOCKER_HOST to use.
    DockerdUp,
    /// Stop the dockerd that `dockerd-up` started (none other) and undo its host changes.
    DockerdDown,
    /// Run `echo hi` in a container of the test image.
    DockerCheck,
    /// Check for a cgroup v2 mount, mount bpffs at /sys/fs/bpf and tracefs at
    /// /sys/kernel/tracing if they are missing; print the cgroup v2 mount.
    KernelFs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egress-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let target = cli.target_dir.clone().unwrap_or_else(|| {
        bins::target_profile_dir()
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default()
    });
    let host = format!("unix://{}", dockerd::SOCK);
    match cli.command {
        Cmd::DockerdUp => {
            require_root("dockerd-up")?;
            dockerd::up(&target)?;
            ensure_busybox_image(&Docker::new(&host), &cli.image)?;
            println!("{host}");
            Ok(())
        }
        Cmd::DockerdDown => {
            require_root("dockerd-down")?;
            dockerd::down(&target)
        }
        Cmd::KernelFs => {
            require_root("kernel-fs")?;
            let cg2 = mounts::cgroup2_mount()?;
            if mounts::ensure_bpffs(Path::new(BPFFS))? {
                eprintln!("egress-lab: mounted bpffs at {BPFFS}");
            }
            mounts::ensure_tracefs()?;
            println!("{}", cg2.display());
            Ok(())
        }
        Cmd::DockerCheck => {
            let said = Docker::new(&host)
                .try_run(&["run", "--rm", &cli.image, "echo", "hi"])
                .map_err(anyhow::Error::msg)?;
            if said != "hi" {
                bail!("`docker run --rm {} echo hi` printed {said:?}", cli.image);
            }
            eprintln!(
                "egress-lab: `docker run --rm {} echo hi` printed hi",
                cli.image
            );
            Ok(())
        }
    }
}

/// Where bpffs is mounted when it is missing (the tests' pin directories are below it).
const BPFFS: &str = "/sys/fs/bpf";

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} changes the host (mounts, dockerd), which needs root: run it with sudo");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
