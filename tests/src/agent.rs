//! Running the `egress-agent` binary: `run` as a child process whose JSON log the test reads,
//! and the one-shot `status` and `cleanup` commands.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use crate::bins;

/// How long an agent may take to load, attach and apply its policies.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `egress-agent run`. Killed with SIGKILL if still running when dropped.
pub struct Agent {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

fn agent_command() -> Command {
    let mut cmd = Command::new(bins::agent());
    cmd.env_remove("RUST_LOG")
        .env_remove("EGRESS_LOG")
        .env_remove("EGRESS_ATTACH_CGROUP")
        .args(["--log-format", "json", "--log-level", "info"]);
    cmd
}

/// Collects a child's stderr lines (in a thread) into a shared log; the receiver gets one
/// message per line for which `is_ready` holds.
pub fn capture_log(
    child: &mut Child,
    is_ready: impl Fn(&str) -> bool + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<()>) {
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let shared = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let ready = is_ready(&line);
            lock(&shared).push(line);
            if ready {
                let _ = ready_tx.send(());
            }
        }
    });
    (log, ready_rx)
}

fn lock(log: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `message` of a JSON log line, and the whole line parsed.
fn message(line: &str) -> Option<(String, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let m = v.get("fields")?.get("message")?.as_str()?.to_owned();
    Some((m, v))
}

impl Agent {
    /// Starts `egress-agent run --pin-dir PIN --attach-cgroup ATTACH [--policy P]...` and waits
    /// for its `ready` log line.
    #[track_caller]
    pub fn start(pin_dir: &Path, attach: &Path, policies: &[String]) -> Self {
        Self::start_with(pin_dir, attach, policies, &[])
    }

    /// [`start`](Self::start) with more arguments for `run` (e.g. `--deny-log-interval 60`).
    #[track_caller]
    pub fn start_with(pin_dir: &Path, attach: &Path, policies: &[String], extra: &[&str]) -> Self {
        let mut cmd = agent_command();
        // The kernel-core tests police plain cgroups: no Docker, whatever runs on the host.
        cmd.arg("run")
            .args(["--docker", "off"])
            .arg("--pin-dir")
            .arg(pin_dir)
            .arg("--attach-cgroup")
            .arg(attach);
        for p in policies {
            cmd.args(["--policy", p]);
        }
        cmd.args(extra);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning egress-agent run: {e}"));
        let (log, ready_rx) = capture_log(&mut child, |l| {
            message(l).is_some_and(|(m, _)| m == "ready")
        });
        let mut agent = Self {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                return agent;
            }
            if let Ok(Some(status)) = agent.child.as_mut().unwrap().try_wait() {
                // Let the reader thread collect the last lines.
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "egress-agent run exited with {status} before it was ready; log:\n{}",
                    agent.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "egress-agent run was not ready within {READY_TIMEOUT:?}; log:\n{}",
                    agent.log_text()
                );
            }
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// Its log so far, one JSON object a line.
    pub fn log_text(&self) -> String {
        lock(&self.log).join("\n")
    }

    /// The `fields` of the `ready` log line.
    pub fn ready_fields(&self) -> serde_json::Value {
        lock(&self.log)
            .iter()
            .filter_map(|l| message(l))
            .find(|(m, _)| m == "ready")
            .map(|(_, v)| v["fields"].clone())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Log lines at `level` (`WARN`, `INFO`, ...), parsed.
    pub fn log_at(&self, level: &str) -> Vec<serde_json::Value> {
        lock(&self.log)
            .iter()
            .filter_map(|l| message(l).map(|(_, v)| v))
            .filter(|v| v.get("level").and_then(|l| l.as_str()) == Some(level))
            .collect()
    }

    fn signal_and_wait(&mut self, sig: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", child.id());
        child.wait().expect("waiting for egress-agent")
    }

    /// `kill -9`: the agent gets no chance to clean up.
    pub fn sigkill(mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGKILL)
    }

    /// SIGTERM, the orderly stop; returns the exit status.
    pub fn sigterm(mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGTERM)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `egress-agent ARGS...` to completion.
#[track_caller]
pub fn cli(args: &[&str]) -> Output {
    agent_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running egress-agent {args:?}: {e}"))
}

/// `egress-agent status --json --pin-dir PIN`, parsed.
#[track_caller]
pub fn status_json(pin_dir: &Path) -> serde_json::Value {
    let pin = pin_dir.to_str().expect("UTF-8 pin path");
    let out = cli(&["status", "--json", "--pin-dir", pin]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "egress-agent status failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("egress-agent status --json printed no JSON ({e}): {stdout}"))
}

/// `egress-agent cleanup --pin-dir PIN`; panics unless it succeeds.
#[track_caller]
pub fn cleanup(pin_dir: &Path) {
    let pin = pin_dir.to_str().expect("UTF-8 pin path");
    let out = cli(&["cleanup", "--pin-dir", pin]);
    assert!(
        out.status.success(),
        "egress-agent cleanup --pin-dir {pin} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
