//! What the benchmarks set up and always take down again, also on error and Ctrl-C: cgroups,
//! the enforcer's pin directory, network namespaces, child processes (servers, proxies); the
//! placement of a measured process into a cgroup and namespace; loopback sinks; tool checks.

use std::{
    ffi::{CString, OsStr},
    fs,
    io::{self, Read},
    net::{SocketAddr, TcpListener, UdpSocket},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{ffi::OsStrExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{say, sys};

/// Backlog of every listener the benchmarks make: bursts never wait for SYN retries.
pub const BACKLOG: i32 = 4096;

/// Fails with the package to install if `tool` is not on PATH (or in /usr/sbin, /sbin).
pub fn require_tool(tool: &str, package: &str, what: &str) -> Result<PathBuf> {
    find_tool(tool).with_context(|| {
        format!(
            "`{tool}` is missing; {what} needs it: apt-get install -y --no-install-recommends {package}"
        )
    })
}

pub fn find_tool(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A cgroup v2 directory and its id.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub path: PathBuf,
    pub id: u64,
}

/// Cgroup directories the bench made; removed (deepest first, processes moved out) on drop.
#[derive(Debug, Default)]
pub struct Cgroups {
    made: Vec<PathBuf>,
}

impl Cgroups {
    /// Makes `path` (its parent must exist), removing a leftover of the same name first.
    pub fn make(&mut self, path: &Path) -> Result<Cgroup> {
        if path.exists() {
            remove_tree(path);
        }
        fs::create_dir(path).with_context(|| format!("creating cgroup {}", path.display()))?;
        self.made.push(path.to_owned());
        let id = egress_agent::sys::cgroup::id_of(path)?;
        Ok(Cgroup {
            path: path.to_owned(),
            id,
        })
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for p in self.made.drain(..).rev() {
            remove_tree(&p);
        }
    }
}

fn read_procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes a cgroup directory and everything below it, moving leftover processes to the parent.
pub fn remove_tree(dir: &Path) {
    let children: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    for c in children {
        remove_tree(&c);
    }
    let Some(parent) = dir.parent() else { return };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for pid in read_procs(dir) {
            let _ = fs::write(parent.join("cgroup.procs"), pid.to_string());
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                say(&format!(
                    "warning: could not remove cgroup {}: {e}",
                    dir.display()
                ));
                return;
            }
        }
    }
}

/// The pid in a name the bench gives its objects (`egress-bench-<pid>[-...]`), if that
/// process is gone (a run that was killed before it could clean up).
fn dead_bench_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("egress-bench-")?;
    let pid: u32 = rest.split('-').next()?.parse().ok()?;
    (pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

fn dir_names(dir: &Path) -> Vec<(String, PathBuf)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}

/// Removes what an earlier, killed run left behind: pin directories, cgroups (in every
/// hierarchy) and network namespaces named `egress-bench-<pid>...` whose process is gone.
pub fn sweep_leftovers() {
    for (name, path) in dir_names(Path::new("/sys/fs/bpf")) {
        if dead_bench_pid(&name).is_some() {
            say(&format!(
                "removing {} (left by a killed run)",
                path.display()
            ));
            let _ = egress_agent::status::cleanup(&path);
            let _ = fs::remove_dir(&path);
        }
    }
    let mut hierarchies = vec![PathBuf::from("/sys/fs/cgroup")];
    hierarchies.extend(
        dir_names(Path::new("/sys/fs/cgroup"))
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| p.join("cgroup.procs").exists()),
    );
    for h in hierarchies {
        for (name, path) in dir_names(&h) {
            if dead_bench_pid(&name).is_some() && path.is_dir() {
                say(&format!(
                    "removing cgroup {} (left by a killed run)",
                    path.display()
                ));
                remove_tree(&path);
            }
        }
    }
    for (name, _) in dir_names(Path::new("/run/netns")) {
        if dead_bench_pid(&name).is_some() {
            say(&format!(
                "removing network namespace {name} (left by a killed run)"
            ));
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stdin(Stdio::null())
                .status();
        }
    }
}

/// Where a measured process runs: a cgroup and/or a network namespace.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub cgroup: Option<PathBuf>,
    pub netns: Option<PathBuf>,
}

impl Placement {
    pub fn cgroup(cgroup: &Path) -> Self {
        Self {
            cgroup: Some(cgroup.to_owned()),
            netns: None,
        }
    }

    pub fn netns(mut self, netns: &Path) -> Self {
        self.netns = Some(netns.to_owned());
        self
    }

    /// Makes `cmd` enter the namespace, then the cgroup, between fork and exec, so that the
    /// program runs there from its first instruction. (Unlike `ip netns exec`, this keeps the
    /// host's /sys, so cgroup paths resolve.)
    pub fn apply(&self, cmd: &mut Command) -> Result<()> {
        let procs = match &self.cgroup {
            Some(cg) => Some(CString::new(
                cg.join("cgroup.procs").as_os_str().as_bytes(),
            )?),
            None => None,
        };
        let netns: Option<OwnedFd> = match &self.netns {
            Some(p) => Some(
                fs::File::open(p)
                    .with_context(|| format!("opening network namespace {}", p.display()))?
                    .into(),
            ),
            None => None,
        };
        // SAFETY: the hook makes only async-signal-safe calls (setns, open, getpid, write,
        // close) and does not allocate: the path and descriptor were prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = &netns
                    && libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                let Some(procs) = &procs else {
                    return Ok(());
                };
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut buf = [0u8; 20];
                let digits = format_pid(libc::getpid() as u32, &mut buf);
                let rc = libc::write(fd, digits.as_ptr().cast(), digits.len());
                let err = io::Error::last_os_error();
                libc::close(fd);
                if rc < 0 { Err(err) } else { Ok(()) }
            });
        }
        Ok(())
    }
}

/// Writes `pid` in decimal into `buf` without allocating; returns the digits.
fn format_pid(mut pid: u32, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    &buf[i..]
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// What a finished child printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with captured output, killing it after `timeout` or on Ctrl-C.
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
        if sys::interrupted() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            sys::check_interrupted()?;
            bail!("`{line}` did not finish within {timeout:?}; killed it");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run_captured`], failing unless the exit status is 0.
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
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    })
}

/// A long-running child (a server, a proxy, the agent): SIGTERM, then SIGKILL, on drop.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
}

impl Daemon {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let line = describe(cmd);
        let f = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        // SAFETY: prctl is async-signal-safe. The daemon gets SIGTERM if the bench dies
        // without stopping it (killed), so nothing outlives the run.
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
        sys::signal(c.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        say(&format!("{} ignored SIGTERM; killing it", self.name));
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until a TCP connect to `addr` succeeds (from this process), or fails after `timeout`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        sys::check_interrupted()?;
        if Instant::now() >= deadline {
            bail!("{what} does not accept connections on {addr} after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace made with `ip netns add`, with `lo` up; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Self> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run_ok(
            Command::new("ip").args(["netns", "add", name]),
            Duration::from_secs(20),
        )?;
        let ns = Self {
            name: name.to_owned(),
        };
        run_ok(
            Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]),
            Duration::from_secs(20),
        )?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs inside the namespace (entered between fork and exec; the mount
    /// namespace stays the host's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<Command> {
        let mut c = Command::new(program);
        Placement::default().netns(&self.path()).apply(&mut c)?;
        Ok(c)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let r = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output();
        match r {
            Ok(o) if o.status.success() => {}
            Ok(o) => say(&format!(
                "warning: `ip netns del {}`: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => say(&format!("warning: `ip netns del {}`: {e}", self.name)),
        }
    }
}

/// Enters a network namespace on the calling thread (for a sink thread).
fn enter_netns(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path)?;
    // SAFETY: setns on a descriptor we own; it changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP listener (backlog 4096) in this process, optionally in a network namespace, with a
/// thread that accepts and closes connections as fast as it can.
pub struct TcpSink {
    pub addr: SocketAddr,
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TcpSink {
    pub fn bind(addr: SocketAddr, netns: Option<&Path>) -> Result<Self> {
        type Bound = io::Result<Arc<TcpListener>>;
        let (tx, rx) = std::sync::mpsc::channel::<Bound>();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let netns = netns.map(Path::to_owned);
        let thread = {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            thread::spawn(move || {
                let setup = (|| {
                    if let Some(ns) = &netns {
                        enter_netns(ns)?;
                    }
                    let l = TcpListener::bind(addr)?;
                    // SAFETY: listen again on our own socket only raises the backlog.
                    if unsafe { libc::listen(l.as_raw_fd(), BACKLOG) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(Arc::new(l))
                })();
                let l = match setup {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(l.clone()));
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            drop(c);
                        }
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        let listener = rx
            .recv()
            .context("the listener thread died")?
            .with_context(|| format!("listening on {addr}"))?;
        Ok(Self {
            addr: listener.local_addr()?,
            listener,
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocked accept (it returns EINVAL).
        // SAFETY: shutdown on a socket we hold open.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket in this process with a thread that reads and drops every datagram.
pub struct UdpSink {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpSink {
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let s = UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = s.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, received) = (stop.clone(), received.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if s.recv(&mut buf).is_ok() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(Self {
            addr,
            stop,
            received,
            thread: Some(thread),
        })
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The kernel's run-time statistics of BPF programs are on while this lives. It uses
/// `BPF_ENABLE_STATS` (the switch behind `sysctl kernel.bpf_stats_enabled`): the kernel turns
/// the statistics off again when the descriptor closes, even if the bench is killed, so the
/// sysctl's own setting is never changed.
pub struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (the run-time statistics of BPF programs)")?;
        Ok(Self { _fd: fd })
    }
}

/// Run time and run count of a loaded program (kernel statistics).
pub fn prog_stats(id: u32) -> Result<(Duration, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info.context("listing loaded BPF programs")?;
        if info.id() == id {
            return Ok((info.run_time(), info.run_count()));
        }
    }
    bail!("BPF program {id} is not loaded")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_names_of_dead_runs_are_swept() {
        assert_eq!(
            super::dead_bench_pid("egress-bench-4194999-free"),
            Some(4_194_999)
        );
        assert_eq!(
            super::dead_bench_pid("egress-bench-4194999"),
            Some(4_194_999)
        );
        assert_eq!(super::dead_bench_pid("egress-bench-1"), None); // alive
        let me = format!("egress-bench-{}-docker", std::process::id());
        assert_eq!(super::dead_bench_pid(&me), None);
        assert_eq!(super::dead_bench_pid("egress-test-x-4194999"), None);
    }

    #[test]
    fn formats_pids() {
        let mut b = [0u8; 20];
        assert_eq!(super::format_pid(0, &mut b), b"0");
        assert_eq!(super::format_pid(4_194_304, &mut b), b"4194304");
    }
}
