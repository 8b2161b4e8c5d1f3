//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` for a bounded time each.
//!
//! Steps: the pinned nightly (the one of the eBPF build, [`egress_toolchain::NIGHTLY`]: the
//! targets need its sanitizer flags); cargo-fuzz [`CARGO_FUZZ_VERSION`], installed once into a
//! cargo-owned directory (`$CARGO_HOME/egress-enforcer/cargo-fuzz-<version>/`) if it is
//! missing; one build of every target; then each target for `--seconds` with libFuzzer's
//! `-max_total_time`, a memory limit ([`RSS_LIMIT_MB`]) and a per-input timeout.
//!
//! The repository's corpus (`fuzz/corpus/<target>/`) is only read, as seeds: new inputs go to
//! a scratch corpus, `target/fuzz/corpus/<target>/` (listed first, so libFuzzer writes there),
//! and a run's output to `target/fuzz/logs/<target>.log`. A crash (or leak, timeout, memory
//! limit) fails the command naming the target and its artifact (`fuzz/artifacts/<target>/`):
//! turn it into a regression test of its crate, and add it to the corpus.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{cargo, say, sys, target_dir, workspace_root};

/// The cargo-fuzz release installed and used.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Every target of `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: [&str; 6] = [
    "labels",
    "policy_file",
    "dns_query",
    "dns_answer",
    "dns_exchange",
    "event",
];
/// libFuzzer's `-rss_limit_mb` (and so its `-malloc_limit_mb`): more is a crash.
pub const RSS_LIMIT_MB: u32 = 2048;
/// libFuzzer's `-timeout`: one input running longer is a crash (a hang).
const INPUT_TIMEOUT_S: u32 = 30;

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds each target runs (libFuzzer's `-max_total_time`).
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub seconds: u32,
    /// Run only this target (repeatable; default: every target).
    #[arg(long = "target", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

/// What one target's run did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// Inputs run (libFuzzer's `stat::number_of_executed_units`, or its last `#N` line).
    execs: Option<u64>,
    /// Where libFuzzer wrote the input that failed.
    artifact: Option<PathBuf>,
}

pub fn run(args: FuzzArgs) -> Result<()> {
    let start = Instant::now();
    sys::catch_signals();
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    egress_toolchain::ensure_nightly(&mut |m: &str| say(m))?;
    let bin_dir = ensure_cargo_fuzz()?;
    let root = workspace_root();
    let out = target_dir().join("fuzz");
    let logs = out.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    // One build of them all (one cargo run), or of the one target asked.
    let mut build = cargo_fuzz(&bin_dir, &out, "build");
    if let [one] = targets.as_slice() {
        build.arg(one);
    }
    say(&format!(
        "building the fuzz targets with {} (cargo-fuzz {CARGO_FUZZ_VERSION}, into {})",
        egress_toolchain::NIGHTLY,
        out.join("build").display()
    ));
    let st = build.status().context("running cargo fuzz build")?;
    sys::check_interrupted()?;
    if !st.success() {
        bail!("building the fuzz targets failed ({st})");
    }

    let mut failed = Vec::new();
    let mut results = Vec::new();
    for target in &targets {
        let scratch = out.join("corpus").join(target);
        fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = root.join("fuzz/corpus").join(target);
        let log = logs.join(format!("{target}.log"));
        let log_file =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = cargo_fuzz(&bin_dir, &out, "run");
        cmd.arg(target)
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
            .arg("-print_final_stats=1")
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        say(&format!(
            "fuzzing `{target}` for {} s (seeds {}, new inputs in {}, output in {})",
            args.seconds,
            seeds.display(),
            scratch.display(),
            log.display()
        ));
        let began = Instant::now();
        let st = cmd
            .status()
            .with_context(|| format!("running cargo fuzz run {target}"))?;
        let secs = began.elapsed().as_secs_f64();
        sys::check_interrupted()?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        let got = outcome(&text, &root);
        let execs = got.execs.map_or("?".into(), |n| n.to_string());
        let rate = got
            .execs
            .map_or("?".into(), |n| format!("{:.0}", n as f64 / secs.max(0.001)));
        let line = format!("{target}: {execs} executions in {secs:.1} s ({rate}/s)");
        if st.success() {
            say(&line);
        } else {
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            let why = match &got.artifact {
                Some(a) => format!("crash input {}", a.display()),
                None => format!("no crash input written, see {}", log.display()),
            };
            say(&format!("{line}: FAILED ({st}): {why}"));
            failed.push(format!("`{target}` ({why})"));
        }
        results.push(line);
    }
    for r in &results {
        println!("{r}");
    }
    let total = start.elapsed().as_secs();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed after {total} s: {}. Reproduce with `cargo +{} fuzz run <target> <input>` in the repository root, fix the bug, and add the input as a regression test of the crate",
            failed.join(", "),
            egress_toolchain::NIGHTLY
        );
    }
    say(&format!(
        "{} fuzz targets ran without a crash in {total} s",
        targets.len()
    ));
    Ok(())
}

/// `cargo fuzz <sub>` of the pinned nightly, with cargo-fuzz from `bin_dir`, on the `fuzz/`
/// project, building into `<out>/build`.
fn cargo_fuzz(bin_dir: &Path, out: &Path, sub: &str) -> Command {
    let root = workspace_root();
    let mut c = Command::new("rustup");
    c.args(["run", egress_toolchain::NIGHTLY, "cargo", "fuzz", sub])
        .arg("--fuzz-dir")
        .arg(root.join("fuzz"))
        .arg("--target-dir")
        .arg(out.join("build"))
        .current_dir(&root)
        .stdin(Stdio::null())
        .env("PATH", egress_toolchain::path_with(bin_dir))
        // The outer cargo's (stable) toolchain and flags must not leak into the nightly build.
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("CARGO_TARGET_DIR")
        .env("RUSTUP_AUTO_INSTALL", "0");
    c
}

fn cargo_home() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        }
    }
}

/// The directory of the project's cargo-fuzz, installed first if it is missing.
fn ensure_cargo_fuzz() -> Result<PathBuf> {
    let root = cargo_home()
        .join("egress-enforcer")
        .join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"));
    let bin_dir = root.join("bin");
    let bin = bin_dir.join("cargo-fuzz");
    let works = |bin: &Path| {
        Command::new(bin)
            .args(["fuzz", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(&bin) {
        return Ok(bin_dir);
    }
    say(&format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (once, a few minutes)",
        root.display()
    ));
    let mut cmd = cargo::cargo();
    cmd.args([
        "install",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        "--locked",
        "--root",
    ])
    .arg(&root)
    .env_remove("CARGO_TARGET_DIR");
    let st = cargo::status(cmd)?;
    if !st.success() || !works(&bin) {
        bail!("installing cargo-fuzz {CARGO_FUZZ_VERSION} failed ({st})");
    }
    Ok(bin_dir)
}

/// Reads a run's output: the inputs run and the artifact of a failure (relative paths are the
/// repository root's, where cargo-fuzz runs).
fn outcome(log: &str, root: &Path) -> Outcome {
    let mut o = Outcome::default();
    let mut last_status = None;
    for line in log.lines() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            o.execs = n.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix('#') {
            // `#12345	NEW    cov: ...` / `#65536	pulse  ...` / `#1234	DONE ...`
            if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                last_status = Some(n);
            }
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            let p = PathBuf::from(path.trim());
            o.artifact = Some(if p.is_absolute() { p } else { root.join(p) });
        }
    }
    o.execs = o.execs.or(last_status);
    o
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn takes_seconds_and_targets() {
        let cli = crate::Cli::try_parse_from([
            "xtask",
            "fuzz",
            "--seconds",
            "5",
            "--target",
            "labels",
            "--target",
            "event",
        ])
        .unwrap();
        let crate::Task::Fuzz(f) = cli.task else {
            panic!("{:?}", cli.task)
        };
        assert_eq!(f.seconds, 5);
        assert_eq!(f.targets, ["labels", "event"]);
        let cli = crate::Cli::try_parse_from(["xtask", "fuzz"]).unwrap();
        assert!(
            matches!(cli.task, crate::Task::Fuzz(FuzzArgs { seconds: 60, ref targets }) if targets.is_empty())
        );
        assert!(crate::Cli::try_parse_from(["xtask", "fuzz", "--target", "nope"]).is_err());
    }

    #[test]
    fn reads_executions_and_artifacts() {
        let ok = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 10 corp: 1/1b\n#4096\tpulse  cov: 12\n\
                  Done 123456 runs in 61 second(s)\nstat::number_of_executed_units: 123456\n\
                  stat::average_exec_per_sec:     2023\n";
        assert_eq!(
            outcome(ok, Path::new("/r")),
            Outcome {
                execs: Some(123_456),
                artifact: None
            }
        );
        let crash = "#2\tINITED cov: 10\n#77\tNEW    cov: 11\n==1== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='/r/fuzz/artifacts/labels/'; Test unit written to /r/fuzz/artifacts/labels/crash-abc\n";
        assert_eq!(
            outcome(crash, Path::new("/r")),
            Outcome {
                execs: Some(77),
                artifact: Some(PathBuf::from("/r/fuzz/artifacts/labels/crash-abc"))
            }
        );
        let relative = "Test unit written to fuzz/artifacts/x/crash-1\n";
        assert_eq!(
            outcome(relative, Path::new("/r")).artifact,
            Some(PathBuf::from("/r/fuzz/artifacts/x/crash-1"))
        );
    }
}
