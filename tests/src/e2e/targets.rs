//! What the e2e clients reach: TCP targets of the test's own that answer `ok <role>`
//! ([`TcpTarget`], on loopback or in a container's network namespace), and UDP receivers in a
//! target container's network namespace ([`UdpSink`]).

use std::{
    io::Read as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use crate::{lock, net::Acceptor, netns::enter_netns_of};

/// TCP ports the targets answer `ok` on.
pub const PORT: u16 = 8080;
pub const OTHER_PORT: u16 = 8081;
/// DNS over TLS's port; the targets answer `ok` there too.
pub const DOT_PORT: u16 = 853;
/// TCP port the targets echo on (long-lived connections).
pub const ECHO_PORT: u16 = 8082;
/// UDP port of [`UdpSink`]s.
pub const UDP_PORT: u16 = 9000;

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
    enter_netns_of(pid)?;
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

/// `127.231.<n>.<host>`: the loopback addresses of e2e test `n` on the host network.
pub fn loopback(n: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 231, n, host))
}

/// A TCP listener of the test's own that answers `ok <role>` to every connection and counts
/// them.
pub struct TcpTarget {
    pub addr: SocketAddr,
    acceptor: Acceptor,
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
                // This (dedicated) thread only; the `ip` child inherits it.
                enter_netns_of(pid)?;
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
        let answer = format!("ok {role}\n").into_bytes();
        Self {
            addr,
            acceptor: Acceptor::spawn(bind, Some(answer)),
        }
    }

    pub fn accepted(&self) -> usize {
        self.acceptor.accepted()
    }
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
