//! The one place that starts and stops dockerd.
//!
//! **The shared daemon** of the Docker tests answers on [`SOCK`]. [`up`] uses one that answers,
//! or starts `setsid dockerd` (log in `<target>/dockerd.log`) and records it with the host state
//! from before its start in `<target>/dockerd.state.json`. [`down`] stops the daemon that file
//! names (and only that one: a dockerd the tests did not start is never stopped) and undoes
//! what it changed on the host ([`HostState`]). A daemon recorded by a run that was killed
//! before it could clean up is taken over by the next [`up`] (and stopped by the next
//! [`down`]). `egress-lab dockerd-up` / `dockerd-down` (and so `cargo xtask test
//! --with-docker`, `cargo xtask stop-dockerd`) are these two calls.
//!
//! **Restarting the shared daemon** under a running agent: [`SharedDockerdRestart`].
//! **Daemons of a test's own**: [`super::PrivateDockerd`].

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{DEFAULT_DOCKER_HOST, Docker, HostState, ping};
use crate::process::{self, alive, become_subreaper, read_pid_file, reap_children, reap_for};

/// The daemon socket the tests use.
pub const SOCK: &str = "/var/run/docker.sock";
/// How long a daemon may take to answer `/_ping` after its start.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// dockerd stops its containers on SIGTERM (up to 15 s by default) before it exits.
const STOP_GRACE: Duration = Duration::from_secs(40);
const CONTAINERD_PIDFILE: &str = "/var/run/docker/containerd/containerd.pid";
const DOCKERD_PIDFILE: &str = "/var/run/docker.pid";

/// Progress of the shared daemon's start and stop, on stderr.
pub(super) fn say(msg: &str) {
    eprintln!("egress-lab: {msg}");
}

/// What [`up`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Up {
    /// A daemon answered that the tests did not start: it is left alone.
    Running,
    /// A daemon started by an earlier run that could not stop it: [`down`] stops it.
    Adopted,
    /// Started now: [`down`] stops it.
    Started,
}

fn state_file(target: &Path) -> PathBuf {
    target.join("dockerd.state.json")
}

fn save(state: &HostState, path: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(state)?;
    fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

fn load(path: &Path) -> Result<Option<HostState>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(state))
}

/// Uses the daemon on [`SOCK`] if it answers, else starts `dockerd` and waits up to
/// [`START_TIMEOUT`] for it. `target` is the cargo target directory (state file and log).
pub fn up(target: &Path) -> Result<Up> {
    let path = state_file(target);
    if ping(Path::new(SOCK)) {
        if let Some(state) = load(&path)?
            && read_pid_file(DOCKERD_PIDFILE) == Some(state.dockerd_pid)
            && process::live_comm(state.dockerd_pid).as_deref() == Some("dockerd")
        {
            say(&format!(
                "the dockerd answering on {SOCK} (pid {}) was started by an earlier run ({}); \
                 using it and stopping it at the end",
                state.dockerd_pid,
                path.display()
            ));
            return Ok(Up::Adopted);
        }
        say(&format!("using the dockerd that answers on {SOCK}"));
        return Ok(Up::Running);
    }
    // A run that was killed may have left a dead daemon's changes behind.
    down(target)?;
    crate::tools::require("dockerd", "docker.io", "the Docker tests")?;
    crate::tools::require("iptables", "iptables", "dockerd")?;
    fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let log_path = target.join("dockerd.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    remove_stale_pidfiles();
    let mut state = HostState::snapshot();
    say(&format!("starting dockerd (log: {})", log_path.display()));
    let t0 = Instant::now();
    // setsid: its own session, so the terminal's Ctrl-C reaches only the runner, which stops it.
    let mut child = spawn_setsid(&["dockerd".to_owned()], Path::new("/"), Some(log))?;
    state.dockerd_pid = child.id() as i32;
    save(&state, &path)?;
    if let Err(e) = wait_answering(Path::new(SOCK), &mut child, START_TIMEOUT) {
        let e = anyhow::anyhow!(
            "dockerd {e}; the end of {}:\n{}",
            log_path.display(),
            process::tail(&log_path, 15)
        );
        if let Err(stop) = down(target) {
            say(&format!("error: stopping dockerd: {stop:#}"));
        }
        return Err(e);
    }
    // `setsid` execs dockerd in place (it is not a group leader); trust the pidfile.
    if let Some(pid) = read_pid_file(DOCKERD_PIDFILE)
        && pid != state.dockerd_pid
    {
        say(&format!(
            "dockerd runs as pid {pid}, not {} (setsid forked)",
            state.dockerd_pid
        ));
        state.dockerd_pid = pid;
    }
    state.containerd_pid = read_pid_file(CONTAINERD_PIDFILE);
    save(&state, &path)?;
    say(&format!(
        "dockerd ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(Up::Started)
}

/// If `<target>/dockerd.state.json` names a daemon the tests started, stops it and undoes its
/// host changes, then removes the file. No-op otherwise.
pub fn down(target: &Path) -> Result<()> {
    let path = state_file(target);
    let Some(state) = load(&path)? else {
        return Ok(());
    };
    say(&format!(
        "stopping the dockerd started for the tests (pid {}, recorded in {})",
        state.dockerd_pid,
        path.display()
    ));
    process::terminate(state.dockerd_pid, "dockerd", STOP_GRACE)?;
    state.undo()?;
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    say("dockerd stopped; its iptables rules, bridges, mounts and sysctls are gone");
    Ok(())
}

/// Removes dockerd's and containerd's pid files when their process is gone (or a zombie: PID 1
/// on some machines does not reap, and a new dockerd would wait for a zombie containerd until
/// it times out).
fn remove_stale_pidfiles() {
    for file in [DOCKERD_PIDFILE, CONTAINERD_PIDFILE] {
        if let Some(pid) = read_pid_file(file)
            && !alive(pid)
        {
            say(&format!("removing the stale {file} (pid {pid} is gone)"));
            let _ = fs::remove_file(file);
        }
    }
}

/// `setsid ARGV...` in `cwd`, output to `log` (or nowhere).
fn spawn_setsid(argv: &[String], cwd: &Path, log: Option<File>) -> Result<Child> {
    let (out, err) = match log {
        Some(f) => (Stdio::from(f.try_clone()?), Stdio::from(f)),
        None => (Stdio::null(), Stdio::null()),
    };
    Command::new("setsid")
        .args(argv)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("running `setsid {}`", argv.join(" ")))
}

/// Waits until the daemon `child` answers `/_ping` on `sock`; fails (saying why, to be
/// completed with its log) if it exits first or does not answer within `timeout`.
pub(super) fn wait_answering(sock: &Path, child: &mut Child, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    while !ping(sock) {
        if let Some(st) = child.try_wait()? {
            bail!("exited ({st}) before answering on {}", sock.display());
        }
        if t0.elapsed() > timeout {
            bail!("did not answer on {} within {timeout:?}", sock.display());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A dockerd process as found in /proc.
#[derive(Debug, Clone)]
pub struct DockerdProcess {
    pub pid: i32,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// Where its stdout went (a regular file), to append the restarted daemon's log to.
    pub log: Option<PathBuf>,
}

/// The live dockerd processes, with their command lines.
pub fn dockerd_processes() -> Vec<DockerdProcess> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if process::live_comm(pid).as_deref() != Some("dockerd") {
            continue;
        }
        let argv: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| "/".into());
        let log = fs::read_link(format!("/proc/{pid}/fd/1"))
            .ok()
            .filter(|p| p.is_file());
        out.push(DockerdProcess {
            pid,
            argv,
            cwd,
            log,
        });
    }
    out
}

/// The socket a dockerd listens on, from its command line (`-H`/`--host`), default
/// `/var/run/docker.sock`.
pub fn dockerd_socket(argv: &[String]) -> Vec<String> {
    let mut hosts = Vec::new();
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "-H" || a == "--host" {
            if let Some(h) = it.next() {
                hosts.push(h.clone());
            }
        } else if let Some(h) = a.strip_prefix("--host=").or_else(|| a.strip_prefix("-H=")) {
            hosts.push(h.to_owned());
        }
    }
    if hosts.is_empty() {
        hosts.push(DEFAULT_DOCKER_HOST.to_owned());
    }
    hosts
        .into_iter()
        .map(|h| {
            if h.starts_with("unix://") || h.contains("://") {
                h
            } else {
                format!("unix://{h}")
            }
        })
        .collect()
}

/// The shared dockerd, restarted by the test under a running agent: SIGTERM, wait for its
/// clean exit (it stops its containerd itself), start it again with the same command line
/// (`setsid`, same working directory, log appended where it went), wait for `/_ping`. Dropping
/// the guard starts the daemon again if it does not answer, so the host is never left without
/// its dockerd, even when the test fails.
pub struct SharedDockerdRestart {
    pub docker: Docker,
    pub process: DockerdProcess,
    /// Containers with this label (`key=value`) are removed when the guard drops.
    sweep_label: Option<String>,
    /// The restarted daemon (`setsid dockerd ...`). Never waited for nor killed: it is the
    /// host's daemon from then on, as the one it replaced.
    restarted: Option<Child>,
}

impl SharedDockerdRestart {
    /// Finds the one dockerd that serves `docker`'s socket.
    #[track_caller]
    pub fn find(docker: &Docker) -> Self {
        let all = dockerd_processes();
        let mine: Vec<DockerdProcess> = all
            .iter()
            .filter(|p| dockerd_socket(&p.argv).contains(&docker.host))
            .cloned()
            .collect();
        assert!(
            mine.len() == 1,
            "expected exactly one dockerd serving {}, found {:?}",
            docker.host,
            all.iter().map(|p| (p.pid, &p.argv)).collect::<Vec<_>>()
        );
        // Orphans (a killed daemon's containerd) become our children and are reaped by us.
        become_subreaper();
        Self {
            docker: docker.clone(),
            process: mine.into_iter().next().expect("one"),
            sweep_label: None,
            restarted: None,
        }
    }

    /// Removes the containers labelled `label` (`key=value`) when the guard drops, after the
    /// daemon answers again (containers with `--restart always` come back with the daemon).
    pub fn sweeping(mut self, label: &str) -> Self {
        self.sweep_label = Some(label.to_owned());
        self
    }

    /// SIGTERM and wait (at most 60 s) until the daemon is gone; returns how long it took.
    #[track_caller]
    pub fn stop(&self) -> Duration {
        let pid = self.process.pid;
        let t0 = Instant::now();
        process::signal(pid, libc::SIGTERM);
        while alive(pid) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "dockerd (pid {pid}) did not exit within 60 s of SIGTERM"
            );
            reap_children();
            thread::sleep(Duration::from_millis(50));
        }
        reap_children();
        // Its containerd (stopped by dockerd on a clean exit).
        let t1 = Instant::now();
        while read_pid_file(CONTAINERD_PIDFILE).is_some_and(alive)
            && t1.elapsed() < Duration::from_secs(20)
        {
            reap_children();
            thread::sleep(Duration::from_millis(50));
        }
        t0.elapsed()
    }

    /// Starts the daemon again with the same command line; waits (at most 60 s) for `/_ping`.
    #[track_caller]
    pub fn start(&mut self) -> Duration {
        let t0 = Instant::now();
        let log = self
            .process
            .log
            .as_ref()
            .and_then(|p| fs::OpenOptions::new().append(true).open(p).ok());
        let child = spawn_setsid(&self.process.argv, &self.process.cwd, log)
            .unwrap_or_else(|e| panic!("starting {:?} again: {e:#}", self.process.argv));
        let child_pid = child.id() as i32;
        let child = self.restarted.insert(child);
        let sock = self.docker.host.trim_start_matches("unix://").to_owned();
        if let Err(e) = wait_answering(Path::new(&sock), child, START_TIMEOUT) {
            panic!(
                "the restarted dockerd {e:#}; its log: {:?}",
                self.process.log
            );
        }
        // `setsid` execs dockerd in place unless it had to fork: trust the pidfile.
        self.process.pid = read_pid_file(DOCKERD_PIDFILE)
            .filter(|p| alive(*p))
            .unwrap_or(child_pid);
        t0.elapsed()
    }
}

impl Drop for SharedDockerdRestart {
    fn drop(&mut self) {
        if !self.docker.ping() {
            eprintln!("the shared dockerd does not answer: starting it again");
            if alive(self.process.pid) {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop()));
            }
            if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.start()))
            {
                eprintln!("could not start the shared dockerd again: {e:?}");
            }
        }
        if let Some(label) = &self.sweep_label {
            self.docker.remove_containers(Some(label));
        }
        reap_for(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerd_sockets_from_argv() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(dockerd_socket(&v(&["dockerd"])), vec![DEFAULT_DOCKER_HOST]);
        assert_eq!(
            dockerd_socket(&v(&["dockerd", "--host", "unix:///tmp/x.sock"])),
            vec!["unix:///tmp/x.sock"]
        );
        assert_eq!(
            dockerd_socket(&v(&["dockerd", "-H", "/tmp/y.sock"])),
            vec!["unix:///tmp/y.sock"]
        );
    }
}
