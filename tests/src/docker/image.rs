//! The test image `egress-test-busybox:latest`, imported without a registry: a rootfs with
//! Debian's static busybox and its applets (`sh`, `wget`, `nc`, `nslookup`, `timeout`, ...),
//! from `apt-get download busybox-static` or the `.deb` named by `EGRESS_BUSYBOX_DEB`. Note:
//! busybox `wget -T` segfaults; tests wrap `wget` in `timeout` instead.

use std::{
    env,
    ffi::OsStr,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Docker, dockerd::say};
use crate::command::run_ok;

/// A busybox-static `.deb` to use instead of `apt-get download busybox-static` (offline hosts).
const BUSYBOX_DEB_ENV: &str = "EGRESS_BUSYBOX_DEB";

/// Applets the tests rely on; the image build fails if busybox lacks one.
const REQUIRED_APPLETS: &[&str] = &[
    "sh", "wget", "nc", "nslookup", "sleep", "echo", "cat", "timeout", "ip", "ping",
];

const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Builds and imports the busybox test image as `tag` unless the daemon already has it.
pub fn ensure_busybox_image(docker: &Docker, tag: &str) -> Result<()> {
    if docker
        .try_run(&["image", "inspect", "--format", "{{.Id}}", tag])
        .is_ok()
    {
        say(&format!("image {tag} is present"));
        return Ok(());
    }
    let t0 = Instant::now();
    say(&format!(
        "making the test image {tag} from Debian's busybox-static (once)"
    ));
    let tmp = TempDir::new("egress-busybox")?;
    let deb = match env::var_os(BUSYBOX_DEB_ENV) {
        Some(deb) if !deb.is_empty() => PathBuf::from(deb),
        _ => {
            run_ok(
                Command::new("apt-get")
                    .args([
                        "download",
                        "-o",
                        "APT::Sandbox::User=root",
                        "busybox-static",
                    ])
                    .current_dir(&tmp.0),
                STEP_TIMEOUT,
            )
            .context(
                "downloading busybox-static (run `apt-get update` if the package is not found)",
            )?;
            fs::read_dir(&tmp.0)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension() == Some(OsStr::new("deb")))
                .context("apt-get download left no .deb")?
        }
    };
    let pkg = tmp.0.join("pkg");
    run_ok(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&pkg),
        STEP_TIMEOUT,
    )?;
    let rootfs = tmp.0.join("rootfs");
    make_rootfs(&pkg.join("bin/busybox"), &rootfs)?;
    let deb_name = deb.file_name().unwrap_or_default().to_string_lossy();
    let message = format!("egress-enforcer test image from {deb_name}");
    import_rootfs(docker, &rootfs, r#"CMD ["/bin/sh"]"#, &message, tag)?;
    say(&format!(
        "imported {tag} in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Imports the directory `rootfs` as image `tag` (`docker import` of its tar, owned by root,
/// with the Dockerfile instruction `change` and the commit `message`).
pub(crate) fn import_rootfs(
    docker: &Docker,
    rootfs: &Path,
    change: &str,
    message: &str,
    tag: &str,
) -> Result<()> {
    let tar = rootfs.with_extension("tar");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        STEP_TIMEOUT,
    )?;
    let imported = docker
        .try_run(&[
            "import",
            "--change",
            change,
            "--message",
            message,
            &tar.to_string_lossy(),
            tag,
        ])
        .map_err(anyhow::Error::msg);
    let _ = fs::remove_file(&tar);
    imported.map(|_| ())
}

/// A root filesystem: /bin/busybox, a symlink to it for every applet at the path busybox
/// itself would install it (`busybox --install -s`), and the usual empty directories.
fn make_rootfs(busybox: &Path, rootfs: &Path) -> Result<()> {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var/tmp", "proc", "sys", "dev",
    ] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    for d in ["tmp", "var/tmp"] {
        fs::set_permissions(rootfs.join(d), fs::Permissions::from_mode(0o1777))?;
    }
    let dst = rootfs.join("bin/busybox");
    fs::copy(busybox, &dst).with_context(|| format!("copying {}", busybox.display()))?;
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))?;
    let list = run_ok(Command::new(busybox).arg("--list-full"), STEP_TIMEOUT)?;
    let applets = applet_paths(&list.stdout);
    for name in REQUIRED_APPLETS {
        if !applets
            .iter()
            .any(|p| p.file_name() == Some(OsStr::new(name)))
        {
            bail!("{} has no `{name}` applet", busybox.display());
        }
    }
    for rel in &applets {
        let link = rootfs.join(rel);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// `busybox --list-full` lines (`bin/sh`, `usr/bin/wget`, ...) as relative paths, without
/// busybox itself and anything that would escape the rootfs.
fn applet_paths(list: &str) -> Vec<PathBuf> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('/') && !l.contains(".."))
        .filter(|l| *l != "bin/busybox")
        .map(PathBuf::from)
        .collect()
}

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let p = env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            crate::nanos_now() % 1_000_000_000
        ));
        fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_paths_are_relative_and_skip_busybox() {
        let p = applet_paths("bin/sh\nbin/busybox\nusr/bin/wget\n/etc/evil\n../x\n\n");
        assert_eq!(p, [PathBuf::from("bin/sh"), PathBuf::from("usr/bin/wget")]);
    }
}
