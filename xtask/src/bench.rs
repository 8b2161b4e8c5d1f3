//! `cargo xtask bench [--quick] [--only PARTS] ...`: builds the `egress-bench` crate and the
//! agent (the debug build for `--quick`, the release build otherwise), installs the Debian
//! packages of the tools it compares with if missing, checks the host tools
//! (`egress-bench --preflight`), makes sure dockerd runs and has the test image when the agent
//! or DNS part is measured (`egress-lab dockerd-up`), then runs `egress-bench` with the same
//! arguments. A dockerd this command started is stopped (and its host changes undone) after the
//! bench, also on Ctrl-C.

use std::{ffi::OsString, process::Command};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{
    cargo, lab,
    packages::{self, Need},
    say, sys, target_dir,
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The arguments of `egress-bench` (`--quick`, `--only connect,nft,proxy,agent,dns`,
    /// `--rounds N`, `--out FILE`; `--help` lists them).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

/// What the arguments ask of this command: the agent's build, and whether a part that needs
/// dockerd (agent, dns) runs.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    quick: bool,
    agent: bool,
    help: bool,
}

fn plan(args: &[OsString]) -> Plan {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut only: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--only=") {
            only.extend(v.split(','));
        } else if a == "--only" {
            only.extend(it.next().map_or("", String::as_str).split(','));
        }
    }
    Plan {
        quick: args.iter().any(|a| a == "--quick"),
        agent: only.is_empty() || only.contains(&"agent") || only.contains(&"dns"),
        help: args.iter().any(|a| a == "--help" || a == "-h"),
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let plan = plan(&args.args);
    if !plan.help && !sys::is_root() {
        bail!(
            "the benchmarks load eBPF programs, make cgroups and network namespaces and start \
             dockerd, so they need root: run `sudo -E cargo xtask bench{}`",
            if plan.quick { " --quick" } else { "" }
        );
    }
    sys::catch_signals();
    if !plan.help {
        let mut needs = vec![Need::Bench];
        if plan.agent {
            needs.push(Need::Docker);
        }
        packages::ensure(&needs)?;
    }
    // One build with the test binaries' packages, so that it shares their dependencies'
    // features (and artifacts) instead of rebuilding them; the bench runs in the dev profile,
    // as it did inside xtask, so that the load generator's figures stay comparable.
    let mut built = cargo::build_executables(&[
        "-p",
        "egress-agent",
        "-p",
        "egress-tests",
        "-p",
        "egress-bench",
        "--bins",
    ])?;
    let bench = built
        .remove("egress-bench")
        .context("cargo built no egress-bench")?;
    let bench_cmd = || {
        let mut cmd = Command::new(&bench);
        cmd.args(&args.args)
            .env("EGRESS_BENCH_DIR", target_dir().join("bench"));
        cmd
    };
    if plan.help {
        return finish(bench_cmd());
    }
    // A missing package fails here, before the agent's release build.
    let mut preflight = bench_cmd();
    preflight.arg("--preflight");
    finish(preflight)?;
    let agent = if plan.quick {
        built.remove("egress-agent")
    } else {
        cargo::build_executables(&["--release", "-p", "egress-agent", "--bins"])?
            .remove("egress-agent")
    }
    .context("cargo built no egress-agent")?;
    let lab_bin = lab::Lab::Built(
        built
            .remove("egress-lab")
            .context("cargo built no egress-lab")?,
    );
    lab::kernel_fs(&lab_bin)?;
    let mut cmd = bench_cmd();
    cmd.env("EGRESS_AGENT_BIN", &agent);
    if !plan.agent {
        return finish(cmd);
    }
    let dockerd = lab::up(lab_bin)?;
    cmd.env("EGRESS_TEST_IMAGE", lab::TEST_IMAGE)
        .env("DOCKER_HOST", &dockerd.host);
    let res = finish(cmd);
    // A dockerd this run started stops after the bench, whatever the bench did.
    let stopped = dockerd.stop();
    res?;
    stopped
}

/// Runs the bench; fails if it failed.
fn finish(mut cmd: Command) -> Result<()> {
    say(&format!("running {}", cmd.get_program().to_string_lossy()));
    let status = cmd.status().context("running egress-bench")?;
    sys::check_interrupted()?;
    if !status.success() {
        bail!("egress-bench failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(args: &[&str]) -> Plan {
        plan(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn reads_the_build_and_the_parts_from_the_arguments() {
        let all = Plan {
            quick: false,
            agent: true,
            help: false,
        };
        assert_eq!(of(&[]), all);
        assert!(of(&["--quick"]).quick);
        assert!(!of(&["--only", "connect,nft"]).agent);
        assert!(of(&["--only", "connect", "--only", "agent"]).agent);
        assert!(of(&["--only=proxy,agent", "--quick"]).agent);
        assert!(!of(&["--only=proxy"]).agent);
        assert!(of(&["--only=dns"]).agent, "the DNS part needs dockerd too");
        assert!(of(&["--help"]).help);
    }
}
