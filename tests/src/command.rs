//! Running a command to completion with its output captured and a deadline: killed when it
//! overruns or on Ctrl-C ([`crate::interrupt`]), so a stuck tool never hangs a run.

use std::{
    io::Read,
    process::{Command, ExitStatus, Stdio},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::interrupt;

/// `program arg arg ...`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    line
}

/// What a finished command printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Collects a pipe's whole output on a thread of its own (so neither pipe fills up and blocks
/// the child).
fn collect(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` (stdin closed) until it exits; kills it after `timeout` or on Ctrl-C.
pub fn run_captured(cmd: &mut Command, timeout: Duration) -> Result<Finished> {
    let line = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{line}`"))?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if interrupt::raised() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            interrupt::check()?;
            bail!("`{line}` did not finish within {timeout:?}; killed it");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// [`run_captured`], failing (with what it printed) unless it exits with 0.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<Finished> {
    let line = describe(cmd);
    let done = run_captured(cmd, timeout)?;
    if !done.status.success() {
        bail!(
            "`{line}` failed ({}): {}{}",
            done.status,
            done.stderr.trim(),
            done.stdout.trim()
        );
    }
    Ok(done)
}
