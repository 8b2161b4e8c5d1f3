//! Carrying a container's allowed questions on to its resolvers, from sockets in the
//! container's own network namespace (so Docker's embedded `127.0.0.11` and networks the host
//! cannot reach work as they do for the container).
//!
//! UDP: one socket per family and container, its answers told apart by the id the proxy gave
//! each question (random, never two alike in flight) and by the server they come from. TCP: a
//! connection carries one question at a time and is kept for the next (at most
//! [`IDLE_TCP_PER_SERVER`] per server, for [`TCP_KEEP`]): a question over TCP then costs no
//! handshake and no trip into the namespace. Servers are tried in order within the deadline.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream, UdpSocket},
    sync::oneshot,
    task::JoinHandle,
    time::{Instant, timeout_at},
};

use egress_dns::Transport;

use super::{
    netns::{Netns, NetnsThread},
    sockets,
};

/// Most questions of one container in flight upstream at once.
pub const MAX_IN_FLIGHT: usize = 256;
/// Largest DNS message read from a server.
const MAX_MESSAGE: usize = 65_535;
/// Idle TCP connections kept per server, and for how long.
const IDLE_TCP_PER_SERVER: usize = 2;
const TCP_KEEP: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no resolver is known for the container")]
    NoServers,
    #[error("no answer from {servers} within the deadline")]
    Timeout { servers: String },
    #[error("{0} questions in flight already")]
    Busy(usize),
    #[error("{server}: {source}")]
    Io {
        server: SocketAddr,
        source: io::Error,
    },
}

type Waiters = Arc<Mutex<HashMap<u16, (SocketAddr, oneshot::Sender<Vec<u8>>)>>>;

/// The UDP socket of one family and the questions waiting on it.
struct UdpMux {
    socket: Arc<UdpSocket>,
    waiters: Waiters,
    reader: JoinHandle<()>,
}

impl Drop for UdpMux {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl UdpMux {
    fn new(socket: UdpSocket) -> Self {
        let socket = Arc::new(socket);
        let waiters: Waiters = Arc::default();
        let reader = tokio::spawn(read_answers(socket.clone(), waiters.clone()));
        Self {
            socket,
            waiters,
            reader,
        }
    }

    /// Takes a free id for a question to `server`.
    fn reserve(
        &self,
        server: SocketAddr,
    ) -> Result<(u16, oneshot::Receiver<Vec<u8>>), UpstreamError> {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() >= MAX_IN_FLIGHT {
            return Err(UpstreamError::Busy(w.len()));
        }
        let (tx, rx) = oneshot::channel();
        loop {
            let id = egress_dns::upstream::random_id();
            if let std::collections::hash_map::Entry::Vacant(e) = w.entry(id) {
                e.insert((server, tx));
                return Ok((id, rx));
            }
        }
    }

    fn release(&self, id: u16) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

async fn read_answers(socket: Arc<UdpSocket>, waiters: Waiters) {
    loop {
        let Ok((answer, from)) = super::serve::recv_datagram(&socket, MAX_MESSAGE).await else {
            continue;
        };
        let Some(id) = egress_dns::answer::id_of(&answer) else {
            continue;
        };
        let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Only the server the question went to may answer it.
        if w.get(&id).is_some_and(|(server, _)| *server == from)
            && let Some((_, tx)) = w.remove(&id)
        {
            let _ = tx.send(answer);
        }
    }
}

/// The upstream side of one container.
pub struct Upstream {
    ns: Arc<Netns>,
    thread: Arc<NetnsThread>,
    v4: tokio::sync::OnceCell<UdpMux>,
    v6: tokio::sync::OnceCell<UdpMux>,
    /// TCP connections that answered a question and wait for the next, by server, with the
    /// time they went idle.
    idle_tcp: Mutex<Vec<(SocketAddr, TcpStream, Instant)>>,
}

impl Upstream {
    pub fn new(ns: Arc<Netns>, thread: Arc<NetnsThread>) -> Self {
        Self {
            ns,
            thread,
            v4: tokio::sync::OnceCell::new(),
            v6: tokio::sync::OnceCell::new(),
            idle_tcp: Mutex::default(),
        }
    }

    /// Closes the idle TCP connections kept longer than [`TCP_KEEP`].
    pub fn close_idle(&self, now: Instant) {
        self.idle()
            .retain(|(_, _, since)| now.duration_since(*since) < TCP_KEEP);
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, TcpStream, Instant)>> {
        self.idle_tcp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kept connection to `server` that the server has not closed, if there is one.
    fn take_idle(&self, server: SocketAddr) -> Option<TcpStream> {
        let now = Instant::now();
        let mut idle = self.idle();
        while let Some(i) = idle.iter().rposition(|(s, _, _)| *s == server) {
            let (_, stream, since) = idle.swap_remove(i);
            // Readable now means closed by the server (or an answer nobody asked for).
            let mut probe = [0u8; 1];
            let open = matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            if open && now.duration_since(since) < TCP_KEEP {
                return Some(stream);
            }
        }
        None
    }

    fn keep_idle(&self, server: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle();
        if idle.iter().filter(|(s, _, _)| *s == server).count() < IDLE_TCP_PER_SERVER {
            idle.push((server, stream, Instant::now()));
        }
    }

    async fn mux(&self, server: &SocketAddr) -> Result<&UdpMux, UpstreamError> {
        let cell = if server.is_ipv4() { &self.v4 } else { &self.v6 };
        let server = *server;
        cell.get_or_try_init(|| async {
            let std = self
                .thread
                .run(self.ns.clone(), move || sockets::upstream_udp(&server))
                .await
                .map_err(|source| UpstreamError::Io { server, source })?;
            let socket =
                UdpSocket::from_std(std).map_err(|source| UpstreamError::Io { server, source })?;
            Ok(UdpMux::new(socket))
        })
        .await
    }

    /// Asks each of `servers` in turn over `transport` until one answers, by `deadline`, each
    /// with an even share of the time left; returns the answer and the id of the question
    /// `build` made for it.
    pub async fn exchange(
        &self,
        transport: Transport,
        servers: &[SocketAddr],
        build: impl Fn(u16) -> io::Result<Vec<u8>>,
        deadline: Instant,
    ) -> Result<(Vec<u8>, u16), UpstreamError> {
        if servers.is_empty() {
            return Err(UpstreamError::NoServers);
        }
        let mut last = None;
        for (i, server) in servers.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let until = now + (deadline - now) / (servers.len() - i) as u32;
            let asked = match transport {
                Transport::Udp => self.udp_once(*server, &build, until).await,
                Transport::Tcp => {
                    let id = egress_dns::upstream::random_id();
                    match build(id) {
                        Ok(q) => match timeout_at(until, self.tcp_once(*server, q)).await {
                            Ok(answer) => answer.map(|a| Some((a, id))),
                            Err(_) => Ok(None),
                        },
                        Err(e) => Err(e),
                    }
                }
            };
            match asked {
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) => {}
                Err(source) => {
                    last = Some(UpstreamError::Io {
                        server: *server,
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| timeout(servers)))
    }

    /// One question to `server` over UDP; None if no answer came by `until`.
    async fn udp_once(
        &self,
        server: SocketAddr,
        build: &impl Fn(u16) -> io::Result<Vec<u8>>,
        until: Instant,
    ) -> io::Result<Option<(Vec<u8>, u16)>> {
        let mux = self.mux(&server).await.map_err(io::Error::other)?;
        let (id, rx) = mux.reserve(server).map_err(io::Error::other)?;
        let sent = match build(id) {
            Ok(q) => mux.socket.send_to(&q, server).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            mux.release(id);
            return Err(e);
        }
        match timeout_at(until, rx).await {
            Ok(Ok(answer)) => Ok(Some((answer, id))),
            _ => {
                mux.release(id);
                Ok(None)
            }
        }
    }

    /// One question to `server` over TCP: on a kept connection (a fresh one if the server
    /// closed it meanwhile), else on a new one. The connection is kept once it answered.
    async fn tcp_once(&self, server: SocketAddr, query: Vec<u8>) -> io::Result<Vec<u8>> {
        let framed = egress_dns::tcp::frame(&query).map_err(io::Error::other)?;
        if let Some(mut stream) = self.take_idle(server)
            && let Ok(answer) = ask_tcp(&mut stream, &framed).await
        {
            self.keep_idle(server, stream);
            return Ok(answer);
        }
        let std = self
            .thread
            .run(self.ns.clone(), move || sockets::upstream_tcp(&server))
            .await?;
        let mut stream = TcpSocket::from_std_stream(std).connect(server).await?;
        let answer = ask_tcp(&mut stream, &framed).await?;
        self.keep_idle(server, stream);
        Ok(answer)
    }
}

/// Writes the framed question and reads one framed answer.
async fn ask_tcp(stream: &mut TcpStream, framed: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

fn timeout(servers: &[SocketAddr]) -> UpstreamError {
    UpstreamError::Timeout {
        servers: servers
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// How long a TCP client connection may stay idle between questions.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
