//! Running the `egress-agent` binary: `run` as a child process whose JSON log the test reads —
//! on plain cgroups without Docker ([`Agent::start`], the kernel tests) or following a dockerd
//! ([`Agent::start_docker`], the e2e tests) — and the one-shot `status` and `cleanup` commands.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{bins, docker::shared_docker_host, lock};

/// How long an agent without Docker may take to load, attach and apply its policies.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an agent following Docker may take to become ready.
pub const DOCKER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of [`Agent::start_docker`] beyond the fixed ones (`--log-format json`,
/// `--ttl-floor 1`, the pin directory, the DNS server, the default attach cgroup) and
/// [`AgentOpts::extra`].
#[derive(Debug, Clone)]
pub struct AgentOpts {
    pub grace: u64,
    pub deny_log_interval: u64,
    /// `--unclassified allow` instead of the default `deny` (for an agent that follows a
    /// private dockerd: the shared daemon's new containers are not its to classify).
    pub unclassified_allow: bool,
    /// The daemon the agent follows (`DOCKER_HOST`).
    pub docker_host: String,
    /// `--policy-file PATH` (none by default).
    pub policy_file: Option<PathBuf>,
    /// `--docker MODE` (`on` by default).
    pub docker_mode: &'static str,
    /// `--attach-cgroup PATH` (the cgroup v2 root by default).
    pub attach_cgroup: Option<PathBuf>,
    /// Wait for the `ready` line (true by default; an agent waiting for Docker is not ready).
    pub wait_ready: bool,
    /// `--dns-mode MODE` (`learn` or `resolve`; the agent's default when `None`).
    pub dns_mode: Option<&'static str>,
    /// More arguments for `run` (e.g. `--dns-deny refused`, `--dns-grace 1s`).
    pub extra: Vec<String>,
}

impl Default for AgentOpts {
    fn default() -> Self {
        Self {
            grace: 4,
            deny_log_interval: 0,
            unclassified_allow: false,
            docker_host: shared_docker_host(),
            policy_file: None,
            docker_mode: "on",
            attach_cgroup: None,
            wait_ready: true,
            dns_mode: None,
            extra: Vec::new(),
        }
    }
}

/// `egress-agent --log-format json --log-level info`, without the caller's `RUST_LOG` and
/// `EGRESS_*` variables (the test decides every option).
fn agent_command() -> Command {
    let mut cmd = Command::new(bins::agent());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k == "RUST_LOG" || k.starts_with("EGRESS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["--log-format", "json", "--log-level", "info"]);
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

/// The `message` of a JSON log line, and the whole line parsed.
fn message(line: &str) -> Option<(String, Value)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let m = v.get("fields")?.get("message")?.as_str()?.to_owned();
    Some((m, v))
}

/// A running `egress-agent run`. Killed with SIGKILL if still running when dropped; its
/// pinned state is not touched (see [`crate::pins::PinDir`]).
pub struct Agent {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    /// How long it took to log `ready` (zero if not waited for).
    pub ready_after: Duration,
}

impl Agent {
    /// Starts `egress-agent run --docker off --pin-dir PIN --attach-cgroup ATTACH
    /// [--policy P]...` and waits for its `ready` log line.
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
        Self::spawn(cmd, Some(READY_TIMEOUT))
    }

    /// Starts `egress-agent run` following `opts.docker_host` with `dns` as its DNS server and
    /// waits (at most [`DOCKER_READY_TIMEOUT`]) for its `ready` line unless told not to.
    #[track_caller]
    pub fn start_docker(pin_dir: &Path, dns: SocketAddr, opts: &AgentOpts) -> Self {
        let mut cmd = agent_command();
        cmd.env("DOCKER_HOST", &opts.docker_host)
            .arg("run")
            .args(["--docker", opts.docker_mode])
            .arg("--pin-dir")
            .arg(pin_dir)
            .args(["--dns-server", &dns.to_string()])
            .args(["--ttl-floor", "1"])
            .args(["--grace", &opts.grace.to_string()])
            .args(["--deny-log-interval", &opts.deny_log_interval.to_string()])
            .args([
                "--unclassified",
                if opts.unclassified_allow {
                    "allow"
                } else {
                    "deny"
                },
            ]);
        if let Some(p) = &opts.policy_file {
            cmd.arg("--policy-file").arg(p);
        }
        if let Some(p) = &opts.attach_cgroup {
            cmd.arg("--attach-cgroup").arg(p);
        }
        if let Some(m) = opts.dns_mode {
            cmd.args(["--dns-mode", m]);
        }
        cmd.args(&opts.extra);
        Self::spawn(cmd, opts.wait_ready.then_some(DOCKER_READY_TIMEOUT))
    }

    /// Spawns `cmd` with its stderr captured; with a timeout, waits that long for `ready`.
    #[track_caller]
    fn spawn(mut cmd: Command, ready_within: Option<Duration>) -> Self {
        let t0 = Instant::now();
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
            ready_after: Duration::ZERO,
        };
        let Some(timeout) = ready_within else {
            return agent;
        };
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                agent.ready_after = t0.elapsed();
                return agent;
            }
            if let Ok(Some(status)) = agent.child.as_mut().expect("child").try_wait() {
                // Let the reader thread collect the last lines.
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "egress-agent run exited with {status} before it was ready; log:\n{}",
                    agent.log_text()
                );
            }
            assert!(
                t0.elapsed() < timeout,
                "egress-agent run was not ready within {timeout:?}; log:\n{}",
                agent.log_text()
            );
        }
    }

    /// The agent's pid (while it has not been stopped).
    #[track_caller]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// Its log so far, one JSON object a line.
    pub fn log_text(&self) -> String {
        lock(&self.log).join("\n")
    }

    /// Every parsed log line so far (`{"level", "fields": {"message", ...}, ...}`).
    pub fn lines(&self) -> Vec<Value> {
        lock(&self.log)
            .iter()
            .filter_map(|l| message(l).map(|(_, v)| v))
            .collect()
    }

    /// The `fields` of the log lines with this message.
    pub fn messages(&self, message: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v["fields"]["message"] == message)
            .map(|v| v["fields"].clone())
            .collect()
    }

    /// The `fields` of the `ready` log line.
    pub fn ready_fields(&self) -> Value {
        self.messages("ready")
            .into_iter()
            .next()
            .unwrap_or(Value::Null)
    }

    /// Log lines at `level` (`WARN`, `INFO`, ...), parsed.
    pub fn log_at(&self, level: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v.get("level").and_then(|l| l.as_str()) == Some(level))
            .collect()
    }

    /// Waits for a log line whose `fields` satisfy `pred`; returns its `fields`.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        crate::wait::poll(timeout, Duration::from_millis(50), || {
            self.lines()
                .into_iter()
                .map(|v| v["fields"].clone())
                .find(|f| pred(f))
        })
        .unwrap_or_else(|| {
            panic!(
                "no agent log line {what} within {timeout:?}; log:\n{}",
                self.log_text()
            )
        })
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `sig` to the agent.
    #[track_caller]
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, which we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Sends SIGHUP (reload the policy file) to the agent.
    #[track_caller]
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    fn signal_and_wait(&mut self, sig: libc::c_int) -> ExitStatus {
        self.signal(sig);
        let mut child = self.child.take().expect("agent running");
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

    /// SIGTERM and wait; panics unless it exits successfully within 20 s.
    #[track_caller]
    pub fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().expect("agent running");
        let st = crate::wait::poll(Duration::from_secs(20), Duration::from_millis(20), || {
            c.try_wait().expect("waiting for egress-agent")
        });
        match st {
            Some(st) => assert!(
                st.success(),
                "egress-agent exited with {st} on SIGTERM; log:\n{}",
                self.log_text()
            ),
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "egress-agent did not stop within 20 s of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
        }
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
pub fn status_json(pin_dir: &Path) -> Value {
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
