//! A real `dnsmasq` for tests: no upstream servers, no /etc/hosts, no configuration file, only
//! the records a test gives (`--host-record=...`, `--cname=...`), bound to one loopback address
//! and a free port, in the foreground as a child of the test. Killed when dropped.
//!
//! Such a dnsmasq answers the A query of a `--host-record` name with only an IPv4 address and
//! REFUSES its AAAA query (it would ask an upstream, and has none), as many small forwarders do.
//! Needs the Debian package `dnsmasq` (`.ci/run` installs it).

use std::{
    fs::File,
    io,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// How long dnsmasq may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running dnsmasq; killed on drop.
pub struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq on `ip` and a free port with `records` (e.g.
    /// `--host-record=api.test,127.1.0.1`) as its only data. Panics, saying what to install,
    /// if dnsmasq is missing, and with its log if it does not start.
    #[track_caller]
    pub fn start(ip: IpAddr, records: &[String]) -> Self {
        let binary = find_binary().unwrap_or_else(|| {
            panic!(
                "dnsmasq is not installed; install it with \
                 `apt-get install -y --no-install-recommends dnsmasq` (.ci/run does)"
            )
        });
        let mut last = String::new();
        // The free port may be taken between finding it and dnsmasq binding it: try again.
        for attempt in 0..5 {
            let port = free_port(ip).unwrap_or_else(|e| panic!("a free port on {ip}: {e}"));
            let addr = SocketAddr::new(ip, port);
            let log = std::env::temp_dir().join(format!(
                "egress-test-fam-dnsmasq-{}-{port}-{attempt}.log",
                std::process::id()
            ));
            match spawn(&binary, addr, records, &log) {
                Ok(child) => {
                    let mut dnsmasq = Self { child, addr, log };
                    match dnsmasq.wait_listening() {
                        Ok(()) => return dnsmasq,
                        Err(e) => last = format!("{e}; its log:\n{}", dnsmasq.log_text()),
                    }
                }
                Err(e) => last = format!("running {}: {e}", binary.display()),
            }
        }
        panic!("dnsmasq did not start on {ip}: {last}");
    }

    /// Where it answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it logged so far (every query and its answer).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("dnsmasq exited ({status})"));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not listening on {} after {START_TIMEOUT:?}",
                    self.addr
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn spawn(binary: &Path, addr: SocketAddr, records: &[String], log: &Path) -> io::Result<Child> {
    let stderr = File::create(log)?;
    Command::new(binary)
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--bind-interfaces",
            &format!("--listen-address={}", addr.ip()),
            &format!("--port={}", addr.port()),
            "--log-facility=-",
            "--log-queries",
        ])
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
}

/// `dnsmasq` on PATH or in the sbin directories (which a non-root PATH may lack).
fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("dnsmasq"))
        .find(|p| p.is_file())
}

/// A port free for both UDP and TCP on `ip`.
fn free_port(ip: IpAddr) -> io::Result<u16> {
    for _ in 0..16 {
        let udp = UdpSocket::bind((ip, 0))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no port free for UDP and TCP"))
}
