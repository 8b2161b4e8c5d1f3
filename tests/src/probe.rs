//! The `egress-probe` process: what it is asked to do, what it reports, and how the tests start
//! it inside a cgroup.
//!
//! The probe is a separate process so that the kernel sees a real task in the policed cgroup.
//! The tests start it with a `pre_exec` hook that moves the forked child into the target cgroup
//! *before* `exec`, so it is in the cgroup from its first instruction (see
//! [`crate::cgroup::Cgroup::command`]).
//!
//! Command line (see `src/bin/egress-probe.rs`):
//!
//! ```text
//! egress-probe MODE ADDR [--payload TEXT] [--move-to CGROUP_DIR] [--loop-until FILE]
//!   MODE  tcp          connect a TCP socket of ADDR's family
//!         udp          sendto (no connect) from a UDP socket of ADDR's family
//!         tcp6, udp6   the same through an AF_INET6 socket; an IPv4 ADDR is sent as ::ffff:a.b.c.d
//!         udp-serve    bind ADDR, wait for one datagram, answer its sender with sendto
//!         tcp-serve    listen on ADDR, accept one connection, write to it
//!   --move-to DIR      create the socket, then move this process into DIR, then connect/send
//!   --loop-until FILE  repeat socket+connect/send+close until FILE exists (prints `started` on
//!                      stderr after the first attempt)
//!   --spray N          N connects/sends to N distinct destinations: ADDR's port + k (ports
//!                      1024-65023, then the next address); UDP sends share one socket
//!   --connect          (UDP) connect to ADDR first, then send without an address
//!   --exchange         after the connect/send, send the payload (TCP), wait (2 s at most) for
//!                      an answer and report it, where it came from (recvfrom) and the
//!                      socket's peer (getpeername, connected sockets)
//! ```
//!
//! It prints one JSON line, an [`Outcome`].

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    bins,
    cgroup::Cgroup,
    netns::{self, NetNs},
};

/// `EPERM`, what a denied connect or sendto returns.
pub const EPERM: i32 = libc::EPERM;

/// A denial must come back at once, not after a timeout.
pub const FAST_DENIAL: Duration = Duration::from_millis(50);

/// Transport and socket family of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// TCP connect from a socket of the address's family.
    Tcp,
    /// UDP `sendto` without `connect` from a socket of the address's family.
    Udp,
    /// TCP connect from an AF_INET6 socket (IPv4 addresses as `::ffff:a.b.c.d`).
    Tcp6,
    /// UDP `sendto` from an AF_INET6 socket (IPv4 addresses as `::ffff:a.b.c.d`).
    Udp6,
    /// A UDP server on ADDR: waits (5 s at most) for one datagram and answers its sender with
    /// `sendto`; reports that `sendto`.
    UdpServe,
    /// A TCP server on ADDR: accepts one connection (5 s at most) and writes to it; reports
    /// that write.
    TcpServe,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Tcp6 => "tcp6",
            Self::Udp6 => "udp6",
            Self::UdpServe => "udp-serve",
            Self::TcpServe => "tcp-serve",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tcp" => Self::Tcp,
            "udp" | "udp-sendto" => Self::Udp,
            "tcp6" => Self::Tcp6,
            "udp6" | "udp6-sendto" => Self::Udp6,
            "udp-serve" => Self::UdpServe,
            "tcp-serve" => Self::TcpServe,
            _ => return None,
        })
    }

    pub fn is_tcp(self) -> bool {
        matches!(self, Self::Tcp | Self::Tcp6 | Self::TcpServe)
    }

    /// A server mode (it prints `started` once it listens).
    pub fn is_server(self) -> bool {
        matches!(self, Self::UdpServe | Self::TcpServe)
    }
}

/// Which step of the probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Socket,
    /// Moving itself into another cgroup (`--move-to`).
    Move,
    Connect,
    Sendto,
    /// Waiting for the answer (`--exchange`).
    Recv,
}

/// What the probe reports (one JSON line on stdout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The probe's pid (the tgid the programs report in events).
    pub pid: u32,
    /// The (last) connect or sendto succeeded.
    pub ok: bool,
    /// errno of the (last) failure.
    pub errno: Option<i32>,
    /// The step that failed.
    pub failed_at: Option<Step>,
    /// Human-readable error.
    pub error: Option<String>,
    /// Duration of the (last) connect or sendto call alone, in microseconds.
    pub elapsed_us: u64,
    /// Number of attempts (1 unless `--loop-until`).
    pub attempts: u64,
    /// Number of attempts that succeeded.
    pub successes: u64,
    /// Failed attempts by errno.
    pub errnos: BTreeMap<i32, u64>,
    /// Longest single connect or sendto, in microseconds.
    pub max_elapsed_us: u64,
    /// `--exchange`: the answer received.
    #[serde(default)]
    pub reply: Option<String>,
    /// `--exchange`: the address the answer came from, as `recvfrom` gave it (UDP).
    #[serde(default)]
    pub reply_from: Option<SocketAddr>,
    /// `--exchange`: the socket's peer as `getpeername` gave it (TCP, connected UDP).
    #[serde(default)]
    pub peer: Option<SocketAddr>,
}

impl Outcome {
    /// Panics unless the connect/sendto succeeded.
    #[track_caller]
    pub fn assert_ok(&self, what: &str) -> &Self {
        assert!(
            self.ok,
            "{what}: expected success, the probe reported {self:?}"
        );
        self
    }

    /// Panics unless the connect/sendto itself (not socket creation or the cgroup move) failed
    /// with EPERM within [`FAST_DENIAL`].
    #[track_caller]
    pub fn assert_denied(&self, what: &str) -> &Self {
        assert!(
            !self.ok,
            "{what}: expected EPERM, but the probe succeeded: {self:?}"
        );
        assert!(
            matches!(self.failed_at, Some(Step::Connect | Step::Sendto)),
            "{what}: the probe failed before it connected or sent: {self:?}"
        );
        assert_eq!(
            self.errno,
            Some(EPERM),
            "{what}: expected errno EPERM ({EPERM}): {self:?}"
        );
        assert!(
            self.elapsed_us < FAST_DENIAL.as_micros() as u64,
            "{what}: EPERM came after {} µs, expected an immediate denial (< {} ms): {self:?}",
            self.elapsed_us,
            FAST_DENIAL.as_millis()
        );
        self
    }
}

/// A probe to run: mode, destination and options.
#[derive(Debug, Clone)]
pub struct Probe {
    pub mode: Mode,
    pub addr: SocketAddr,
    pub payload: Option<String>,
    pub move_to: Option<PathBuf>,
    pub loop_until: Option<PathBuf>,
    /// Network namespace (a /run/netns file) to run in; the host's if None.
    pub netns: Option<PathBuf>,
    /// `--spray N`.
    pub spray: Option<u32>,
    /// `--connect` (UDP).
    pub connect: bool,
    /// `--exchange`.
    pub exchange: bool,
}

impl Probe {
    pub fn new(mode: Mode, addr: SocketAddr) -> Self {
        Self {
            mode,
            addr,
            payload: None,
            move_to: None,
            loop_until: None,
            netns: None,
            spray: None,
            connect: false,
            exchange: false,
        }
    }

    /// TCP connect from a socket of `addr`'s family.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::new(Mode::Tcp, addr)
    }

    /// UDP `sendto` (no connect) of `payload` from a socket of `addr`'s family.
    pub fn udp(addr: SocketAddr, payload: &str) -> Self {
        Self::new(Mode::Udp, addr).payload(payload)
    }

    /// TCP connect from an IPv6 socket; an IPv4 `addr` becomes `::ffff:a.b.c.d`.
    pub fn tcp6(addr: SocketAddr) -> Self {
        Self::new(Mode::Tcp6, addr)
    }

    /// UDP `sendto` from an IPv6 socket; an IPv4 `addr` becomes `::ffff:a.b.c.d`.
    pub fn udp6(addr: SocketAddr, payload: &str) -> Self {
        Self::new(Mode::Udp6, addr).payload(payload)
    }

    pub fn payload(mut self, p: &str) -> Self {
        self.payload = Some(p.to_owned());
        self
    }

    /// Create the socket in the cgroup the probe starts in, then move to `cg`, then connect.
    pub fn then_move_to(mut self, cg: &Cgroup) -> Self {
        self.move_to = Some(cg.path.clone());
        self
    }

    /// Repeat until `stop` exists.
    pub fn loop_until(mut self, stop: &Path) -> Self {
        self.loop_until = Some(stop.to_owned());
        self
    }

    /// Send to `n` distinct destinations from `addr` on (see the module docs).
    pub fn spray(mut self, n: u32) -> Self {
        self.spray = Some(n);
        self
    }

    /// UDP: connect to the address first, then send without one.
    pub fn connected(mut self) -> Self {
        self.connect = true;
        self
    }

    /// Wait for an answer and report it, its source and the socket's peer.
    pub fn exchange(mut self) -> Self {
        self.exchange = true;
        self
    }

    /// Run in the network namespace `ns` (the cgroup programs judge it all the same).
    pub fn in_netns(mut self, ns: &NetNs) -> Self {
        self.netns = Some(ns.path());
        self
    }

    /// The probe's arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![self.mode.name().to_owned(), self.addr.to_string()];
        if let Some(p) = &self.payload {
            a.extend(["--payload".into(), p.clone()]);
        }
        if let Some(d) = &self.move_to {
            a.extend(["--move-to".into(), d.display().to_string()]);
        }
        if let Some(f) = &self.loop_until {
            a.extend(["--loop-until".into(), f.display().to_string()]);
        }
        if let Some(n) = self.spray {
            a.extend(["--spray".into(), n.to_string()]);
        }
        if self.connect {
            a.push("--connect".into());
        }
        if self.exchange {
            a.push("--exchange".into());
        }
        a
    }

    fn command(&self, cg: &Cgroup) -> Command {
        let mut cmd = cg.command(bins::probe());
        if let Some(ns) = &self.netns {
            netns::enter_on_exec(&mut cmd, ns);
        }
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs the probe as a process that is in `cg` from its first instruction and returns what
    /// it reported.
    #[track_caller]
    pub fn run_in(&self, cg: &Cgroup) -> Outcome {
        let child = self
            .command(cg)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning egress-probe in {}: {e}", cg.path.display()));
        RunningProbe { child: Some(child) }.wait(self)
    }

    /// Spawns the probe in `cg` and returns at once, for a cgroup that may freeze or kill it
    /// (its report, if any, is on the child's stdout).
    pub fn spawn_in(&self, cg: &Cgroup) -> std::io::Result<std::process::Child> {
        self.command(cg).spawn()
    }

    /// Starts a `--loop-until` probe in `cg` and returns once it has made its first attempt,
    /// or a server probe once it listens.
    #[track_caller]
    pub fn start_in(&self, cg: &Cgroup) -> RunningProbe {
        assert!(
            self.loop_until.is_some() || self.mode.is_server(),
            "start_in is for --loop-until and server probes"
        );
        let mut child = self
            .command(cg)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning egress-probe in {}: {e}", cg.path.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let mut line = String::new();
        let _ = BufReader::new(stderr).read_line(&mut line);
        let running = RunningProbe { child: Some(child) };
        assert_eq!(
            line.trim(),
            "started",
            "the looping probe {:?} did not start",
            self.args()
        );
        running
    }
}

/// A probe process; killed if dropped before it finished.
pub struct RunningProbe {
    child: Option<Child>,
}

impl RunningProbe {
    /// Waits for the probe to exit and parses its report.
    #[track_caller]
    pub fn wait(mut self, probe: &Probe) -> Outcome {
        let child = self.child.take().expect("probe already waited for");
        let out = child.wait_with_output().expect("waiting for egress-probe");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "egress-probe {:?} exited with {}; stdout: {stdout}; stderr: {stderr}",
            probe.args(),
            out.status
        );
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "egress-probe {:?} printed no report ({e}); stdout: {stdout}; stderr: {stderr}",
                probe.args()
            )
        })
    }
}

impl Drop for RunningProbe {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
