//! The listener loop of one proxied container: one task waits on all its listeners (a
//! thousand containers are a thousand idle tasks, not four thousand). UDP questions are each
//! answered in a task of their own (at most [`super::upstream::MAX_IN_FLIGHT`] at once, more
//! are dropped and counted), TCP connections (at most [`super::MAX_TCP_CONNS`]) one question
//! at a time.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use egress_dns::Transport;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinSet,
};
use tracing::debug;

use super::{
    counters::{Counters, bump},
    proxied::Proxied,
    upstream::TCP_IDLE,
};

/// Largest UDP message read from a container.
const MAX_UDP: usize = 4096;
/// How long one TCP question may take to arrive once its length has.
const TCP_READ: Duration = Duration::from_secs(5);

/// A container's listeners: IPv4 always, IPv6 when its namespace has `::1`.
pub struct Listeners {
    pub udp4: UdpSocket,
    pub tcp4: TcpListener,
    pub v6: Option<(UdpSocket, TcpListener)>,
}

/// Starts the loop of `proxied` on its listeners; dropping the handle's task stops it.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    proxied: &Arc<Proxied>,
    counters: &Arc<Counters>,
    listeners: Listeners,
) {
    tasks.spawn(serve(listeners, proxied.clone(), counters.clone()));
}

async fn serve(l: Listeners, proxied: Arc<Proxied>, counters: Arc<Counters>) {
    let udp4 = Arc::new(l.udp4);
    let (udp6, tcp6) = match l.v6 {
        Some((u, t)) => (Some(Arc::new(u)), Some(t)),
        None => (None, None),
    };
    loop {
        // Every branch is cancel-safe: readiness and accept take nothing from a socket that
        // loses the race.
        tokio::select! {
            got = recv_datagram(&udp4, MAX_UDP) => on_datagram(got, &udp4, &proxied, &counters),
            (got, socket) = recv_on(udp6.as_ref()) => on_datagram(got, socket, &proxied, &counters),
            got = l.tcp4.accept() => on_connection(got, &proxied),
            got = accept_on(tcp6.as_ref()) => on_connection(got, &proxied),
        }
    }
}

/// The next datagram on `socket`, at most `max` bytes, in a buffer of its own: a socket that
/// waits holds no buffer (a thousand idle containers' listeners would otherwise hold megabytes).
pub(super) async fn recv_datagram(
    socket: &UdpSocket,
    max: usize,
) -> std::io::Result<(Vec<u8>, SocketAddr)> {
    loop {
        socket.readable().await?;
        let mut buf = vec![0u8; max];
        match socket.try_recv_from(&mut buf) {
            Ok((n, from)) => {
                buf.truncate(n);
                buf.shrink_to_fit();
                return Ok((buf, from));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The next datagram on `socket`; never, without one.
async fn recv_on(
    socket: Option<&Arc<UdpSocket>>,
) -> (std::io::Result<(Vec<u8>, SocketAddr)>, &Arc<UdpSocket>) {
    match socket {
        Some(s) => (recv_datagram(s, MAX_UDP).await, s),
        None => std::future::pending().await,
    }
}

/// The next connection on `listener`; never, without one.
async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn on_datagram(
    got: std::io::Result<(Vec<u8>, SocketAddr)>,
    socket: &Arc<UdpSocket>,
    proxied: &Arc<Proxied>,
    counters: &Counters,
) {
    let (question, from) = match got {
        Ok(r) => r,
        Err(e) => {
            debug!(container = %proxied.name, "DNS proxy UDP receive: {e}");
            return;
        }
    };
    let Ok(permit) = proxied.in_flight.clone().try_acquire_owned() else {
        bump(&counters.dropped_busy);
        return;
    };
    let socket = socket.clone();
    let proxied = proxied.clone();
    tokio::spawn(async move {
        let _permit = permit;
        if let Some(reply) = proxied.answer(&question, from, Transport::Udp).await {
            let _ = socket.send_to(&reply, from).await;
        }
    });
}

fn on_connection(got: std::io::Result<(TcpStream, SocketAddr)>, proxied: &Arc<Proxied>) {
    let Ok((stream, peer)) = got else {
        return;
    };
    // Over the limit: the connection is closed at once (the client retries or fails).
    let Ok(permit) = proxied.tcp_conns.clone().try_acquire_owned() else {
        return;
    };
    let proxied = proxied.clone();
    tokio::spawn(async move {
        let _permit = permit;
        serve_connection(stream, peer, &proxied).await;
    });
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, proxied: &Proxied) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut question = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_READ, stream.read_exact(&mut question)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = proxied.answer(&question, peer, Transport::Tcp).await else {
            return;
        };
        let Ok(framed) = egress_dns::tcp::frame(&reply) else {
            return;
        };
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
