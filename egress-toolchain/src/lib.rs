//! What the eBPF build needs, found or installed in one place.
//!
//! The eBPF crate is built by `aya-build` with the nightly toolchain pinned in [`NIGHTLY`] (a
//! dated release: a floating `nightly` can break the build on the day it moves), `-Z build-std=core`
//! (which needs the nightly's `rust-src`) and `bpf-linker`. No system LLVM of the right version
//! exists on Debian 12 and prebuilt linkers cannot be downloaded, so `bpf-linker` is built from
//! crates.io against the nightly toolchain's own `libLLVM` and installed into a cargo-owned
//! directory keyed by that nightly's commit:
//!
//! ```text
//! $CARGO_HOME/egress-enforcer/bpf-linker-<version>-nightly-<commit>/
//!     llvm/lib/libLLVM.so -> <nightly sysroot>/lib/libLLVM.so.<ver>-rust-<ver>-nightly
//!     bin/bpf-linker
//! ```
//!
//! It survives `cargo clean`, costs nothing the second time, and never touches a `bpf-linker`
//! the user installed elsewhere. Both `egress-agent`'s build script and `cargo xtask build-ebpf`
//! call [`ensure_nightly`], [`ensure_rust_src`] and [`ensure_bpf_linker`], so a plain
//! `cargo build` on a fresh machine installs them too (and says so).

use std::{
    env,
    ffi::OsString,
    fs, io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The eBPF package, built by egress-agent's build script and by `cargo xtask build-ebpf`.
pub const EBPF_PACKAGE: &str = "egress-ebpf";
/// Its binary: the object file aya-build leaves in OUT_DIR.
pub const EBPF_BIN: &str = "egress";

/// The toolchain aya-build runs (`rustup run nightly-YYYY-MM-DD cargo ...`): the one place the
/// eBPF build's nightly is named. [`ensure_nightly`] installs it when missing.
pub const NIGHTLY: &str = "nightly-2026-05-20";
/// The commit of that release, as `rustc -vV` reports it. A toolchain under the name that is
/// another build is refused; an installed toolchain of this commit under another name (the
/// floating `nightly` on an offline host) is adopted instead of downloaded.
pub const NIGHTLY_COMMIT: &str = "e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a";
/// The bpf-linker release built and used.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the pinned Rust toolchain {NIGHTLY} is missing; the eBPF programs need it. Run: rustup toolchain install {NIGHTLY} --profile minimal --component rust-src"
    )]
    NoNightly,
    #[error(
        "the toolchain installed as {NIGHTLY} is commit {found}, not the pinned {NIGHTLY_COMMIT}; remove it (`rustup toolchain uninstall {NIGHTLY}`) and build again"
    )]
    WrongNightly { found: String },
    #[error("could not run `{cmd}`: {source}")]
    Spawn { cmd: String, source: io::Error },
    #[error("`{cmd}` failed ({status}){detail}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        detail: String,
    },
    #[error("unexpected output from `rustc -vV` of the nightly: no {0} line")]
    VersionOutput(&'static str),
    #[error("no libLLVM.so.* in the nightly sysroot {0}")]
    NoLibLlvm(PathBuf),
    #[error(
        "bpf-linker is not installed at {0}; run `cargo xtask build-ebpf` once (it builds it, about a minute)"
    )]
    LinkerMissing(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Facts about the nightly toolchain that the linker must match.
#[derive(Debug, Clone)]
pub struct Nightly {
    /// First 9 hex digits of the nightly's commit hash.
    pub commit: String,
    /// LLVM major version (e.g. 22), which selects bpf-linker's `llvm-NN` feature.
    pub llvm_major: u32,
    /// `rustc --print sysroot` of the pinned nightly.
    pub sysroot: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::Spawn {
            cmd: shown.clone(),
            source,
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Failed {
            cmd: shown,
            status: out.status,
            detail: format!(": {}", err.trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `rustc` of `toolchain`, run through rustup.
fn rustc_of(toolchain: &str) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", toolchain, "rustc"]);
    // A rust-toolchain.toml or an outer cargo must not redirect it, and a missing toolchain is
    // reported, not silently downloaded (ensure_nightly decides how it is installed).
    c.env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("RUSTUP_AUTO_INSTALL", "0");
    c
}

/// `rustc -vV` of `toolchain`; None if rustup has no such toolchain.
fn version_of(toolchain: &str) -> Result<Option<String>> {
    match run(rustc_of(toolchain).arg("-vV")) {
        Ok(v) => Ok(Some(v)),
        Err(Error::Failed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the pinned nightly's commit, LLVM version and sysroot (without installing it).
pub fn nightly() -> Result<Nightly> {
    let vv = version_of(NIGHTLY)?.ok_or(Error::NoNightly)?;
    let found = field(&vv, "commit-hash:")?;
    if found != NIGHTLY_COMMIT {
        return Err(Error::WrongNightly {
            found: found.to_owned(),
        });
    }
    let (commit, llvm_major) = parse_version(&vv)?;
    let sysroot = PathBuf::from(run(rustc_of(NIGHTLY).args(["--print", "sysroot"]))?.trim());
    Ok(Nightly {
        commit,
        llvm_major,
        sysroot,
    })
}

/// The pinned nightly, installed first if it is missing: adopted from an installed toolchain of
/// the same commit (a hard-linked copy under the pinned name: no download, and it stays when
/// that toolchain is updated), else installed by `rustup toolchain install`.
pub fn ensure_nightly(say: &mut dyn FnMut(&str)) -> Result<Nightly> {
    match nightly() {
        Err(Error::NoNightly) => {}
        other => return other,
    }
    if let Some((name, sysroot, host)) = same_build_installed()? {
        let dest = sysroot.with_file_name(format!("{NIGHTLY}-{host}"));
        say(&format!(
            "adopting the installed toolchain {name} (commit {NIGHTLY_COMMIT}) as the pinned {NIGHTLY} (hard-linked copy at {})",
            dest.display()
        ));
        let part = dest.with_extension("partial");
        let _ = fs::remove_dir_all(&part);
        run(Command::new("cp").arg("-al").arg(&sysroot).arg(&part))?;
        fs::rename(&part, &dest).map_err(io_err(&dest))?;
    } else {
        say(&format!(
            "installing the pinned toolchain {NIGHTLY} with rust-src (once)"
        ));
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    nightly()
}

/// An installed toolchain other than [`NIGHTLY`] whose rustc is the pinned commit: its name,
/// sysroot and host triple.
fn same_build_installed() -> Result<Option<(String, PathBuf, String)>> {
    let list = run(Command::new("rustup").args(["toolchain", "list"]))?;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if !name.starts_with("nightly") || name.starts_with(NIGHTLY) {
            continue;
        }
        let Some(vv) = version_of(name)? else {
            continue;
        };
        if field(&vv, "commit-hash:")? != NIGHTLY_COMMIT {
            continue;
        }
        let host = field(&vv, "host:")?.to_owned();
        let sysroot = PathBuf::from(run(rustc_of(name).args(["--print", "sysroot"]))?.trim());
        return Ok(Some((name.to_owned(), sysroot, host)));
    }
    Ok(None)
}

/// The value of the `name` line of `rustc -vV` output.
fn field<'a>(vv: &'a str, name: &'static str) -> Result<&'a str> {
    vv.lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .ok_or(Error::VersionOutput(name))
}

/// Parses `rustc -vV` output into (short commit, LLVM major).
pub fn parse_version(vv: &str) -> Result<(String, u32)> {
    let commit: String = field(vv, "commit-hash:")?.chars().take(9).collect();
    let llvm = field(vv, "LLVM version:")?;
    let llvm_major = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or(Error::VersionOutput("LLVM version:"))?;
    Ok((commit, llvm_major))
}

fn cargo_home() -> PathBuf {
    if let Some(h) = env::var_os("CARGO_HOME") {
        return PathBuf::from(h);
    }
    let home = env::var_os("HOME").unwrap_or_else(|| OsString::from("/root"));
    PathBuf::from(home).join(".cargo")
}

/// Where the linker for `nightly` lives.
pub fn install_root(nightly: &Nightly) -> PathBuf {
    cargo_home().join("egress-enforcer").join(format!(
        "bpf-linker-{BPF_LINKER_VERSION}-nightly-{}",
        nightly.commit
    ))
}

/// The directory to put first on PATH for the eBPF build.
pub fn linker_bin_dir(nightly: &Nightly) -> PathBuf {
    install_root(nightly).join("bin")
}

fn linker_works(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Finds the project's bpf-linker for the pinned nightly without installing anything.
pub fn find_bpf_linker() -> Result<(Nightly, PathBuf)> {
    let n = nightly()?;
    let bin = linker_bin_dir(&n).join("bpf-linker");
    if linker_works(&bin) {
        Ok((n, bin))
    } else {
        Err(Error::LinkerMissing(bin))
    }
}

/// Makes sure the nightly has `rust-src`; installs it if not. Returns true if it installed.
pub fn ensure_rust_src(n: &Nightly, say: &mut dyn FnMut(&str)) -> Result<bool> {
    let src = n.sysroot.join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        return Ok(false);
    }
    say("installing the nightly toolchain's rust-src component (needed for -Z build-std=core)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    Ok(true)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn symlink_force(target: &Path, link: &Path) -> Result<()> {
    match fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(link)(e)),
    }
    std::os::unix::fs::symlink(target, link).map_err(io_err(link))
}

/// Finds the project's bpf-linker, building it first if it is missing or broken (for example
/// after the nightly toolchain was updated). Returns the directory that holds the binary.
pub fn ensure_bpf_linker(n: &Nightly, say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let root = install_root(n);
    let bin_dir = root.join("bin");
    if linker_works(&bin_dir.join("bpf-linker")) {
        return Ok(bin_dir);
    }
    let lib_dir = n.sysroot.join("lib");
    let libllvm = fs::read_dir(&lib_dir)
        .map_err(io_err(&lib_dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .find(|f| f.to_string_lossy().starts_with("libLLVM.so."))
        .ok_or_else(|| Error::NoLibLlvm(lib_dir.clone()))?;
    let prefix = root.join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib).map_err(io_err(&prefix_lib))?;
    let real = lib_dir.join(&libllvm);
    symlink_force(&real, &prefix_lib.join(&libllvm))?;
    symlink_force(&real, &prefix_lib.join("libLLVM.so"))?;
    say(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the nightly's {} (LLVM {}) into {} (about a minute, once)",
        libllvm.to_string_lossy(),
        n.llvm_major,
        root.display()
    ));
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--no-default-features",
        "--features",
        &format!("llvm-{}", n.llvm_major),
        "--root",
    ])
    .arg(&root)
    .env("LLVM_PREFIX", &prefix)
    // Built with the user-space stable toolchain; only its libLLVM comes from the nightly.
    .env_remove("RUSTC")
    .env_remove("CARGO_TARGET_DIR")
    // Progress goes to stderr; stdout stays clean for build-script directives.
    .stdout(Stdio::null());
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|source| Error::Spawn {
        cmd: shown.clone(),
        source,
    })?;
    if !status.success() {
        return Err(Error::Failed {
            cmd: shown,
            status,
            detail: String::new(),
        });
    }
    Ok(bin_dir)
}

/// PATH with `dir` first.
pub fn path_with(dir: &Path) -> OsString {
    let mut paths = vec![dir.to_owned()];
    if let Some(p) = env::var_os("PATH") {
        paths.extend(env::split_paths(&p));
    }
    env::join_paths(paths).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commit_and_llvm_major() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\ncommit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\ncommit-date: 2026-05-19\nhost: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        let (c, m) = parse_version(vv).unwrap();
        assert_eq!(c, "e50aa6fba");
        assert_eq!(m, 22);
    }

    #[test]
    fn rejects_output_without_llvm() {
        assert!(matches!(
            parse_version("commit-hash: abc\n"),
            Err(Error::VersionOutput("LLVM version:"))
        ));
    }
}
