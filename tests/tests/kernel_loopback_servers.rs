//! Two everyday cases, defined and enforced by the programs themselves:
//!
//! 1. A policy with its own loopback allowed (`FLAG_LOOPBACK`, which the agent sets for a
//!    container whose network namespace is its own) reaches `127.0.0.0/8` and `::1` (also as
//!    `::ffff:127.x`) on every port but 53, and never Docker's embedded resolver `127.0.0.11`;
//!    without the flag loopback is judged like any other destination.
//! 2. A policed server: a UDP server's answer is a `sendto` judged like any other, so it
//!    reaches only clients the policy allows; a TCP server answers on an accepted connection,
//!    which no hook judges (only connects and sends to an address are).
//!
//! Run as root, serially: `cargo xtask test`.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use egress_policy::policy::{Mode, Policy, parse_ip_entries};
use egress_tests::{
    lab::Lab,
    net::TcpSink,
    probe::{EPERM, Mode as ProbeMode, Probe, Step},
    slots,
};

fn policy(entries: &str) -> Policy {
    Policy::new(Mode::Enforce, parse_ip_entries(entries).expect("entries"))
}

#[test]
fn own_loopback_flag_allows_loopback_but_not_port_53_nor_the_embedded_resolver() {
    let lab = Lab::new("own-loopback", slots::LOOPBACK_OWN_NETNS);
    let with = lab.cgroup("with-loopback");
    let without = lab.cgroup("without-loopback");
    // A rule elsewhere, so that the policies are not empty.
    lab.enforcer()
        .apply(&with, policy("10.255.255.1:443").with_loopback(true));
    lab.enforcer().apply(&without, policy("10.255.255.1:443"));

    let v4 = TcpSink::bind(lab.ip(1));
    let dns = TcpSink::bind_addr(SocketAddr::new(lab.ip(1), 53));
    let v6 = TcpSink::bind(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let embedded = SocketAddr::new("127.0.0.11".parse().unwrap(), v4.addr.port());

    lab.tcp(&with, v4.addr).assert_ok("own loopback, IPv4");
    lab.tcp(&with, v6.addr).assert_ok("own loopback, ::1");
    lab.probe(&with, Probe::tcp6(v4.addr))
        .assert_ok("own loopback as ::ffff:127.x");
    lab.tcp(&with, dns.addr)
        .assert_denied("port 53 on loopback (a resolver there forwards outward)");
    lab.probe(&with, Probe::udp(dns.addr, "q"))
        .assert_denied("UDP port 53 on loopback");
    lab.tcp(&with, embedded)
        .assert_denied("Docker's embedded resolver, any port");
    lab.tcp(&with, SocketAddr::new("10.255.255.2".parse().unwrap(), 443))
        .assert_denied("a destination off loopback");
    assert_eq!(dns.accepted(), 0, "the loopback resolver got a connection");

    lab.tcp(&without, v4.addr)
        .assert_denied("loopback without the flag");
    lab.tcp(&without, v6.addr)
        .assert_denied("::1 without the flag");
    assert!(
        v4.wait_accepted(2),
        "IPv4 and ::ffff: connects from the flagged cgroup"
    );
    v4.assert_accepted_stays(2, "nothing from the cgroup without the flag");
}

/// Sends `ping` from `from` to `server` and waits up to 1 s for the answer.
fn ask(from: IpAddr, server: SocketAddr) -> Option<String> {
    let c = UdpSocket::bind(SocketAddr::new(from, 0)).expect("client socket");
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    c.send_to(b"ping", server).expect("sending to the server");
    let mut buf = [0u8; 64];
    c.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn a_policed_udp_server_answers_only_clients_it_may_reach() {
    let lab = Lab::new("udp-server", slots::UDP_SERVER_REPLY);
    let cg = lab.cgroup("server");
    let allowed_client = lab.ip(2);
    let other_client = lab.ip(3);
    lab.enforce(&cg, &allowed_client.to_string());
    let server = SocketAddr::new(lab.ip(1), 7000);
    let serve = Probe::new(ProbeMode::UdpServe, server).payload("pong");

    let running = serve.start_in(&cg);
    assert_eq!(ask(allowed_client, server).as_deref(), Some("pong"));
    running
        .wait(&serve)
        .assert_ok("the answer to an allowed client");

    let running = serve.start_in(&cg);
    assert_eq!(
        ask(other_client, server),
        None,
        "a client the policy does not allow got an answer"
    );
    let out = running.wait(&serve);
    assert_eq!(out.errno, Some(EPERM), "{out:?}");
    assert_eq!(out.failed_at, Some(Step::Sendto), "{out:?}");
}

#[test]
fn a_policed_tcp_server_answers_on_accepted_connections() {
    let lab = Lab::new("tcp-server", slots::TCP_SERVER_REPLY);
    let cg = lab.cgroup("server");
    lab.enforce(&cg, &lab.ip(2).to_string());
    let server = SocketAddr::new(lab.ip(1), 7001);
    let serve = Probe::new(ProbeMode::TcpServe, server).payload("pong");
    let running = serve.start_in(&cg);
    let socket = connect_from(lab.ip(3), server);
    let out = running.wait(&serve);
    out.assert_ok("writing on an accepted connection from a client not in the policy");
    assert_eq!(socket, "pong");
}

/// Connects from `from` to `server` and reads what it writes.
fn connect_from(from: IpAddr, server: SocketAddr) -> String {
    use std::{io::Read, os::fd::FromRawFd};
    // std has no bind-before-connect for TCP: do it with libc.
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor we own from here on.
    let mut s = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let sa = |a: SocketAddr| match a {
        SocketAddr::V4(a) => libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        },
        SocketAddr::V6(_) => panic!("IPv4 only"),
    };
    let local = sa(SocketAddr::new(from, 0));
    let remote = sa(server);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid addresses of the given length.
    unsafe {
        assert_eq!(libc::bind(fd, (&raw const local).cast(), len), 0, "bind");
        assert_eq!(
            libc::connect(fd, (&raw const remote).cast(), len),
            0,
            "connect"
        );
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    got
}
