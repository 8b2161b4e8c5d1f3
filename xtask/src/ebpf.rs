//! `cargo xtask build-ebpf`: the eBPF object, built exactly as egress-agent's build script
//! builds it.
//!
//! `aya_build::build_ebpf` is written for build scripts: it reads `OUT_DIR` and
//! `CARGO_CFG_TARGET_*` from the environment and prints `cargo:` directives on stdout. So the
//! task re-runs this binary (`xtask aya-build`, hidden) with that environment, and turns the
//! child's `cargo:warning=` lines into plain stderr lines. No process-wide `set_var` needed.

use std::{
    env,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{say, target_dir, workspace_root};

use egress_toolchain::{EBPF_BIN, EBPF_PACKAGE};

/// What the eBPF build needs on this machine.
pub struct Prepared {
    /// Directory holding the project's `bpf-linker`, to put first on PATH.
    pub linker_dir: PathBuf,
}

/// Checks the nightly toolchain, installs its rust-src if missing and builds bpf-linker if
/// missing (each says what it does on stderr).
pub fn prepare() -> Result<Prepared> {
    let mut tell = |m: &str| say(m);
    // egress_toolchain's errors are one line each (e.g. how to install the nightly).
    let nightly = egress_toolchain::ensure_nightly(&mut tell)?;
    egress_toolchain::ensure_rust_src(&nightly, &mut tell)?;
    let linker_dir = egress_toolchain::ensure_bpf_linker(&nightly, &mut tell)?;
    Ok(Prepared { linker_dir })
}

/// Builds the eBPF object into `out` (default `target/ebpf`) and returns its path.
pub fn build(out: Option<PathBuf>) -> Result<PathBuf> {
    let prepared = prepare()?;
    let out = match out {
        Some(o) => env::current_dir()?.join(o),
        None => target_dir().join("ebpf"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let exe = env::current_exe().context("locating the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("aya-build")
        .env("OUT_DIR", &out)
        .env("CARGO_CFG_TARGET_ENDIAN", host_endian())
        .env("CARGO_CFG_TARGET_ARCH", env::consts::ARCH)
        .env("PATH", egress_toolchain::path_with(&prepared.linker_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().context("running `xtask aya-build`")?;
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading aya-build output")?;
        if let Some(l) = forwarded(&line) {
            eprintln!("{l}");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("building the eBPF object failed ({status})");
    }
    let obj = out.join(EBPF_BIN);
    if !obj.is_file() {
        bail!("the eBPF build succeeded but left no {}", obj.display());
    }
    Ok(obj)
}

/// `cargo:warning=X` → `X`; other `cargo:` directives are dropped; anything else is kept.
fn forwarded(line: &str) -> Option<&str> {
    if let Some(w) = line.strip_prefix("cargo:warning=") {
        Some(w)
    } else if line.starts_with("cargo:") {
        None
    } else {
        Some(line)
    }
}

fn host_endian() -> &'static str {
    if cfg!(target_endian = "big") {
        "big"
    } else {
        "little"
    }
}

/// The hidden `aya-build` task: the same call as egress-agent/build.rs.
pub fn aya_build_inner() -> Result<()> {
    let root = workspace_root().join(EBPF_PACKAGE);
    let root = path_str(&root)?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(egress_toolchain::NIGHTLY),
    )
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("path is not UTF-8: {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_lose_their_prefix_and_directives_vanish() {
        assert_eq!(
            forwarded("cargo:warning=   Compiling core"),
            Some("   Compiling core")
        );
        assert_eq!(forwarded("cargo:warning="), Some(""));
        assert_eq!(forwarded("cargo:rerun-if-changed=/x"), None);
        assert_eq!(forwarded("cargo:rerun-if-env-changed=AYA_BUILD_SKIP"), None);
        assert_eq!(forwarded("plain"), Some("plain"));
    }

    #[test]
    fn endian_matches_the_host() {
        let e = host_endian();
        assert_eq!(e == "little", cfg!(target_endian = "little"));
    }
}
