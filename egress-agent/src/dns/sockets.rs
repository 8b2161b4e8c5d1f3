//! The sockets of the proxy, made inside the namespace they serve (see [`super::netns`]):
//! the listeners a container's redirected DNS reaches, and the upstream sockets that carry
//! its allowed questions on. Plain blocking-free std sockets; the caller hands them to tokio.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use egress_common::dns::PROXY_V4;
use socket2::{Domain, Protocol, Socket, Type};

/// How many ports to try for a listener whose UDP port turned out taken on TCP.
const PORT_TRIES: usize = 16;
/// Backlog of the TCP listeners.
const BACKLOG: i32 = 128;

/// The listeners of one proxied owner in one namespace: UDP and TCP on the same port of the
/// proxy address, and of `[::1]` where that namespace has it.
pub struct Listeners {
    pub port: u16,
    pub udp4: std::net::UdpSocket,
    pub tcp4: std::net::TcpListener,
    /// On `[::1]`: None if the namespace has no IPv6 loopback (IPv6 sockets then reach the
    /// proxy through its v4-mapped address).
    pub v6: Option<(std::net::UdpSocket, std::net::TcpListener)>,
}

/// The proxy's IPv4 address.
pub fn proxy_v4() -> Ipv4Addr {
    Ipv4Addr::from(PROXY_V4)
}

/// Binds the listeners in the calling thread's namespace, on `port` if given and free
/// (a restarted agent reopens the port the pinned redirect names), else on a port the kernel
/// picks.
///
/// A container's namespace is found while runc makes it, often before its loopback is up; a
/// socket bound to 127.255.53.1 then would answer from 127.0.0.1 (the kernel takes the bound
/// address as the source only if it was local at bind time), and resolvers drop answers from
/// an address they did not ask. So the loopback is brought up first (Docker brings it up in
/// every container namespace anyway, `--network none` included).
pub fn bind_listeners(port: Option<u16>) -> io::Result<Listeners> {
    loopback_up()?;
    if let Some(p) = port
        && let Ok(l) = bind_on(p)
    {
        return Ok(l);
    }
    let mut last = io::Error::other("no free port");
    for _ in 0..PORT_TRIES {
        let udp4 = udp(SocketAddr::V4(SocketAddrV4::new(proxy_v4(), 0)))?;
        let port = udp4.local_addr()?.port();
        match finish(port, udp4) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sets the namespace's `lo` up if it is not.
fn loopback_up() -> io::Result<()> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: a zeroed ifreq is a valid argument; the name fits with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq this function owns.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = req.ifr_ifru.ifru_flags;
        if flags & libc::IFF_UP as libc::c_short == 0 {
            req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

fn bind_on(port: u16) -> io::Result<Listeners> {
    let udp4 = udp(SocketAddr::V4(SocketAddrV4::new(proxy_v4(), port)))?;
    finish(port, udp4)
}

fn finish(port: u16, udp4: std::net::UdpSocket) -> io::Result<Listeners> {
    let tcp4 = tcp_listener(SocketAddr::V4(SocketAddrV4::new(proxy_v4(), port)))?;
    let v6 = udp(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::LOCALHOST,
        port,
        0,
        0,
    )))
    .and_then(|u| {
        let t = tcp_listener(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::LOCALHOST,
            port,
            0,
            0,
        )))?;
        Ok((u, t))
    })
    .ok();
    Ok(Listeners {
        port,
        udp4,
        tcp4,
        v6,
    })
}

fn new_socket(addr: &SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(*addr), ty, Some(proto))?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    Ok(s)
}

fn freebind(s: &Socket, addr: &SocketAddr) -> io::Result<()> {
    match addr {
        SocketAddr::V4(_) => s.set_freebind_v4(true),
        SocketAddr::V6(_) => {
            s.set_only_v6(true)?;
            s.set_freebind_v6(true)
        }
    }
}

fn udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = new_socket(&addr, Type::DGRAM, Protocol::UDP)?;
    freebind(&s, &addr)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = new_socket(&addr, Type::STREAM, Protocol::TCP)?;
    freebind(&s, &addr)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// An unbound, unconnected upstream socket of the family of `server` (UDP: bound to an
/// ephemeral port; TCP: the caller connects it).
pub fn upstream_udp(server: &SocketAddr) -> io::Result<std::net::UdpSocket> {
    let any = match server {
        SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
    };
    let s = new_socket(&any, Type::DGRAM, Protocol::UDP)?;
    s.bind(&any.into())?;
    Ok(s.into())
}

/// A TCP socket of the family of `server`, not connected yet.
pub fn upstream_tcp(server: &SocketAddr) -> io::Result<std::net::TcpStream> {
    let s = new_socket(server, Type::STREAM, Protocol::TCP)?;
    Ok(s.into())
}
