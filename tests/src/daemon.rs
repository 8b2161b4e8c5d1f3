//! Long-running helper processes of a run (servers, proxies): started with their output in a
//! log file, stopped with SIGTERM (then SIGKILL) when dropped, and killed by the kernel if the
//! harness dies first, so nothing outlives the run.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{command::describe, interrupt};

/// How long a daemon gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// A child process that runs until it is stopped or dropped.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `cmd` (stdin closed, stdout and stderr into `log`); `name` is for messages.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let line = describe(cmd);
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        // SAFETY: prctl is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}: `{line}`"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// Its pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails if it has exited already.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it is still there after [`TERM_GRACE`].
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if matches!(c.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + TERM_GRACE;
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

/// Waits until a TCP connect to `addr` (from this process) succeeds; fails after `timeout`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        interrupt::check()?;
        if Instant::now() >= deadline {
            bail!("{what} does not accept connections on {addr} after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}
