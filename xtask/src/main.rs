//! Developer tasks, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! Progress goes to stderr with an `xtask:` prefix; stdout carries only results (the path of
//! the built eBPF object).

mod bench;
mod cargo;
mod ebpf;
mod fuzz;
mod lab;
mod packages;
mod sys;
mod test;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer tasks of the egress enforcer workspace"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the eBPF object with the same flags as egress-agent's build script, installing the
    /// nightly's rust-src and building bpf-linker first if they are missing. Prints the path of
    /// the object.
    BuildEbpf {
        /// Output directory (the object is `<DIR>/egress`). Default: `target/ebpf`.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Build everything and run the unit tests, then the privileged tests (serially). Needs
    /// root, cgroup v2 and bpffs (mounted if missing).
    Test(test::TestArgs),
    /// Measure what the enforcer costs, side by side with the alternatives (no program, an nginx
    /// stream proxy, an nftables set, the agent with Docker), and print a markdown table of
    /// medians and ratios (also written to `target/bench/report.md`). Needs root. Builds the
    /// agent and runs the `egress-bench` crate with the arguments (`--help` lists them).
    #[command(disable_help_flag = true)]
    Bench(bench::BenchArgs),
    /// Run every cargo-fuzz target of `fuzz/` for a bounded time (installing cargo-fuzz and
    /// using the pinned nightly), the repository's corpus as read-only seeds; fails naming the
    /// target and the input of any crash.
    Fuzz(fuzz::FuzzArgs),
    /// Check the Docker setup of the end-to-end tests: use (or start) dockerd, make the
    /// `egress-test-busybox` image, run `echo` in a container, then stop a dockerd it started
    /// and undo its host changes.
    DockerCheck,
    /// (internal) Runs `aya_build::build_ebpf` in the environment `build-ebpf` sets up.
    #[command(hide = true)]
    AyaBuild,
    /// (internal) Stop a dockerd that an earlier `cargo xtask test --with-docker` started and
    /// could not stop (killed, crashed), and undo its changes to the host. No-op otherwise.
    #[command(hide = true)]
    StopDockerd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.task {
        Task::BuildEbpf { out } => ebpf::build(out).map(|obj| println!("{}", obj.display())),
        Task::Test(args) => test::run(args),
        Task::Bench(args) => bench::run(args),
        Task::Fuzz(args) => fuzz::run(args),
        Task::DockerCheck => lab::check(),
        Task::AyaBuild => ebpf::aya_build_inner(),
        Task::StopDockerd => lab::stop_leftover(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            if sys::interrupted() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The workspace root (xtask lives in `<root>/xtask`).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo target directory: `$CARGO_TARGET_DIR` or `<root>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace_root().join(PathBuf::from(d)),
        _ => workspace_root().join("target"),
    }
}

/// Prints a progress line on stderr.
fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_takes_a_docker_flag_and_test_args() {
        let cli = Cli::try_parse_from([
            "xtask",
            "test",
            "--with-docker",
            "--",
            "--nocapture",
            "some_test",
        ])
        .unwrap();
        let Task::Test(t) = cli.task else {
            panic!("{:?}", cli.task)
        };
        assert!(t.with_docker);
        assert_eq!(t.test_args, ["--nocapture", "some_test"]);
    }

    #[test]
    fn build_ebpf_takes_an_out_dir() {
        let cli = Cli::try_parse_from(["xtask", "build-ebpf", "--out", "x/y"]).unwrap();
        assert!(
            matches!(cli.task, Task::BuildEbpf { out: Some(p) } if p == std::path::Path::new("x/y"))
        );
    }
}
