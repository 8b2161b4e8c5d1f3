//! A glibc client image, imported without a registry: a rootfs holding only the
//! `egress-probe` binary (as `/egress-probe`, its entry point) and the `egress-bypass` binary
//! (as `/egress-bypass`), the shared libraries `ldd` names for them, and an `/etc/nsswitch.conf` that sends host lookups to DNS — so the probe's
//! `getaddrinfo` is glibc's resolver, reading the `/etc/resolv.conf` Docker mounts. The tag
//! carries a hash of the binary, so a rebuilt probe gets a fresh image (and the images of
//! earlier binaries go).

use std::{
    fs,
    hash::{DefaultHasher, Hasher as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::{
    Docker,
    image::{TempDir, import_rootfs},
};
use crate::{bins, command::run_ok};

/// Repository of the glibc probe image (the tag is the binary's hash).
pub const GLIBC_PROBE_REPO: &str = "egress-test-probe-glibc";
/// Where the probe sits in the image.
pub const PROBE_PATH: &str = "/egress-probe";
/// Where the bypass binary sits in the image (`--entrypoint` it).
pub const BYPASS_PATH: &str = "/egress-bypass";

const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds and imports the glibc probe image for the current `egress-probe` binary unless the
/// daemon has it; returns its tag.
pub fn ensure_glibc_probe_image(docker: &Docker) -> Result<String> {
    let probe = bins::probe();
    let bypass = bins::bypass();
    let mut h = DefaultHasher::new();
    for bin in [&probe, &bypass] {
        let bytes = fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
        h.write(&bytes);
    }
    let tag = format!("{GLIBC_PROBE_REPO}:{:016x}", h.finish());
    if docker
        .try_run(&["image", "inspect", "--format", "{{.Id}}", &tag])
        .is_ok()
    {
        return Ok(tag);
    }
    let tmp = TempDir::new("egress-probe-image")?;
    let rootfs = tmp.0.join("rootfs");
    for d in ["etc", "tmp", "proc", "sys", "dev"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let dst = rootfs.join(PROBE_PATH.trim_start_matches('/'));
    fs::copy(&probe, &dst).with_context(|| format!("copying {}", probe.display()))?;
    let dst = rootfs.join(BYPASS_PATH.trim_start_matches('/'));
    fs::copy(&bypass, &dst).with_context(|| format!("copying {}", bypass.display()))?;
    let mut libs = shared_libraries(&probe)?;
    libs.extend(shared_libraries(&bypass)?);
    libs.sort();
    libs.dedup();
    for lib in libs {
        let to = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(to.parent().context("library path without a parent")?)?;
        fs::copy(&lib, &to).with_context(|| format!("copying {}", lib.display()))?;
    }
    fs::write(rootfs.join("etc/nsswitch.conf"), "hosts: files dns\n")?;
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/egress-probe\n",
    )?;
    import_rootfs(
        docker,
        &rootfs,
        &format!(r#"ENTRYPOINT ["{PROBE_PATH}"]"#),
        "egress-enforcer glibc probe image",
        &tag,
    )?;
    remove_older(docker, &tag);
    Ok(tag)
}

/// Removes the images of earlier probe binaries (best effort: one still in use stays).
fn remove_older(docker: &Docker, keep: &str) {
    let tags = docker
        .try_run(&[
            "images",
            GLIBC_PROBE_REPO,
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .unwrap_or_default();
    for old in tags.lines().filter(|t| *t != keep) {
        let _ = docker.try_run(&["rmi", old]);
    }
}

/// The absolute paths `ldd` prints for `bin` (`libc.so.6 => /lib/... (0x...)` and the loader
/// line `/lib64/ld-linux-x86-64.so.2 (0x...)`).
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = run_ok(Command::new("ldd").arg(bin), STEP_TIMEOUT)?;
    Ok(ldd_paths(&out.stdout))
}

fn ldd_paths(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_absolute_paths_only() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            ldd_paths(out),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
