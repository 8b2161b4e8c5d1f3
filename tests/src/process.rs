//! Child processes and other processes of the host: running a command to completion with a
//! timeout, a long-running daemon stopped on drop, finding tools, and the `/proc` look-ups,
//! signals and reaping that stopping a daemon needs.

use std::{
    fs,
    io::{self, Read},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// `program arg arg ...`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// What a finished child printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with captured output (stdin from /dev/null), killing it after
/// `timeout`.
pub fn run_captured(cmd: &mut Command, timeout: Duration) -> Result<Finished> {
    let line = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{line}`"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` did not finish within {timeout:?}; killed it");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Like [`run_captured`], failing (with its stderr) unless the exit status is 0.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<Finished> {
    let line = describe(cmd);
    let f = run_captured(cmd, timeout)?;
    if !f.status.success() {
        bail!(
            "`{line}` failed ({}): {}{}",
            f.status,
            f.stderr.trim(),
            f.stdout.trim()
        );
    }
    Ok(f)
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A long-running child (a server, a proxy) logging to a file: SIGTERM, then SIGKILL, on drop.
/// It gets SIGTERM if this process dies without stopping it.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
}

impl Daemon {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let line = describe(cmd);
        let f = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {name}: `{line}`"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails if the process has exited already.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(st) = c.try_wait()?
        {
            bail!("{} exited early ({st})", self.name);
        }
        Ok(())
    }

    /// Stops it: SIGTERM, up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if matches!(c.try_wait(), Ok(Some(_))) {
            return;
        }
        signal(c.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM; killing it", self.name);
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `tool` on PATH or in the sbin directories (which a non-root PATH may lack).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// [`find_tool`], failing with the Debian package to install.
pub fn require_tool(tool: &str, package: &str, what: &str) -> Result<PathBuf> {
    find_tool(tool).with_context(|| {
        format!(
            "`{tool}` is missing; {what} needs it: apt-get install -y --no-install-recommends {package}"
        )
    })
}

/// The `comm` of a live (not zombie) process, or None.
pub fn live_comm(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // PID (COMM) STATE ...; COMM may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let state = stat.get(close + 1..)?.split_whitespace().next()?;
    (state != "Z" && state != "X").then_some(comm)
}

/// True if `pid` is alive (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    live_comm(pid).is_some()
}

/// The pid in a pid file.
pub fn read_pid_file(path: impl AsRef<Path>) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `kill(pid, sig)`, errors ignored.
pub fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Sends SIGTERM to `pid` if it is still the process named `comm`, waits up to `grace` for it
/// to go, then SIGKILLs it. Exited children of ours are reaped while waiting.
pub fn terminate(pid: i32, comm: &str, grace: Duration) -> Result<()> {
    let is_it = || live_comm(pid).is_some_and(|c| c == comm);
    if !is_it() {
        return Ok(());
    }
    signal(pid, libc::SIGTERM);
    let gone = |d| {
        crate::wait::poll(d, Duration::from_millis(100), || {
            reap_children();
            (!is_it()).then_some(())
        })
        .is_some()
    };
    if gone(grace) {
        return Ok(());
    }
    eprintln!("{comm} (pid {pid}) did not exit within {grace:?} of SIGTERM; sending SIGKILL");
    signal(pid, libc::SIGKILL);
    if gone(Duration::from_secs(10)) {
        return Ok(());
    }
    bail!("{comm} (pid {pid}) survived SIGKILL")
}

/// Makes this process the reaper of its orphaned descendants (a killed daemon's containerd,
/// container shims), so that they are reaped here and do not stay zombies under an init that
/// does not reap.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Reaps any exited children (orphans adopted as subreaper) without blocking.
pub fn reap_children() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(-1, WNOHANG) only reaps our own exited children.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc <= 0 {
            break;
        }
    }
}

/// Reaps exited children for a while: container shims adopted as subreaper exit shortly after
/// their containers are removed.
pub fn reap_for(d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        reap_children();
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a text file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_comm() {
        let me = std::process::id() as i32;
        assert!(live_comm(me).is_some());
        assert!(alive(me));
        assert_eq!(live_comm(i32::MAX), None);
    }

    #[test]
    fn runs_with_a_timeout() {
        let f = run_ok(
            Command::new("sh").args(["-c", "echo hi"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(f.stdout.trim(), "hi");
        let e = run_captured(Command::new("sleep").arg("5"), Duration::from_millis(50));
        assert!(e.is_err());
    }
}
