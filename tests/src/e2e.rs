//! End-to-end harness: a real dockerd, real containers, the real `egress-agent run --docker on`
//! attached at the cgroup v2 root, and a test DNS server.
//!
//! A [`Lab`] is one test's world: a user-defined bridge network with a fixed subnet
//! (`10.231.<n>.0/24`, gateway `.1`), a [`TestDns`] on the gateway's port 53, its containers
//! (every one gets `--network <net> --dns <gateway>`), its agent and its bpffs pin directory.
//! Dropping it (also on panic) stops the agent, runs `egress-agent cleanup --pin-dir`, removes
//! the containers, the network and the DNS server. Targets are busybox containers with fixed
//! IPs answering `ok` on TCP 8080 and 8081 ([`Lab::start_target`]); UDP reaches a receiver of
//! the test's own opened inside a target's network namespace ([`UdpSink`]). Clients are
//! busybox containers running a [`probe_script`], whose `PROBE` lines say what the kernel
//! answered and how long it took ([`Probe`]).
//!
//! Traffic only ever goes to the lab's own containers and DNS server; no real name is
//! resolved. Nothing is skipped: without Docker or the test image the tests fail with the
//! reason ([`Docker::require`]).
//!
//! Address plan: `10.231.<n>.0/24` for the bridge test `n`, `127.231.<n>.0/24` for tests on the
//! host network (see [`loopback`]), so no two e2e tests share an address.

use std::{
    collections::BTreeMap,
    env, fs,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd as _, unix::net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use crate::{bins, dns::TestDns};

/// The image `cargo xtask test --with-docker` makes (busybox-static rootfs).
pub const DEFAULT_IMAGE: &str = "egress-test-busybox:latest";
/// The Docker socket used when `DOCKER_HOST` is not set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// Label put on every container of a lab (its value is the lab's tag), to sweep leftovers of
/// killed runs. It does not start with `egress.`, so the agent ignores it.
pub const LAB_LABEL: &str = "test.egress-e2e.lab";
/// TCP ports the targets answer `ok` on.
pub const PORT: u16 = 8080;
pub const OTHER_PORT: u16 = 8081;
/// UDP port of [`UdpSink`]s.
pub const UDP_PORT: u16 = 9000;
/// How long an agent may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A denial must come at once: well under the clients' 3 s connect timeout.
pub const IMMEDIATE: Duration = Duration::from_millis(1000);
/// What busybox prints for EPERM.
pub const EPERM_TEXT: &str = "Operation not permitted";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test image: `$EGRESS_TEST_IMAGE`, else [`DEFAULT_IMAGE`].
pub fn image() -> String {
    env::var("EGRESS_TEST_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned())
}

/// The daemon the tests use: `$DOCKER_HOST`, else [`DEFAULT_DOCKER_HOST`].
pub fn shared_docker_host() -> String {
    env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
#[track_caller]
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn nanos_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

// ---------------------------------------------------------------------------------------------
// Docker CLI

/// The docker CLI against one daemon.
#[derive(Debug, Clone)]
pub struct Docker {
    pub host: String,
}

impl Docker {
    pub fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
        }
    }

    /// The shared daemon, after checking that it answers and has the test image; panics with
    /// the reason (and how to get both) otherwise. Tests never skip.
    #[track_caller]
    pub fn require() -> Self {
        let d = Self::new(&shared_docker_host());
        if let Err(e) = d.try_run(&["version", "--format", "{{.Server.APIVersion}}"]) {
            panic!(
                "dockerd is not reachable at {}: {e}\nThe e2e tests need a running Docker daemon \
                 and the test image: run them with `cargo xtask test --with-docker` (it starts \
                 dockerd if none runs, imports the image and sets EGRESS_TEST_DOCKER=1), or \
                 start one yourself (`setsid dockerd >/tmp/dockerd.log 2>&1 &`).",
                d.host
            );
        }
        let image = image();
        if let Err(e) = d.try_run(&["image", "inspect", "--format", "{{.Id}}", &image]) {
            panic!(
                "the test image {image} is missing on {}: {e}\n`cargo xtask test --with-docker` \
                 imports it (a rootfs of Debian's busybox-static).",
                d.host
            );
        }
        d
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["120", "docker", "--host", &self.host])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs `docker ARGS`; the whole output, whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running the docker CLI: {e}"))
    }

    /// Runs `docker ARGS`; its trimmed stdout, or why it failed.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| format!("running the docker CLI: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`docker --host {} {}` failed ({}): {}{}",
                self.host,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs `docker ARGS`; panics unless it succeeds.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `docker inspect -f FORMAT C`.
    #[track_caller]
    pub fn inspect(&self, container: &str, format: &str) -> String {
        self.run(&["inspect", "--format", format, container])
    }

    /// The host pid of a running container's first process.
    #[track_caller]
    pub fn pid(&self, container: &str) -> u32 {
        let s = self.inspect(container, "{{.State.Pid}}");
        s.parse()
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("container {container} has no pid ({s:?}): not running?"))
    }

    /// True if the daemon answers `GET /_ping` on its unix socket.
    pub fn ping(&self) -> bool {
        match self.host.strip_prefix("unix://") {
            Some(sock) => ping(Path::new(sock)),
            None => self.try_run(&["version"]).is_ok(),
        }
    }
}

/// `GET /_ping` on a Docker socket.
pub fn ping(sock: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let t = Some(Duration::from_secs(2));
    if s.set_read_timeout(t).is_err()
        || s.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            .is_err()
    {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.1 200") && resp.trim_end().ends_with("OK")
}

/// Containers removed (`docker rm -f`) on drop, also on panic.
#[derive(Debug)]
pub struct Containers {
    docker: Docker,
    names: Mutex<Vec<String>>,
    counter: AtomicUsize,
    prefix: String,
}

impl Containers {
    pub fn new(docker: &Docker, prefix: &str) -> Self {
        Self {
            docker: docker.clone(),
            names: Mutex::new(Vec::new()),
            counter: AtomicUsize::new(0),
            prefix: prefix.to_owned(),
        }
    }

    /// A new container name, `<prefix>-<role>-<n>`, removed on drop.
    pub fn name(&self, role: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{role}-{n}", self.prefix);
        lock(&self.names).push(name.clone());
        name
    }

    pub fn remove_all(&self) {
        let names = std::mem::take(&mut *lock(&self.names));
        if names.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f"];
        args.extend(names.iter().map(String::as_str));
        // Containers already gone (`--rm`) make `rm -f` complain: that is fine.
        let _ = self.docker.output(&args);
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.remove_all();
    }
}

// ---------------------------------------------------------------------------------------------
// Probes: what a client container's connects and sends got

/// One attempt of a client container, parsed from its `PROBE` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub tag: String,
    pub rc: i32,
    /// Measured inside the container (10 ms resolution, from /proc/uptime).
    pub elapsed: Duration,
    /// What the command printed (stdout and stderr, on one line).
    pub out: String,
}

/// What the kernel did with a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// TCP: connected and read the target's `ok ...`. (A UDP probe that got through shows
    /// as `Failed` with the sink's `tftp: server error`; see [`UdpSink::received`].)
    Connected,
    /// EPERM.
    Denied,
    /// Anything else (timeout, refused, ...), with the text.
    Failed(String),
}

impl Probe {
    pub fn outcome(&self) -> Outcome {
        if self.out.contains(EPERM_TEXT) {
            Outcome::Denied
        } else if self.rc == 0 && self.out.split_whitespace().any(|w| w == "ok") {
            Outcome::Connected
        } else {
            Outcome::Failed(format!("rc={} out={:?}", self.rc, self.out))
        }
    }

    /// Panics unless the probe was denied with EPERM at once.
    #[track_caller]
    pub fn assert_denied(&self, context: &str) {
        assert_eq!(
            self.outcome(),
            Outcome::Denied,
            "{context}: `{}` should be denied with EPERM: {self:?}",
            self.tag
        );
        assert!(
            self.elapsed < IMMEDIATE,
            "{context}: the denial of `{}` took {:?} (should be immediate): {self:?}",
            self.tag,
            self.elapsed
        );
    }

    /// True if the TCP probe read the answer of the target of this role (`ok <role>`).
    pub fn reached(&self, role: &str) -> bool {
        self.rc == 0 && self.out.trim() == format!("ok {role}")
    }

    /// Panics unless the TCP probe connected and read `ok ...`.
    #[track_caller]
    pub fn assert_connected(&self, context: &str) {
        assert_eq!(
            self.outcome(),
            Outcome::Connected,
            "{context}: `{}` should connect: {self:?}",
            self.tag
        );
    }
}

/// One attempt a client makes.
#[derive(Debug, Clone)]
pub enum Check {
    /// `nc` to HOST:PORT (HOST may be a name); the target answers `ok`.
    Tcp {
        tag: String,
        host: String,
        port: u16,
    },
    /// One UDP datagram to HOST:PORT (busybox `tftp`, whose request carries `tag` as the file
    /// name, so that a [`UdpSink`] can tell whose it is).
    Udp {
        tag: String,
        host: String,
        port: u16,
    },
}

impl Check {
    pub fn tcp(tag: &str, host: impl ToString, port: u16) -> Self {
        Check::Tcp {
            tag: tag.to_owned(),
            host: host.to_string(),
            port,
        }
    }

    pub fn udp(tag: &str, host: impl ToString, port: u16) -> Self {
        Check::Udp {
            tag: tag.to_owned(),
            host: host.to_string(),
            port,
        }
    }
}

/// A `sh` script that runs the checks one after the other and prints one line per check:
/// `PROBE <tag> <rc> <uptime before> <uptime after> <output...>`.
pub fn probe_script(checks: &[Check]) -> String {
    let mut s = String::from(
        "p() { tag=$1; shift; t0=$(cut -d' ' -f1 /proc/uptime); out=$(\"$@\" 2>&1 </dev/null); \
         rc=$?; t1=$(cut -d' ' -f1 /proc/uptime); echo \"PROBE $tag $rc $t0 $t1 $(echo $out)\"; }\n",
    );
    for c in checks {
        match c {
            Check::Tcp { tag, host, port } => {
                s.push_str(&format!("p {tag} timeout 5 nc -w 3 {host} {port}\n"))
            }
            Check::Udp { tag, host, port } => s.push_str(&format!(
                "p {tag} timeout 2 tftp -g -r {tag} -l /tmp/{tag} {host} {port}\n"
            )),
        }
    }
    s
}

/// The `PROBE` lines of a client's output, by tag.
pub fn parse_probes(output: &str) -> BTreeMap<String, Probe> {
    let mut out = BTreeMap::new();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("PROBE ") else {
            continue;
        };
        let mut w = rest.splitn(5, ' ');
        let (Some(tag), Some(rc), Some(t0), Some(t1)) = (w.next(), w.next(), w.next(), w.next())
        else {
            continue;
        };
        let secs = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
        let d = secs(t1) - secs(t0);
        let elapsed = if d.is_finite() && d >= 0.0 {
            Duration::from_secs_f64(d)
        } else {
            Duration::MAX
        };
        out.insert(
            tag.to_owned(),
            Probe {
                tag: tag.to_owned(),
                rc: rc.parse().unwrap_or(-1),
                elapsed,
                out: w.next().unwrap_or_default().trim().to_owned(),
            },
        );
    }
    out
}

/// The probes of `output`, one per check, in the checks' order; panics if one is missing.
#[track_caller]
pub fn probes_of(output: &str, checks: &[Check]) -> Vec<Probe> {
    let parsed = parse_probes(output);
    checks
        .iter()
        .map(|c| {
            let tag = match c {
                Check::Tcp { tag, .. } | Check::Udp { tag, .. } => tag,
            };
            parsed
                .get(tag)
                .cloned()
                .unwrap_or_else(|| panic!("no PROBE line for `{tag}` in the output:\n{output}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// UDP receiver inside a container's network namespace

/// What a [`UdpSink`] received: (sender, payload).
type Datagrams = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A UDP socket of the test's own, opened inside a container's network namespace (so it
/// receives what is sent to that container's IP). It records every datagram and answers each
/// with a TFTP error packet, so that busybox `tftp` exits at once. Stops on drop.
pub struct UdpSink {
    got: Datagrams,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl UdpSink {
    /// Binds 0.0.0.0:`port` in the network namespace of process `pid`.
    #[track_caller]
    pub fn start_in_netns_of(pid: u32, port: u16) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let thread = {
            let got = got.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("udp-sink-{pid}"))
                .spawn(move || {
                    let sock = match bind_in_netns(pid, port) {
                        Ok(s) => {
                            let _ = tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = sock.recv_from(&mut buf) {
                            lock(&got).push((from, buf[..n].to_vec()));
                            // TFTP ERROR (opcode 5), code 1, "seen".
                            let _ = sock.send_to(b"\x00\x05\x00\x01seen\x00", from);
                        }
                    }
                })
                .expect("spawning the UDP sink thread")
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("UDP sink in the netns of pid {pid}: {e}"),
            Err(e) => panic!("UDP sink in the netns of pid {pid}: no answer ({e})"),
        }
        Self {
            got,
            stop,
            thread: Some(thread),
        }
    }

    /// True if a datagram carrying `tag` arrived.
    pub fn received(&self, tag: &str) -> bool {
        lock(&self.got)
            .iter()
            .any(|(_, d)| String::from_utf8_lossy(d).contains(tag))
    }
}

/// Moves the calling thread into the netns of `pid` (for good: the thread is dedicated) and
/// binds a UDP socket there, with a short read timeout.
fn bind_in_netns(pid: u32, port: u16) -> Result<UdpSocket, String> {
    let ns = fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| format!("opening /proc/{pid}/ns/net: {e}"))?;
    // SAFETY: setns(2) on a namespace descriptor we hold; it changes this thread only.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| format!("binding UDP port {port}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    Ok(sock)
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TCP targets on loopback (for tests on the host network)

/// `127.231.<n>.<host>`: the loopback addresses of e2e test `n` on the host network.
pub fn loopback(n: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 231, n, host))
}

/// A TCP listener of the test's own that answers `ok <role>` to every connection and counts
/// them.
pub struct TcpTarget {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TcpTarget {
    #[track_caller]
    pub fn start(addr: SocketAddr, role: &str) -> Self {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
        Self::serve(addr, role, move || Ok(l))
    }

    /// The same inside the network namespace of process `pid` (a container's), on an address
    /// the test adds to that namespace's loopback first (`ip addr add ADDR dev lo`).
    #[track_caller]
    pub fn start_in_netns_of(pid: u32, addr: SocketAddr, role: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let target = Self::serve(addr, role, move || {
            let listener = (|| {
                let ns = fs::File::open(format!("/proc/{pid}/ns/net"))
                    .map_err(|e| format!("opening /proc/{pid}/ns/net: {e}"))?;
                // SAFETY: setns(2) on a namespace descriptor we hold; it changes this (dedicated)
                // thread only, and the `ip` child inherits it.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("setns: {}", std::io::Error::last_os_error()));
                }
                let out = Command::new("ip")
                    .args(["addr", "add", &addr.ip().to_string(), "dev", "lo"])
                    .output()
                    .map_err(|e| format!("running ip: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "ip addr add {}: {}",
                        addr.ip(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                TcpListener::bind(addr).map_err(|e| format!("binding {addr}: {e}"))
            })();
            let _ = tx.send(listener.as_ref().map(|_| ()).map_err(Clone::clone));
            listener.map_err(std::io::Error::other)
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => target,
            Ok(Err(e)) => panic!("TCP target in the netns of pid {pid}: {e}"),
            Err(e) => panic!("TCP target in the netns of pid {pid}: no answer ({e})"),
        }
    }

    /// Answers `ok <role>` on the listener `bind` makes, in a thread of its own.
    fn serve(
        addr: SocketAddr,
        role: &str,
        bind: impl FnOnce() -> std::io::Result<TcpListener> + Send + 'static,
    ) -> Self {
        let answer = format!("ok {role}\n");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let accepted = accepted.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let Ok(l) = bind() else { return };
                l.set_nonblocking(true).expect("nonblocking listener");
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut s, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let _ = s.write_all(answer.as_bytes());
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The agent

/// Options of [`E2eAgent::start`] beyond the fixed ones (`--docker on`, `--log-format json`,
/// `--ttl-floor 1`, the pin directory, the DNS server, the default attach cgroup).
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
        }
    }
}

/// The `message` of a JSON log line, and the whole line parsed.
fn parse_line(line: &str) -> Option<(String, Value)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let m = v.get("fields")?.get("message")?.as_str()?.to_owned();
    Some((m, v))
}

/// A running `egress-agent run --docker on ...` whose JSON log (stderr) the test reads.
/// Killed if still running when dropped; its pinned state is not touched (see [`PinDir`]).
pub struct E2eAgent {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    /// How long it took to log `ready`.
    pub ready_after: Duration,
}

impl E2eAgent {
    /// Starts the agent and waits for its `ready` line (at most [`READY_TIMEOUT`]).
    #[track_caller]
    pub fn start(pin_dir: &Path, dns: SocketAddr, opts: &AgentOpts) -> Self {
        let mut cmd = Command::new(bins::agent());
        for (k, _) in env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k == "RUST_LOG" || k.starts_with("EGRESS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("DOCKER_HOST", &opts.docker_host)
            .args(["--log-format", "json", "--log-level", "info", "run"])
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
        let t0 = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning egress-agent run: {e}"));
        let (log, ready_rx) = crate::agent::capture_log(&mut child, |l| {
            parse_line(l).is_some_and(|(m, _)| m == "ready")
        });
        let mut agent = Self {
            child: Some(child),
            log,
            ready_after: Duration::ZERO,
        };
        if !opts.wait_ready {
            return agent;
        }
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                agent.ready_after = t0.elapsed();
                return agent;
            }
            if let Ok(Some(status)) = agent.child.as_mut().expect("child").try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "egress-agent run exited with {status} before it was ready; log:\n{}",
                    agent.log_text()
                );
            }
            assert!(
                t0.elapsed() < READY_TIMEOUT,
                "egress-agent run was not ready within {READY_TIMEOUT:?}; log:\n{}",
                agent.log_text()
            );
        }
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        lock(&self.log).join("\n")
    }

    /// Every parsed log line so far (`{"level", "fields": {"message", ...}, ...}`).
    pub fn lines(&self) -> Vec<Value> {
        lock(&self.log)
            .iter()
            .filter_map(|l| parse_line(l).map(|(_, v)| v))
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

    /// Waits for a log line whose `fields` satisfy `pred`; returns its `fields`.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(v) = self
                .lines()
                .into_iter()
                .map(|v| v["fields"].clone())
                .find(|f| pred(f))
            {
                return v;
            }
            assert!(
                t0.elapsed() < timeout,
                "no agent log line {what} within {timeout:?}; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's process id (while it has not been stopped).
    #[track_caller]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// Sends SIGHUP (reload the policy file) to the agent.
    #[track_caller]
    pub fn sighup(&self) {
        // SAFETY: kill(2) on our own child, not reaped yet.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(
            rc,
            0,
            "SIGHUP to egress-agent: {}",
            std::io::Error::last_os_error()
        );
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM (the orderly stop) and wait; panics unless it exits successfully.
    #[track_caller]
    pub fn stop(mut self) {
        let mut c = self.child.take().expect("agent running");
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = c.try_wait().expect("waiting for egress-agent") {
                assert!(
                    st.success(),
                    "egress-agent exited with {st} on SIGTERM; log:\n{}",
                    self.log_text()
                );
                return;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "egress-agent did not stop within 20 s of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for E2eAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A bpffs pin directory of the test's own, `/sys/fs/bpf/egress-e2e-<tag>-<pid>`; on drop
/// (or [`PinDir::cleanup`]) `egress-agent cleanup --pin-dir` detaches and unpins everything
/// under it.
#[derive(Debug)]
pub struct PinDir {
    pub path: PathBuf,
    cleaned: bool,
}

impl PinDir {
    pub fn new(tag: &str) -> Self {
        sweep_stale_pin_dirs();
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/egress-e2e-{tag}-{}",
            std::process::id()
        ));
        if path.exists() {
            cleanup_pin_dir(&path);
        }
        Self {
            path,
            cleaned: false,
        }
    }

    /// Detaches and unpins everything now (the agent must be stopped).
    pub fn cleanup(&mut self) {
        if !self.cleaned {
            cleanup_pin_dir(&self.path);
            self.cleaned = true;
        }
    }

    /// `egress-agent status --json --pin-dir P`, parsed.
    #[track_caller]
    pub fn status(&self) -> Value {
        let out = Command::new(bins::agent())
            .env_remove("RUST_LOG")
            .args(["status", "--json", "--pin-dir"])
            .arg(&self.path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running egress-agent status: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "egress-agent status failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("egress-agent status --json printed no JSON ({e}): {stdout}")
        })
    }

    /// The `containers` entry of the status with this full id, if any.
    #[track_caller]
    pub fn container(&self, id: &str) -> Option<Value> {
        self.status()["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["id"] == id)
            .cloned()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `egress-agent cleanup --pin-dir P` (the library's cleanup if the binary cannot run).
fn cleanup_pin_dir(path: &Path) {
    let ok = Command::new(bins::agent())
        .env_remove("RUST_LOG")
        .args(["cleanup", "--pin-dir"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && let Err(e) = egress_agent::status::cleanup(path) {
        eprintln!("warning: cleaning up {}: {e}", path.display());
    }
    let _ = fs::remove_dir(path);
}

/// Pin directories of e2e runs that were killed before their cleanup: their programs would
/// keep judging every container of the host (and deny new ones as unclassified).
fn sweep_stale_pin_dirs() {
    let Ok(rd) = fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("egress-e2e-") else {
            continue;
        };
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing the stale pin directory {}", e.path().display());
            cleanup_pin_dir(&e.path());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The lab

/// A container the lab started.
#[derive(Debug, Clone)]
pub struct Started {
    pub name: String,
    pub id: String,
    pub ip: Option<IpAddr>,
}

impl Started {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// A client container's run.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub name: String,
    pub id: String,
    pub output: String,
    /// Wall time of `docker start -a` (or `docker run`).
    pub wall: Duration,
}

/// One test's world: see the module docs. Fields drop in the order the cleanup needs
/// (see the `Drop` impl).
pub struct Lab {
    pub tag: String,
    pub n: u8,
    pub docker: Docker,
    pub network: String,
    pub gateway: IpAddr,
    pub dns: TestDns,
    pub pin: PinDir,
    agent: Option<E2eAgent>,
    pub containers: Containers,
    sinks: Vec<UdpSink>,
}

impl Lab {
    /// Docker (required), a network `egress-e2e-<tag>` on `10.231.<n>.0/24`, the test DNS on
    /// `10.231.<n>.1:53`. No agent yet.
    #[track_caller]
    pub fn new(tag: &str, n: u8) -> Self {
        let docker = Docker::require();
        let network = format!("egress-e2e-{tag}");
        sweep_lab(&docker, tag, &network);
        let gateway = IpAddr::V4(Ipv4Addr::new(10, 231, n, 1));
        let containers = Containers::new(&docker, &format!("egress-e2e-{tag}"));
        let pin = PinDir::new(tag);
        docker.run(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            &format!("10.231.{n}.0/24"),
            "--gateway",
            &gateway.to_string(),
            "--label",
            &format!("{LAB_LABEL}={tag}"),
            &network,
        ]);
        // From here the network is ours; a panic below still removes it.
        let dns = match TestDns::start_on(SocketAddr::new(gateway, 53)) {
            Ok(d) => d,
            Err(e) => {
                let _ = docker.output(&["network", "rm", &network]);
                panic!("starting the test DNS on {gateway}:53: {e}");
            }
        };
        Self {
            tag: tag.to_owned(),
            n,
            docker,
            network,
            gateway,
            dns,
            pin,
            agent: None,
            containers,
            sinks: Vec::new(),
        }
    }

    /// `10.231.<n>.<host>`.
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 231, self.n, host))
    }

    /// The options every container of the lab gets.
    fn base_args(&self, name: &str) -> Vec<String> {
        let mut args = self.base_args_on(name, None);
        args.extend([
            "--network".into(),
            self.network.clone(),
            "--dns".into(),
            self.gateway.to_string(),
        ]);
        args
    }

    /// The options of a container on `network` (`host`, `container:<name>`, ...) instead of
    /// the lab's network, or on none at all (`None`: the caller adds them). No `--dns`: Docker
    /// refuses it beside `container:` networks, and such a container must use IPs only.
    fn base_args_on(&self, name: &str, network: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--name".into(),
            name.into(),
            "--label".into(),
            format!("{LAB_LABEL}={}", self.tag),
            "--stop-timeout".into(),
            "1".into(),
        ];
        if let Some(n) = network {
            args.extend(["--network".into(), n.to_owned()]);
        }
        args
    }

    /// `docker create` (not started) of a sleeper with these labels and extra options.
    #[track_caller]
    pub fn create_only(&self, role: &str, labels: &[(&str, &str)], extra: &[&str]) -> Started {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["create".into()];
        args.extend(self.base_args(&name));
        args.extend(Self::label_args(labels));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([image(), "sleep".into(), "60".into()]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Started { name, id, ip: None }
    }

    /// A detached container running `script` on `network` (`host`, `container:<name>`)
    /// rather than the lab's network; it resolves no names.
    #[track_caller]
    pub fn start_detached_on(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        network: &str,
        script: &str,
    ) -> Started {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(self.base_args_on(&name, Some(network)));
        args.extend(Self::label_args(labels));
        args.extend([image(), "sh".into(), "-c".into(), script.to_owned()]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Started { name, id, ip: None }
    }

    /// A target host at `10.231.<n>.<host>`: answers `ok <role>` on TCP 8080 and 8081
    /// (unpoliced; `role` is one word). Returns once both ports answer from the host.
    #[track_caller]
    pub fn start_target(&self, role: &str, host: u8) -> Started {
        let name = self.containers.name(role);
        let ip = self.ip(host);
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(self.base_args(&name));
        args.extend(["--ip".into(), ip.to_string(), image()]);
        args.extend([
            "sh".into(),
            "-c".into(),
            format!(
                "trap 'exit 0' TERM; nc -ll -p {PORT} -e echo ok {role} & \
                 nc -ll -p {OTHER_PORT} -e echo ok {role} & while :; do sleep 1; done"
            ),
        ]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        for port in [PORT, OTHER_PORT] {
            let addr = SocketAddr::new(ip, port);
            wait_until(
                &format!("target {name} to answer on {addr}"),
                Duration::from_secs(20),
                || answers_ok(addr).then_some(()),
            );
        }
        Started {
            name,
            id,
            ip: Some(ip),
        }
    }

    /// A [`UdpSink`] on UDP 9000 in the target's network namespace (kept until the lab ends).
    #[track_caller]
    pub fn udp_sink(&mut self, target: &Started) -> usize {
        let pid = self.docker.pid(&target.id);
        self.sinks.push(UdpSink::start_in_netns_of(pid, UDP_PORT));
        self.sinks.len() - 1
    }

    pub fn sink(&self, i: usize) -> &UdpSink {
        &self.sinks[i]
    }

    fn label_args(labels: &[(&str, &str)]) -> Vec<String> {
        labels
            .iter()
            .flat_map(|(k, v)| ["--label".to_owned(), format!("{k}={v}")])
            .collect()
    }

    /// `docker create` + `docker start -a` of a client that runs `script`; its output
    /// (stdout and stderr), id and wall time. The container is removed when the lab ends.
    ///
    /// Between create and start it waits until the agent has registered the container
    /// (`egress-agent status` lists it) with every allow entry of `ready` (e.g. the IPs of its
    /// allowed names): these clients test what a policy allows, not how fast it is written
    /// (the first-instruction race is [`Lab::run_rm`]'s business).
    #[track_caller]
    pub fn run_client(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        script: &str,
        ready: &[String],
    ) -> ClientRun {
        self.run_client_from(&image(), role, labels, script, ready)
    }

    /// [`Lab::run_client`] of a container made from `image` (one the test built, say).
    #[track_caller]
    pub fn run_client_from(
        &self,
        image: &str,
        role: &str,
        labels: &[(&str, &str)],
        script: &str,
        ready: &[String],
    ) -> ClientRun {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["create".into()];
        args.extend(self.base_args(&name));
        args.extend(Self::label_args(labels));
        args.extend([image.into(), "sh".into(), "-c".into(), script.to_owned()]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if self.agent.is_some() {
            self.wait_registered(&id, ready);
        }
        let t0 = Instant::now();
        let out = self.docker.output(&["start", "-a", &id]);
        let wall = t0.elapsed();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ClientRun {
            name,
            id,
            output,
            wall,
        }
    }

    /// A client that runs `checks` and exits (see [`Lab::run_client`] for `ready`); its
    /// probes in the checks' order.
    #[track_caller]
    pub fn probe_client(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        checks: &[Check],
        ready: &[String],
    ) -> (ClientRun, Vec<Probe>) {
        self.probe_client_from(&image(), role, labels, checks, ready)
    }

    /// [`Lab::probe_client`] of a container made from `image`.
    #[track_caller]
    pub fn probe_client_from(
        &self,
        image: &str,
        role: &str,
        labels: &[(&str, &str)],
        checks: &[Check],
        ready: &[String],
    ) -> (ClientRun, Vec<Probe>) {
        let run = self.run_client_from(image, role, labels, &probe_script(checks), ready);
        let probes = probes_of(&run.output, checks);
        (run, probes)
    }

    /// `docker run --rm` of a one-shot client (the realistic path: create, start, attach in one
    /// call); its output and wall time.
    #[track_caller]
    pub fn run_rm(&self, role: &str, labels: &[(&str, &str)], script: &str) -> (String, Duration) {
        self.run_rm_from(&image(), role, labels, script)
    }

    /// [`Lab::run_rm`] of a container made from `image`.
    #[track_caller]
    pub fn run_rm_from(
        &self,
        image: &str,
        role: &str,
        labels: &[(&str, &str)],
        script: &str,
    ) -> (String, Duration) {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
        args.extend(self.base_args(&name));
        args.extend(Self::label_args(labels));
        args.extend([image.into(), "sh".into(), "-c".into(), script.to_owned()]);
        let t0 = Instant::now();
        let out = self
            .docker
            .output(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let wall = t0.elapsed();
        (
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            wall,
        )
    }

    /// A long-running container (`sleep` loop, stops at once on SIGTERM) with these labels and
    /// extra `docker run` options; probe it with [`Lab::exec_probes`].
    #[track_caller]
    pub fn start_sleeper(&self, role: &str, labels: &[(&str, &str)], extra: &[&str]) -> Started {
        self.start_detached(
            role,
            labels,
            extra,
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        )
    }

    /// A detached container running `script` in `sh -c`.
    #[track_caller]
    pub fn start_detached(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        extra: &[&str],
        script: &str,
    ) -> Started {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(self.base_args(&name));
        args.extend(Self::label_args(labels));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([image(), "sh".into(), "-c".into(), script.to_owned()]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Started { name, id, ip: None }
    }

    /// Runs the checks in a running container (`docker exec`).
    #[track_caller]
    pub fn exec_probes(&self, container: &str, checks: &[Check]) -> Vec<Probe> {
        exec_probes(&self.docker, container, checks)
    }

    /// Starts the agent (its pin directory is the lab's; the DNS server is the lab's).
    #[track_caller]
    pub fn start_agent(&mut self, opts: &AgentOpts) -> &E2eAgent {
        assert!(self.agent.is_none(), "the lab's agent already runs");
        let agent = E2eAgent::start(&self.pin.path, SocketAddr::new(self.gateway, 53), opts);
        self.agent.insert(agent)
    }

    /// The running agent.
    #[track_caller]
    pub fn agent(&self) -> &E2eAgent {
        self.agent.as_ref().expect("the lab's agent runs")
    }

    /// Stops the agent with SIGTERM (its pinned state stays) and returns its log.
    #[track_caller]
    pub fn stop_agent(&mut self) -> String {
        let agent = self.agent.take().expect("the lab's agent runs");
        let log = agent.log_text();
        agent.stop();
        log
    }

    /// Kills the agent with SIGKILL, as in a crash (its pinned state stays).
    pub fn kill_agent(&mut self) {
        drop(self.agent.take());
    }

    /// Waits until `egress-agent status` shows the container policed with an allow entry
    /// equal to each of `entries` (e.g. `10.231.1.10`, `10.231.1.10:8080`); returns the
    /// container's status entry.
    #[track_caller]
    pub fn wait_policed(&self, id: &str, entries: &[String]) -> Value {
        let c = self.wait_registered(id, entries);
        assert_eq!(c["policed"], true, "container {id} is not policed: {c}");
        c
    }

    /// Waits until `egress-agent status` lists the container (policed or not) with an allow
    /// entry equal to each of `entries`; returns its status entry.
    #[track_caller]
    pub fn wait_registered(&self, id: &str, entries: &[String]) -> Value {
        wait_until(
            &format!("status to list container {id} with {entries:?}"),
            Duration::from_secs(20),
            || {
                let c = self.pin.container(id)?;
                let allow: Vec<String> = c["allow"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect();
                entries.iter().all(|e| allow.contains(e)).then_some(c)
            },
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The agent, then its programs and maps (no fail-closed leftovers on the host), then
        // the containers, the UDP sinks (their netns goes with the containers), the network;
        // the DNS server stops when the fields drop.
        drop(self.agent.take());
        self.pin.cleanup();
        self.containers.remove_all();
        self.sinks.clear();
        if let Err(e) = self.docker.try_run(&["network", "rm", &self.network]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Runs the checks in a running container (`docker exec`): new processes in its cgroup.
#[track_caller]
pub fn exec_probes(docker: &Docker, container: &str, checks: &[Check]) -> Vec<Probe> {
    let out = docker.output(&["exec", container, "sh", "-c", &probe_script(checks)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    probes_of(&text, checks)
}

/// True if a TCP connect from the host to `addr` reads `ok...`.
pub fn answers_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("ok")
}

/// Removes what a killed earlier run of lab `tag` left: its containers and its network.
fn sweep_lab(docker: &Docker, tag: &str, network: &str) {
    if let Ok(ids) = docker.try_run(&["ps", "-aq", "--filter", &format!("label={LAB_LABEL}={tag}")])
        && !ids.is_empty()
    {
        eprintln!("removing leftover containers of lab {tag}");
        let mut args = vec!["rm", "-f"];
        args.extend(ids.lines());
        let _ = docker.output(&args);
    }
    if docker.try_run(&["network", "inspect", network]).is_ok() {
        eprintln!("removing the leftover network {network}");
        let _ = docker.output(&["network", "rm", network]);
    }
}

// ---------------------------------------------------------------------------------------------
// Restarting a dockerd

/// A dockerd process as found in /proc.
#[derive(Debug, Clone)]
pub struct DockerdProcess {
    pub pid: i32,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// Where its stdout went (a regular file), to append the restarted daemon's log to.
    pub log: Option<PathBuf>,
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// True if `pid` is alive (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
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
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "dockerd" || !alive(pid) {
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
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
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
        // SAFETY: kill(2) on the dockerd we found.
        unsafe { libc::kill(pid, libc::SIGTERM) };
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
        while read_pid_file("/var/run/docker/containerd/containerd.pid").is_some_and(alive)
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
        let log = match &self.process.log {
            Some(p) => fs::OpenOptions::new().append(true).open(p).ok(),
            None => None,
        };
        let (out, err) = match log {
            Some(f) => (Stdio::from(f.try_clone().expect("log fd")), Stdio::from(f)),
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new("setsid")
            .args(&self.process.argv)
            .current_dir(&self.process.cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?} again: {e}", self.process.argv));
        let child_pid = child.id() as i32;
        let child = self.restarted.insert(child);
        while !self.docker.ping() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "the restarted dockerd exited ({st}); its log: {:?}",
                    self.process.log
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the restarted dockerd did not answer within 60 s; its log: {:?}",
                self.process.log
            );
            thread::sleep(Duration::from_millis(100));
        }
        // `setsid` execs dockerd in place unless it had to fork: trust the pidfile.
        self.process.pid = read_pid_file("/var/run/docker.pid")
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
        if let Some(label) = &self.sweep_label
            && let Ok(ids) =
                self.docker
                    .try_run(&["ps", "-aq", "--filter", &format!("label={label}")])
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.lines());
            let _ = self.docker.output(&args);
        }
        reap_for(Duration::from_secs(1));
    }
}

fn read_pid_file(path: &str) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reaps exited children for a while: container shims adopted as subreaper exit shortly after
/// their containers are removed, and must not stay zombies under an init that does not reap.
fn reap_for(d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        reap_children();
        thread::sleep(Duration::from_millis(50));
    }
}

/// Reaps any exited children (orphans adopted as subreaper) without blocking.
fn reap_children() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(-1, WNOHANG) only reaps our own exited children.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc <= 0 {
            break;
        }
    }
}

/// A dockerd of the test's own: socket, data and exec roots under a temporary directory, no
/// default bridge, no iptables or forwarding changes (its containers use the host network).
/// Restarted with [`PrivateDockerd::restart`]; stopped and removed on drop.
pub struct PrivateDockerd {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl PrivateDockerd {
    #[track_caller]
    pub fn start(tag: &str) -> Self {
        let dir = PathBuf::from(format!(
            "/tmp/egress-e2e-{tag}-{}-{}",
            std::process::id(),
            nanos_now() % 1_000_000
        ));
        fs::create_dir_all(&dir).expect("creating the private dockerd's directory");
        fs::write(dir.join("daemon.json"), "{}\n").expect("daemon.json");
        // SAFETY: prctl with integer arguments: orphans (its containerd) are reaped by us.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let mut d = Self { dir, child: None };
        d.spawn();
        d
    }

    pub fn docker(&self) -> Docker {
        Docker::new(&format!("unix://{}", self.sock().display()))
    }

    /// Its `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Starts the daemon (again, after [`PrivateDockerd::kill`]) and waits until it answers.
    #[track_caller]
    pub fn spawn(&mut self) {
        let dockerd = [
            "/usr/sbin/dockerd",
            "/usr/bin/dockerd",
            "/usr/local/bin/dockerd",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "dockerd is not installed; the restart test runs one of its own: \
                     apt-get install -y --no-install-recommends docker.io"
            )
        });
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("dockerd.log");
        let d = &self.dir;
        let child = Command::new(dockerd)
            .arg("--host")
            .arg(format!("unix://{}", self.sock().display()))
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting the private dockerd");
        self.child = Some(child);
        let t0 = Instant::now();
        while !ping(&self.sock()) {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the private dockerd exited ({st}): {}", self.log_tail());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the private dockerd did not answer within 60 s: {}",
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait for a clean exit (its containers stop), start it again; returns how long
    /// the daemon was away.
    #[track_caller]
    pub fn restart(&mut self) -> Duration {
        let t0 = Instant::now();
        self.terminate();
        self.spawn();
        t0.elapsed()
    }

    /// SIGKILL, as in a crash. Its managed containerd dies with it (parent-death signal); as
    /// our subreaper child it is reaped here: a zombie left to an init that does not reap (as
    /// on these test machines) would look alive to the next dockerd, which would then wait for
    /// it forever.
    pub fn kill(&mut self) {
        let containerd = self.containerd_pid();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = containerd {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                let mut status = 0;
                // SAFETY: waits for one specific pid, adopted by this process as subreaper.
                let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if rc == pid || rc < 0 {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn containerd_pid(&self) -> Option<i32> {
        fs::read_to_string(self.dir.join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if t0.elapsed() > Duration::from_secs(60) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        reap_children();
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if ping(&self.sock()) {
            let d = self.docker();
            if let Ok(ids) = d.try_run(&["ps", "-aq"])
                && !ids.is_empty()
            {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.lines());
                let _ = d.output(&args);
            }
        }
        self.terminate();
        // A containerd left over from our directory.
        if let Some(pid) = self.containerd_pid()
            && alive(pid)
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*self.dir.to_string_lossy()) {
                // SAFETY: kill(2) on a containerd that runs from our directory.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                thread::sleep(Duration::from_millis(100));
                reap_children();
            }
        }
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .filter(|p| Path::new(p).starts_with(&self.dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            if let Ok(c) = std::ffi::CString::new(p) {
                // SAFETY: NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup: removing {}: {e}", self.dir.display());
        }
        reap_for(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_lines() {
        let out = "noise\nPROBE a 0 100.10 100.12 ok\nPROBE b 1 5.00 5.01 nc: can't connect to \
                   remote host (10.0.0.1): Operation not permitted\n";
        let p = parse_probes(out);
        assert_eq!(p["a"].outcome(), Outcome::Connected);
        assert!(p["a"].elapsed >= Duration::from_millis(19));
        assert_eq!(p["b"].outcome(), Outcome::Denied);
        assert_eq!(p["b"].rc, 1);
    }

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
