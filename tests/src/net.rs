//! Loopback listeners owned by the test process (which stays in its own, unpoliced cgroup).
//!
//! Each test uses its own addresses `127.<slot>.x.y` (all of 127.0.0.0/8 is local on Linux) and
//! ports the kernel picks, so tests never share a listener. Only loopback is ever used.

use std::{
    io::{self, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use crate::wait::holds_within;

/// Backlog of the TCP listeners: large, so that bursts of connects never wait for SYN retries.
pub const BACKLOG: i32 = 4096;

/// `::1`.
pub const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// How long the tests give a datagram or connection that should *not* arrive to show up anyway.
pub const SETTLE: Duration = Duration::from_millis(200);

/// How long the tests wait for something that should arrive.
pub const ARRIVAL: Duration = Duration::from_secs(5);

/// `127.<slot>.<net>.<host>`.
pub fn v4(slot: u8, net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, slot, net, host))
}

/// A thread that accepts connections on the listener `bind` makes (in that thread, so that it
/// may enter a network namespace first), counts them and writes `answer` (if any) to each.
/// Stops on drop.
pub struct Acceptor {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub fn spawn(
        bind: impl FnOnce() -> io::Result<TcpListener> + Send + 'static,
        answer: Option<Vec<u8>>,
    ) -> Self {
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            thread::spawn(move || {
                let Ok(l) = bind() else { return };
                l.set_nonblocking(true).expect("non-blocking listener");
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut conn, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            if let Some(a) = &answer {
                                let _ = conn.write_all(a);
                            }
                        }
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        Self {
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP listener on `ip` with a large backlog and a thread that accepts and counts connections.
pub struct TcpSink {
    pub addr: SocketAddr,
    acceptor: Acceptor,
}

impl TcpSink {
    /// Listens on `ip` and a port the kernel picks.
    #[track_caller]
    pub fn bind(ip: IpAddr) -> Self {
        Self::bind_addr(SocketAddr::new(ip, 0))
    }

    /// Listens on `addr`.
    #[track_caller]
    pub fn bind_addr(addr: SocketAddr) -> Self {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("listening on {addr}: {e}"));
        // SAFETY: a listening socket we own; calling listen again only raises the backlog.
        let rc = unsafe { libc::listen(l.as_raw_fd(), BACKLOG) };
        assert_eq!(rc, 0, "listen({BACKLOG}): {}", io::Error::last_os_error());
        let addr = l.local_addr().expect("listener address");
        Self {
            addr,
            acceptor: Acceptor::spawn(move || Ok(l), None),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.acceptor.accepted()
    }

    /// Waits until at least `n` connections were accepted; false on timeout.
    pub fn wait_accepted(&self, n: usize) -> bool {
        holds_within(ARRIVAL, || self.accepted() >= n)
    }

    /// Asserts that the connection count stays at `n` for [`SETTLE`].
    #[track_caller]
    pub fn assert_accepted_stays(&self, n: usize, what: &str) {
        thread::sleep(SETTLE);
        assert_eq!(
            self.accepted(),
            n,
            "{what}: the listener on {} accepted {} connection(s), expected {n}",
            self.addr,
            self.accepted()
        );
    }
}

/// A UDP socket on `ip` with a thread that records every datagram it receives.
pub struct UdpSink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpSink {
    /// Binds `ip` and a port the kernel picks.
    #[track_caller]
    pub fn bind(ip: IpAddr) -> Self {
        let s = UdpSocket::bind(SocketAddr::new(ip, 0))
            .unwrap_or_else(|e| panic!("binding UDP on {ip}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(10)))
            .expect("read timeout");
        let addr = s.local_addr().expect("socket address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, _)) = s.recv_from(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        received.lock().unwrap().push(text);
                    }
                }
            })
        };
        Self {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Payloads received so far.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// True once `payload` was received (waits up to [`ARRIVAL`]).
    pub fn wait_for(&self, payload: &str) -> bool {
        holds_within(ARRIVAL, || self.received().iter().any(|p| p == payload))
    }

    /// Asserts that `payload` did not arrive within [`SETTLE`].
    #[track_caller]
    pub fn assert_never_got(&self, payload: &str) {
        thread::sleep(SETTLE);
        let got = self.received();
        assert!(
            !got.iter().any(|p| p == payload),
            "the denied datagram {payload:?} arrived at {} anyway (received {got:?})",
            self.addr
        );
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
