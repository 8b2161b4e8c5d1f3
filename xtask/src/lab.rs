//! The host side of the tests, done by the harness's `egress-lab` binary
//! (`tests/src/bin/egress-lab.rs`): the kernel filesystems (`kernel-fs`, [`kernel_fs`]) and the
//! shared dockerd of the Docker tests (the logic is `egress_tests::docker::dockerd`, the one place
//! that starts and stops dockerd). The xtask only runs it: `dockerd-up` uses the daemon on
//! `/var/run/docker.sock` or starts one (recorded in `target/dockerd.state.json`) and makes the
//! test image; `dockerd-down` stops the daemon recorded there, if any, and undoes its host
//! changes.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, say, sys, target_dir};

/// The image the Docker end-to-end tests run.
pub const TEST_IMAGE: &str = "egress-test-busybox:latest";

/// `cargo ARGS` that build and run `egress-lab`.
const CARGO_RUN: [&str; 7] = [
    "run",
    "-q",
    "-p",
    "egress-tests",
    "--bin",
    "egress-lab",
    "--",
];

/// How to run `egress-lab`.
#[derive(Debug, Clone)]
pub enum Lab {
    /// A binary cargo built already.
    Built(PathBuf),
    /// `cargo run -q -p egress-tests --bin egress-lab --`.
    CargoRun,
}

impl Lab {
    fn command(&self, task: &str) -> Command {
        let mut c = match self {
            Lab::Built(exe) => Command::new(exe),
            Lab::CargoRun => {
                let mut c = cargo::cargo();
                c.args(CARGO_RUN);
                c
            }
        };
        c.arg(task)
            .arg("--target-dir")
            .arg(target_dir())
            .args(["--image", TEST_IMAGE])
            .stdin(Stdio::null());
        c
    }

    /// Runs `egress-lab TASK` (its progress on our stderr); its stdout.
    fn run(&self, task: &str) -> Result<String> {
        let out = self
            .command(task)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running egress-lab {task}"))?;
        if !out.status.success() {
            bail!("egress-lab {task} failed ({})", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// The shared dockerd while the tests use it: `egress-lab dockerd-down` when dropped or
/// [`stopped`](DockerdGuard::stop) (a no-op unless `dockerd-up` started or took over a daemon).
pub struct DockerdGuard {
    lab: Option<Lab>,
    /// The `DOCKER_HOST` to give the tests.
    pub host: String,
}

impl DockerdGuard {
    /// Stops the daemon `dockerd-up` started and undoes its host changes; reports failures.
    pub fn stop(mut self) -> Result<()> {
        match self.lab.take() {
            Some(lab) => lab.run("dockerd-down").map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for DockerdGuard {
    fn drop(&mut self) {
        if let Some(lab) = self.lab.take()
            && let Err(e) = lab.run("dockerd-down")
        {
            say(&format!("error: stopping dockerd: {e:#}"));
        }
    }
}

/// `egress-lab kernel-fs`: cgroup v2 is there, bpffs and tracefs are mounted; the cgroup v2
/// mount.
pub fn kernel_fs(lab: &Lab) -> Result<PathBuf> {
    let out = lab.run("kernel-fs")?;
    match out.lines().last() {
        Some(l) if !l.is_empty() => Ok(PathBuf::from(l)),
        _ => bail!("egress-lab kernel-fs printed no cgroup v2 mount"),
    }
}

/// `egress-lab dockerd-up`: a daemon on `/var/run/docker.sock` with the test image.
pub fn up(lab: Lab) -> Result<DockerdGuard> {
    // The guard first: a daemon started by a `dockerd-up` that then failed is stopped too.
    let mut guard = DockerdGuard {
        lab: Some(lab.clone()),
        host: String::new(),
    };
    let out = lab.run("dockerd-up")?;
    guard.host = out.lines().last().unwrap_or_default().to_owned();
    if guard.host.is_empty() {
        bail!("egress-lab dockerd-up printed no DOCKER_HOST");
    }
    Ok(guard)
}

/// The `docker-check` task: `dockerd-up`, `docker run --rm egress-test-busybox echo hi`, then
/// `dockerd-down`.
pub fn check() -> Result<()> {
    if !sys::is_root() {
        bail!("starting dockerd needs root: run `sudo -E cargo xtask docker-check`");
    }
    sys::catch_signals();
    let guard = up(Lab::CargoRun)?;
    Lab::CargoRun.run("docker-check")?;
    guard.stop()
}

/// The hidden `stop-dockerd` task: if a state file from a run that could not clean up exists,
/// `egress-lab dockerd-down` stops that dockerd and undoes its host changes. No-op (and no
/// build) otherwise.
pub fn stop_leftover() -> Result<()> {
    if !state_file().exists() {
        return Ok(());
    }
    Lab::CargoRun.run("dockerd-down").map(drop)
}

fn state_file() -> PathBuf {
    target_dir().join("dockerd.state.json")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn runs_egress_lab_with_the_target_dir_and_image() {
        let c = Lab::Built(PathBuf::from("/t/egress-lab")).command("dockerd-up");
        assert_eq!(c.get_program(), Path::new("/t/egress-lab"));
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "dockerd-up");
        assert_eq!(args[1], "--target-dir");
        assert_eq!(args[3..], ["--image", TEST_IMAGE]);
        let c = Lab::CargoRun.command("dockerd-down");
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[..7], CARGO_RUN);
        assert_eq!(args[7], "dockerd-down");
    }
}
