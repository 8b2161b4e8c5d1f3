//! A Docker daemon and a test image for the end-to-end tests, made with the `docker` CLI and
//! `dockerd` (Debian's `docker.io`).
//!
//! [`ensure_dockerd`] uses a daemon that answers on `/var/run/docker.sock`, or starts one. A
//! daemon it started is stopped when the returned [`DockerGuard`] goes, and what it changed on
//! the host is undone: its iptables rules, chains and FORWARD policy, the `docker0`/`br-*`
//! bridges, its mounts and the forwarding sysctls. Only changes that were not there before the
//! start and that are Docker's are removed, so the machine stays as it was for the next run.
//! The snapshot is kept in `target/dockerd.state.json` until then, so that `cargo xtask
//! stop-dockerd` (used by `.ci/run` on exit) can finish the job if this process is killed.
//!
//! [`ensure_busybox_image`] imports `egress-test-busybox:latest` (no registry is reachable):
//! a rootfs with Debian's static busybox and its applets (`sh`, `wget`, `nc`, `nslookup`,
//! `timeout`, ...), from `apt-get download busybox-static` or the `.deb` named by
//! `EGRESS_BUSYBOX_DEB`. Note: busybox `wget -T` segfaults; tests wrap `wget` in `timeout` instead.

use std::{
    collections::{BTreeMap, HashMap},
    env,
    ffi::OsStr,
    fs::{self, File},
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{say, sys, target_dir};

/// The daemon socket the tests use.
pub const SOCK: &str = "/var/run/docker.sock";
/// The image the Docker end-to-end tests run.
pub const TEST_IMAGE: &str = "egress-test-busybox:latest";

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// dockerd stops its containers on SIGTERM (up to 15 s by default) before it exits.
const STOP_GRACE: Duration = Duration::from_secs(40);
const CONTAINERD_PIDFILE: &str = "/var/run/docker/containerd/containerd.pid";
const DOCKERD_PIDFILE: &str = "/var/run/docker.pid";

/// A busybox-static `.deb` to use instead of `apt-get download busybox-static` (offline hosts).
const BUSYBOX_DEB_ENV: &str = "EGRESS_BUSYBOX_DEB";

/// Applets the tests rely on; the image build fails if busybox lacks one.
const REQUIRED_APPLETS: &[&str] = &[
    "sh", "wget", "nc", "nslookup", "sleep", "echo", "cat", "timeout", "ip", "ping",
];

/// `GET /_ping` on a Docker socket: true if the daemon answers `200 OK`.
pub fn ping(sock: &str) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let t = Some(Duration::from_secs(2));
    if s.set_read_timeout(t).is_err() || s.set_write_timeout(t).is_err() {
        return false;
    }
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    ping_ok(&String::from_utf8_lossy(&resp))
}

fn ping_ok(resp: &str) -> bool {
    let status_ok = resp
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("200");
    status_ok && resp.trim_end().ends_with("OK")
}

/// Holds a dockerd that [`ensure_dockerd`] started (if it started one) and stops it on drop.
pub struct DockerGuard {
    started: Option<Started>,
}

struct Started {
    /// None for a daemon adopted from an earlier run (not our child).
    child: Option<Child>,
    state: HostState,
    state_file: PathBuf,
}

impl DockerGuard {
    /// Stops the daemon this guard started and undoes its host changes; reports failures.
    pub fn stop(mut self) -> Result<()> {
        match self.started.take() {
            Some(s) => s.stop(),
            None => Ok(()),
        }
    }
}

impl Drop for DockerGuard {
    fn drop(&mut self) {
        if let Some(s) = self.started.take()
            && let Err(e) = s.stop()
        {
            say(&format!("error: stopping dockerd: {e:#}"));
        }
    }
}

impl Started {
    fn save(&self) -> Result<()> {
        let json = serde_json::to_string_pretty(&self.state)?;
        fs::write(&self.state_file, json)
            .with_context(|| format!("writing {}", self.state_file.display()))
    }

    fn stop(mut self) -> Result<()> {
        let pid = self.state.dockerd_pid;
        say(&format!(
            "stopping the dockerd started for the tests (pid {pid})"
        ));
        let child = &mut self.child;
        sys::terminate(pid, "dockerd", STOP_GRACE, &mut || {
            if let Some(c) = child.as_mut() {
                let _ = c.try_wait();
            }
        })?;
        if let Some(c) = self.child.as_mut() {
            let _ = c.try_wait();
        }
        self.state.undo()?;
        let _ = fs::remove_file(&self.state_file);
        say("dockerd stopped; its iptables rules, bridges, mounts and sysctls are gone");
        Ok(())
    }
}

fn state_file() -> PathBuf {
    target_dir().join("dockerd.state.json")
}

/// Uses the daemon on [`SOCK`] if it answers, else starts `dockerd` (logging to
/// `target/dockerd.log`) and waits up to 60 s for it.
pub fn ensure_dockerd() -> Result<DockerGuard> {
    if ping(SOCK) {
        if let Some(started) = adopt()? {
            return Ok(DockerGuard {
                started: Some(started),
            });
        }
        say(&format!("using the dockerd that answers on {SOCK}"));
        return Ok(DockerGuard { started: None });
    }
    // A run that was killed may have left a dead daemon's changes behind.
    stop_leftover()?;
    for (tool, pkg) in [("dockerd", "docker.io"), ("iptables", "iptables")] {
        if which(tool).is_none() {
            bail!(
                "`{tool}` is not installed; the Docker tests need it: apt-get install -y --no-install-recommends {pkg}"
            );
        }
    }
    let dir = target_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("dockerd.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    remove_stale_pidfiles();
    let mut state = HostState::snapshot();
    say(&format!("starting dockerd (log: {})", log_path.display()));
    let t0 = Instant::now();
    // setsid: its own session, so the terminal's Ctrl-C reaches only us; we stop it.
    let child = Command::new("setsid")
        .arg("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("running `setsid dockerd`")?;
    state.dockerd_pid = child.id() as i32;
    let started = Started {
        child: Some(child),
        state,
        state_file: state_file(),
    };
    started.save()?;
    let mut guard = DockerGuard {
        started: Some(started),
    };
    let started = guard.started.as_mut().expect("just set");
    loop {
        if ping(SOCK) {
            break;
        }
        if let Some(st) = started
            .child
            .as_mut()
            .and_then(|c| c.try_wait().transpose())
        {
            let st = st?;
            bail!(
                "dockerd exited ({st}) before answering on {SOCK}; the end of {}:\n{}",
                log_path.display(),
                tail(&log_path, 15)
            );
        }
        if t0.elapsed() > START_TIMEOUT {
            bail!(
                "dockerd did not answer on {SOCK} within {START_TIMEOUT:?}; the end of {}:\n{}",
                log_path.display(),
                tail(&log_path, 15)
            );
        }
        sys::check_interrupted()?;
        thread::sleep(Duration::from_millis(200));
    }
    // `setsid` execs dockerd in place (we are not a group leader's child); trust the pidfile.
    if let Some(pid) = read_pid(DOCKERD_PIDFILE)
        && pid != started.state.dockerd_pid
    {
        say(&format!(
            "dockerd runs as pid {pid}, not {} (setsid forked)",
            started.state.dockerd_pid
        ));
        started.state.dockerd_pid = pid;
    }
    started.state.containerd_pid = read_pid(CONTAINERD_PIDFILE);
    started.save()?;
    say(&format!(
        "dockerd ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(guard)
}

/// Removes dockerd's and containerd's pid files when their process is gone (or a zombie: PID 1
/// on some machines does not reap, and a new dockerd would wait for a zombie containerd until
/// it times out).
fn remove_stale_pidfiles() {
    for file in [DOCKERD_PIDFILE, CONTAINERD_PIDFILE] {
        if let Some(pid) = read_pid(file)
            && sys::live_comm(pid).is_none()
        {
            say(&format!("removing the stale {file} (pid {pid} is gone)"));
            let _ = fs::remove_file(file);
        }
    }
}

/// A daemon that answers and that an earlier run started and left running (it was killed):
/// take it over, so that this run stops it and undoes its changes.
fn adopt() -> Result<Option<Started>> {
    let path = state_file();
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(None);
    };
    let state: HostState =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let pid = state.dockerd_pid;
    if read_pid(DOCKERD_PIDFILE) != Some(pid) || sys::live_comm(pid).as_deref() != Some("dockerd") {
        return Ok(None);
    }
    say(&format!(
        "the dockerd answering on {SOCK} (pid {pid}) was started by an earlier run ({}); \
         using it and stopping it at the end",
        path.display()
    ));
    Ok(Some(Started {
        child: None,
        state,
        state_file: path,
    }))
}

/// The hidden `stop-dockerd` task: if a state file from a run that could not clean up exists,
/// stops that dockerd and undoes its host changes. No-op otherwise.
pub fn stop_leftover() -> Result<()> {
    let path = state_file();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state: HostState =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    say(&format!(
        "{} is left from an earlier run: stopping its dockerd (pid {}) and undoing its changes",
        path.display(),
        state.dockerd_pid
    ));
    sys::terminate(state.dockerd_pid, "dockerd", STOP_GRACE, &mut || {})?;
    state.undo()?;
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(())
}

/// What the host looked like before dockerd started, for undoing what it changed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct HostState {
    dockerd_pid: i32,
    containerd_pid: Option<i32>,
    /// `iptables`/`ip6tables` → table → `-S` lines.
    rules: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    links: Vec<String>,
    mounts: Vec<PathBuf>,
    /// /proc/sys paths and their values, restored in this order.
    sysctls: Vec<(PathBuf, String)>,
}

const IPTABLES: &[&str] = &["iptables", "ip6tables"];
const TABLES: &[&str] = &["filter", "nat", "mangle", "raw"];
const SYSCTLS: &[&str] = &[
    // Writing ip_forward resets conf/*/forwarding and accept_redirects too: it goes first.
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv4/conf/all/forwarding",
    "/proc/sys/net/ipv4/conf/default/forwarding",
    "/proc/sys/net/ipv4/conf/all/accept_redirects",
    "/proc/sys/net/ipv6/conf/all/forwarding",
    "/proc/sys/net/ipv6/conf/default/forwarding",
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];
/// Where dockerd and its containerd mount things.
const MOUNT_PREFIXES: &[&str] = &[
    "/var/lib/docker",
    "/var/lib/containerd",
    "/run/docker",
    "/var/run/docker",
    "/run/containerd",
    "/var/run/containerd",
];

impl HostState {
    fn snapshot() -> Self {
        let mut rules = BTreeMap::new();
        for cmd in IPTABLES {
            let mut tables = BTreeMap::new();
            for table in TABLES {
                if let Some(lines) = iptables_rules(cmd, table) {
                    tables.insert((*table).to_owned(), lines);
                }
            }
            rules.insert((*cmd).to_owned(), tables);
        }
        Self {
            dockerd_pid: 0,
            containerd_pid: None,
            rules,
            links: links(),
            mounts: mount_points(),
            sysctls: SYSCTLS
                .iter()
                .filter_map(|p| {
                    let v = fs::read_to_string(p).ok()?;
                    Some((PathBuf::from(p), v.trim().to_owned()))
                })
                .collect(),
        }
    }

    /// Undoes Docker's changes made since the snapshot; keeps going on errors and reports
    /// them all at the end.
    fn undo(&self) -> Result<()> {
        let mut errors = Vec::new();
        if let Some(pid) = self.containerd_pid
            && let Err(e) = sys::terminate(pid, "containerd", Duration::from_secs(10), &mut || {})
        {
            errors.push(format!("{e:#}"));
        }

        let mut new_mounts: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|m| !self.mounts.contains(m))
            .filter(|m| MOUNT_PREFIXES.iter().any(|p| m.starts_with(p)))
            .collect();
        new_mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in new_mounts {
            if let Err(e) = sys::umount_lazy(&m) {
                errors.push(format!("umount {}: {e}", m.display()));
            }
        }

        for link in links() {
            if !self.links.contains(&link)
                && is_docker_bridge(&link)
                && let Err(e) = run_quiet(Command::new("ip").args(["link", "del", &link]))
            {
                errors.push(format!("{e:#}"));
            }
        }

        for (cmd, tables) in &self.rules {
            for (table, before) in tables {
                let Some(now) = iptables_rules(cmd, table) else {
                    continue;
                };
                for args in iptables_undo(before, &now) {
                    let mut c = Command::new(cmd);
                    c.args(["-w", "-t", table]).args(&args);
                    if let Err(e) = run_quiet(&mut c) {
                        errors.push(format!("{e:#}"));
                    }
                }
            }
        }

        for (path, value) in &self.sysctls {
            let now = fs::read_to_string(path).unwrap_or_default();
            if now.trim() != value
                && let Err(e) = fs::write(path, format!("{value}\n"))
            {
                errors.push(format!("restoring {} to {value}: {e}", path.display()));
            }
        }

        if errors.is_empty() {
            Ok(())
        } else {
            bail!("cleaning up after dockerd: {}", errors.join("; "))
        }
    }
}

fn iptables_rules(cmd: &str, table: &str) -> Option<Vec<String>> {
    let out = Command::new(cmd)
        .args(["-w", "-t", table, "-S"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

/// Docker's chains, rules that use them or its bridges, and the policy it sets.
fn is_dockers(rule: &str) -> bool {
    rule.contains("DOCKER")
        || split_words(rule)
            .iter()
            .any(|w| w == "docker0" || is_docker_bridge(w))
}

fn is_docker_bridge(name: &str) -> bool {
    name == "docker0"
        || name
            .strip_prefix("br-")
            .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The iptables arguments (after `-t TABLE`) that turn the `-S` listing `now` back into
/// `before` as far as Docker's changes go: delete Docker's new rules (newest first), then
/// flush and delete its new chains, then restore the built-in chains' policies.
fn iptables_undo(before: &[String], now: &[String]) -> Vec<Vec<String>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in before {
        *seen.entry(l.as_str()).or_default() += 1;
    }
    let mut new_rules = Vec::new();
    let mut new_chains = Vec::new();
    for l in now {
        if let Some(n) = seen.get_mut(l.as_str())
            && *n > 0
        {
            *n -= 1;
            continue;
        }
        let words = split_words(l);
        match words.first().map(String::as_str) {
            Some("-A") if is_dockers(l) => {
                let mut w = words;
                w[0] = "-D".to_owned();
                new_rules.push(w);
            }
            Some("-N") if words.len() == 2 && words[1].starts_with("DOCKER") => {
                new_chains.push(words[1].clone());
            }
            _ => {}
        }
    }
    let mut out: Vec<Vec<String>> = new_rules.into_iter().rev().collect();
    for c in &new_chains {
        out.push(vec!["-F".to_owned(), c.clone()]);
    }
    for c in &new_chains {
        out.push(vec!["-X".to_owned(), c.clone()]);
    }
    let policy = |lines: &[String], chain: &str| {
        lines.iter().find_map(|l| {
            let w = split_words(l);
            (w.len() == 3 && w[0] == "-P" && w[1] == chain).then(|| w[2].clone())
        })
    };
    for l in before {
        let w = split_words(l);
        if w.len() == 3 && w[0] == "-P" {
            let was = &w[2];
            if policy(now, &w[1]).is_some_and(|p| &p != was) {
                out.push(vec!["-P".to_owned(), w[1].clone(), was.clone()]);
            }
        }
    }
    out
}

/// Splits an `iptables -S` line into words; double quotes group, backslash escapes.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Network interface names (`ip -o link`).
fn links() -> Vec<String> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show"])
        .stdin(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(link_name)
        .collect()
}

/// `5: veth1a2b@if4: <...` → `veth1a2b`.
fn link_name(line: &str) -> Option<String> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next()?.to_owned())
}

fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(PathBuf::from))
        .collect()
}

fn read_pid(path: &str) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command, capturing its output; fails with its stderr.
fn run_quiet(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// The docker CLI, talking to [`SOCK`].
fn docker() -> Command {
    let mut c = Command::new("docker");
    c.arg("--host").arg(format!("unix://{SOCK}"));
    c
}

/// Builds and imports the busybox test image as `tag` unless the daemon already has it.
pub fn ensure_busybox_image(tag: &str) -> Result<()> {
    let present = docker()
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running the `docker` CLI (is it installed?)")?
        .success();
    if present {
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
            run_quiet(
                Command::new("apt-get")
                    .args([
                        "download",
                        "-o",
                        "APT::Sandbox::User=root",
                        "busybox-static",
                    ])
                    .current_dir(&tmp.0),
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
    run_quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&pkg))?;
    let busybox = pkg.join("bin/busybox");
    let rootfs = tmp.0.join("rootfs");
    make_rootfs(&busybox, &rootfs)?;
    let tar = tmp.0.join("rootfs.tar");
    run_quiet(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    )?;
    let deb_name = deb.file_name().unwrap_or_default().to_string_lossy();
    run_quiet(
        docker()
            .args(["import", "--change", r#"CMD ["/bin/sh"]"#, "--message"])
            .arg(format!("egress-enforcer test image from {deb_name}"))
            .arg(&tar)
            .arg(tag),
    )?;
    say(&format!(
        "imported {tag} in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The `docker-check` task.
pub fn check() -> Result<()> {
    if !sys::is_root() {
        bail!("starting dockerd needs root: run `sudo -E cargo xtask docker-check`");
    }
    sys::catch_signals();
    let guard = ensure_dockerd()?;
    ensure_busybox_image(TEST_IMAGE)?;
    let out = run_quiet(docker().args(["run", "--rm", TEST_IMAGE, "echo", "hi"]))?;
    let said = String::from_utf8_lossy(&out.stdout);
    if said.trim() != "hi" {
        bail!("`docker run --rm {TEST_IMAGE} echo hi` printed {said:?}");
    }
    say(&format!(
        "`docker run --rm {TEST_IMAGE} echo hi` printed hi"
    ));
    guard.stop()
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
    let list = run_quiet(Command::new(busybox).arg("--list-full"))?;
    let list = String::from_utf8_lossy(&list.stdout);
    let applets = applet_paths(&list);
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
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
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

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_owned).collect()
    }

    #[test]
    fn ping_needs_200_and_ok() {
        assert!(ping_ok(
            "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK"
        ));
        assert!(!ping_ok("HTTP/1.1 500 Internal Server Error\r\n\r\nOK"));
        assert!(!ping_ok(""));
    }

    #[test]
    fn undoes_only_dockers_iptables_changes() {
        let before = lines(
            "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-A INPUT -i lo -j ACCEPT\n",
        );
        let now = lines(
            "-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n-N DOCKER\n-N DOCKER-USER\n-N MINE\n\
             -A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp --dport 22 -j ACCEPT\n\
             -A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j DOCKER\n\
             -A FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT\n\
             -A DOCKER-USER -j RETURN\n",
        );
        let undo: Vec<String> = iptables_undo(&before, &now)
            .into_iter()
            .map(|w| w.join(" "))
            .collect();
        assert_eq!(
            undo,
            [
                "-D DOCKER-USER -j RETURN",
                "-D FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT",
                "-D FORWARD -o docker0 -j DOCKER",
                "-D FORWARD -j DOCKER-USER",
                "-F DOCKER",
                "-F DOCKER-USER",
                "-X DOCKER",
                "-X DOCKER-USER",
                "-P FORWARD ACCEPT",
            ]
        );
    }

    #[test]
    fn keeps_docker_rules_that_were_there_before() {
        let before = lines("-P FORWARD DROP\n-N DOCKER\n-A FORWARD -o docker0 -j DOCKER\n");
        let now = lines(
            "-P FORWARD DROP\n-N DOCKER\n-A FORWARD -o docker0 -j DOCKER\n-A FORWARD -o docker0 -j DOCKER\n",
        );
        let undo = iptables_undo(&before, &now);
        assert_eq!(undo, vec![split_words("-D FORWARD -o docker0 -j DOCKER")]);
    }

    #[test]
    fn splits_quoted_words() {
        assert_eq!(
            split_words(r#"-A X -m comment --comment "a b \"c\"" -j ACCEPT"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                r#"a b "c""#,
                "-j",
                "ACCEPT"
            ]
        );
    }

    #[test]
    fn recognises_docker_bridges_and_link_names() {
        assert!(is_docker_bridge("docker0"));
        assert!(is_docker_bridge("br-0123456789ab"));
        assert!(!is_docker_bridge("br-lan"));
        assert!(!is_docker_bridge("eth0"));
        assert_eq!(
            link_name("7: veth1a2b@if6: <BROADCAST> mtu 1500").as_deref(),
            Some("veth1a2b")
        );
        assert_eq!(link_name("1: lo: <LOOPBACK,UP>").as_deref(), Some("lo"));
    }

    #[test]
    fn applet_paths_are_relative_and_skip_busybox() {
        let p = applet_paths("bin/sh\nbin/busybox\nusr/bin/wget\n/etc/evil\n../x\n\n");
        assert_eq!(p, [PathBuf::from("bin/sh"), PathBuf::from("usr/bin/wget")]);
    }
}
