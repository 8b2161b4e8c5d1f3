//! The listener loops of one proxied container: UDP questions each answered in a task of its
//! own (at most [`super::upstream::MAX_IN_FLIGHT`] at once, more are dropped and counted), TCP
//! connections (at most [`super::MAX_TCP_CONNS`]) answered one question at a time.

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

/// Starts the loops of `proxied` on these sockets into `tasks`.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    proxied: &Arc<Proxied>,
    counters: &Arc<Counters>,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
) {
    for socket in udp {
        tasks.spawn(serve_udp(
            Arc::new(socket),
            proxied.clone(),
            counters.clone(),
        ));
    }
    for listener in tcp {
        tasks.spawn(serve_tcp(listener, proxied.clone()));
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

async fn serve_udp(socket: Arc<UdpSocket>, proxied: Arc<Proxied>, counters: Arc<Counters>) {
    loop {
        let (question, from) = match recv_datagram(&socket, MAX_UDP).await {
            Ok(r) => r,
            Err(e) => {
                debug!(container = %proxied.name, "DNS proxy UDP receive: {e}");
                continue;
            }
        };
        let Ok(permit) = proxied.in_flight.clone().try_acquire_owned() else {
            bump(&counters.dropped_busy);
            continue;
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
}

async fn serve_tcp(listener: TcpListener, proxied: Arc<Proxied>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        // Over the limit: the connection is closed at once (the client retries or fails).
        let Ok(permit) = proxied.tcp_conns.clone().try_acquire_owned() else {
            continue;
        };
        let proxied = proxied.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, &proxied).await;
        });
    }
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
