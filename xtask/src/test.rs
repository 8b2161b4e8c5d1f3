//! `cargo xtask test`: the one command that builds everything and runs every test.
//!
//! Steps: root check; the Debian packages the tests need (installed if missing); the eBPF
//! toolchain pieces (the pinned nightly included); build the agent
//! and the test binaries; unit tests; then (with `--with-docker`) dockerd and the test image;
//! then the privileged tests, one at a time. A dockerd this command started is stopped and its
//! host changes undone when it ends, also on Ctrl-C.

use std::{ffi::OsString, time::Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{
    cargo, ebpf, lab,
    packages::{self, Need},
    say, sys,
};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Also start dockerd if none answers on /var/run/docker.sock and build the
    /// `egress-test-busybox` image, for the Docker end-to-end tests.
    /// `EGRESS_TEST_DOCKER` counts unless it is empty, `0`, `false`, `no`, `off`, `n` or `f`.
    #[arg(long, env = "EGRESS_TEST_DOCKER", value_parser = clap::builder::FalseyValueParser::new())]
    pub with_docker: bool,

    /// Extra arguments for the test binaries (after `--`), e.g. a test name filter or
    /// `--nocapture`. Given to the unit and the privileged tests.
    #[arg(last = true, value_name = "TEST_ARGS")]
    pub test_args: Vec<OsString>,
}

pub fn run(args: TestArgs) -> Result<()> {
    let start = Instant::now();
    if !sys::is_root() {
        let mut again = String::from("sudo -E cargo xtask test");
        for a in std::env::args_os().skip(2) {
            again.push(' ');
            again.push_str(&a.to_string_lossy());
        }
        bail!(
            "the tests load eBPF programs, mount bpffs and make cgroups, so they need root: run `{again}`"
        );
    }
    sys::catch_signals();
    let mut needs = vec![Need::Tests];
    if args.with_docker {
        needs.push(Need::Docker);
    }
    packages::ensure(&needs)?;

    let prepared = ebpf::prepare()?;
    say(&format!(
        "eBPF toolchain ready (bpf-linker in {})",
        prepared.linker_dir.display()
    ));

    let exes = cargo::build_executables(&["-p", "egress-agent", "-p", "egress-tests", "--bins"])?;
    let exe = |name: &str| {
        exes.get(name)
            .cloned()
            .with_context(|| format!("cargo built no `{name}` executable"))
    };
    let agent = exe("egress-agent")?;
    let probe = exe("egress-probe")?;
    let lab_bin = lab::Lab::Built(exe("egress-lab")?);
    let cg2 = lab::kernel_fs(&lab_bin)?;
    say(&format!("cgroup v2 at {}", cg2.display()));

    let mut failed: Vec<String> = Vec::new();

    // Unit tests: everything but the privileged tests. egress-ebpf is a host no-op there.
    let mut unit = cargo::cargo();
    // --no-fail-fast: one failing test binary must not hide the results of the others.
    unit.args([
        "test",
        "--workspace",
        "--exclude",
        "egress-tests",
        "--no-fail-fast",
    ]);
    if !args.test_args.is_empty() {
        unit.arg("--").args(&args.test_args);
    }
    if !cargo::status(unit)?.success() {
        failed.push("unit tests".into());
    }

    let docker_guard = if args.with_docker {
        Some(lab::up(lab_bin)?)
    } else {
        None
    };

    let mut privileged = cargo::cargo();
    privileged
        .args([
            "test",
            "-p",
            "egress-tests",
            "--no-fail-fast",
            "--",
            "--test-threads=1",
        ])
        .args(&args.test_args)
        .env("EGRESS_AGENT_BIN", &agent)
        .env("EGRESS_PROBE_BIN", &probe)
        .env(
            "EGRESS_TEST_DOCKER",
            if args.with_docker { "1" } else { "0" },
        );
    if let Some(g) = &docker_guard {
        privileged
            .env("EGRESS_TEST_IMAGE", lab::TEST_IMAGE)
            .env("DOCKER_HOST", &g.host);
    }
    if !cargo::status(privileged)?.success() {
        failed.push("privileged tests".into());
    }
    // A dockerd this run started stops here and its leftovers go (on early errors and Ctrl-C
    // the guard's Drop does the same).
    if let Some(g) = docker_guard
        && let Err(e) = g.stop()
    {
        failed.push(format!("dockerd cleanup ({e:#})"));
    }

    let secs = start.elapsed().as_secs();
    if failed.is_empty() {
        say(&format!(
            "all tests passed (unit, privileged{}) in {secs} s",
            if args.with_docker {
                ", with Docker"
            } else {
                ""
            }
        ));
        Ok(())
    } else {
        bail!("FAILED: {} (after {secs} s)", failed.join(", "))
    }
}
