//! The DNS redirect of the programs: a policed cgroup's TCP and UDP traffic to port 53, whatever
//! the address, goes to its DNS proxy (`127.255.53.1:P`, `[::1]:P` or `::ffff:127.255.53.1:P`),
//! and the answer appears to come from the address asked (recvmsg, getpeername); a rule that
//! names the address with port 53 sends it there itself; without a redirect for the policy,
//! DNS is denied (`dns_proxy_not_ready`). Everything else is untouched.
//!
//! The "proxy" is the test's own sockets on the proxy address of the host's network namespace,
//! outside the policed cgroups; the addresses asked are loopback addresses of this test, so
//! nothing leaves the machine even if the redirect failed.
//!
//! Run as root, serially: `cargo xtask test`.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use egress_agent::enforcer::Owner;
use egress_common::{
    dns::{DnsRedirect, PROXY_V4, REDIRECT_V6_LOOPBACK},
    event::{Reason, Verdict},
};
use egress_tests::{
    cgroup::Cgroup,
    lab::Lab,
    probe::{Outcome, Probe},
    slots,
};

const POLL: Duration = Duration::from_millis(10);

/// Sockets that answer every datagram and connection with `<tag>:<what was sent>`, and
/// remember what they got.
struct Answerer {
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Answerer {
    /// UDP and TCP on `ips`, all on one port (the kernel's pick for the first, or `port`).
    fn bind(tag: &'static str, ips: &[IpAddr], port: u16) -> Self {
        for _ in 0..50 {
            if let Some(a) = Self::try_bind(tag, ips, port) {
                return a;
            }
        }
        panic!("no port free on {ips:?} for both UDP and TCP");
    }

    fn try_bind(tag: &'static str, ips: &[IpAddr], port: u16) -> Option<Self> {
        let first = UdpSocket::bind(SocketAddr::new(ips[0], port)).ok()?;
        let port = first.local_addr().ok()?.port();
        let mut udp = vec![first];
        for ip in &ips[1..] {
            udp.push(UdpSocket::bind(SocketAddr::new(*ip, port)).ok()?);
        }
        let mut tcp = Vec::new();
        for ip in ips {
            tcp.push(TcpListener::bind(SocketAddr::new(*ip, port)).ok()?);
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for s in udp {
            let (got, stop) = (got.clone(), stop.clone());
            s.set_read_timeout(Some(POLL)).ok()?;
            threads.push(thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let _ = s.send_to(format!("{tag}:{text}").as_bytes(), from);
                        got.lock().unwrap().push(text);
                    }
                }
            }));
        }
        for l in tcp {
            let (got, stop) = (got.clone(), stop.clone());
            l.set_nonblocking(true).ok()?;
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut c, _)) = l.accept() else {
                        thread::sleep(POLL);
                        continue;
                    };
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 512];
                    if let Ok(n) = c.read(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let _ = c.write_all(format!("{tag}:{text}").as_bytes());
                        got.lock().unwrap().push(text);
                    }
                }
            }));
        }
        Some(Self {
            port,
            got,
            stop,
            threads,
        })
    }

    fn got(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn proxy_v4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(PROXY_V4))
}

const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// The fake DNS proxy: `127.255.53.1:P` and `[::1]:P`.
fn proxy() -> Answerer {
    Answerer::bind("proxy", &[proxy_v4(), LO6], 0)
}

/// A policed cgroup (one rule elsewhere) whose DNS goes to `proxy`.
fn redirected(lab: &Lab, name: &str, proxy: &Answerer, flags: u8) -> Cgroup {
    let cg = lab.cgroup(name);
    lab.enforce(&cg, "10.255.255.1:443");
    lab.enforcer()
        .set_dns_redirect(&cg, Some(DnsRedirect::new(proxy.port, flags)));
    cg
}

fn dns(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, 53)
}

/// `a.b.c.d:port` as an IPv6 socket sees it.
fn mapped(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    }
}

#[track_caller]
fn answered<'a>(o: &'a Outcome, by: &str, what: &str) -> &'a Outcome {
    o.assert_ok(what);
    assert_eq!(
        o.reply.as_deref(),
        Some(by),
        "{what}: the answer (probe report {o:?})"
    );
    o
}

#[test]
fn unconnected_udp_to_any_port_53_reaches_the_proxy_and_the_answer_comes_from_the_address_asked() {
    let lab = Lab::new("dns-udp", slots::DNS_REDIRECT);
    let proxy = proxy();
    let asked = dns(lab.ip(99));

    let v4 = redirected(&lab, "v4", &proxy, REDIRECT_V6_LOOPBACK);
    let before = lab.enforcer().stats().dns_redirected;
    let o = lab.probe(&v4, Probe::udp(asked, "q-v4").exchange());
    answered(&o, "proxy:q-v4", "sendto X:53 from an AF_INET socket");
    assert_eq!(o.reply_from, Some(asked), "recvfrom's source: {o:?}");
    assert!(lab.enforcer().stats().dns_redirected > before, "counted");

    let six = redirected(&lab, "v6", &proxy, REDIRECT_V6_LOOPBACK);
    let o = lab.probe(&six, Probe::udp(dns(LO6), "q-v6").exchange());
    answered(&o, "proxy:q-v6", "sendto [::1]:53 (to the proxy's [::1])");
    assert_eq!(o.reply_from, Some(dns(LO6)), "{o:?}");

    let mapped_cg = redirected(&lab, "v4-mapped", &proxy, REDIRECT_V6_LOOPBACK);
    let o = lab.probe(&mapped_cg, Probe::udp6(asked, "q-mapped").exchange());
    answered(
        &o,
        "proxy:q-mapped",
        "sendto ::ffff:X:53 from an AF_INET6 socket",
    );
    assert_eq!(o.reply_from, Some(mapped(asked)), "{o:?}");

    // Without the proxy on [::1], connected IPv6 DNS goes to the v4-mapped proxy address; an
    // unconnected send cannot (the kernel refuses a sendmsg6 rewritten to v4-mapped): denied.
    let no_lo6 = redirected(&lab, "v6-to-mapped", &proxy, 0);
    let o = lab.probe(
        &no_lo6,
        Probe::udp(dns(LO6), "q-v6-mapped").connected().exchange(),
    );
    answered(
        &o,
        "proxy:q-v6-mapped",
        "connected UDP to [::1]:53 without the flag",
    );
    assert_eq!(o.peer, Some(dns(LO6)), "{o:?}");
    assert_eq!(o.reply_from, Some(dns(LO6)), "{o:?}");
    let o = lab.probe(
        &no_lo6,
        Probe::tcp(dns(LO6)).payload("q-tcp6-mapped").exchange(),
    );
    answered(
        &o,
        "proxy:q-tcp6-mapped",
        "TCP to [::1]:53 without the flag",
    );
    assert_eq!(o.peer, Some(dns(LO6)), "{o:?}");
    let o = lab.probe(&no_lo6, Probe::udp(dns(LO6), "q-v6-unsent"));
    o.assert_denied("sendto [::1]:53 without the proxy on [::1]");
    lab.enforcer()
        .expect_event("sendto [::1]:53 without the flag", |e| {
            e.pid == o.pid && e.reason == Reason::DnsProxyNotReady
        });

    let got = proxy.got();
    for q in ["q-v4", "q-v6", "q-mapped", "q-v6-mapped", "q-tcp6-mapped"] {
        assert!(
            got.iter().any(|g| g == q),
            "{q} did not reach the proxy: {got:?}"
        );
    }
}

#[test]
fn connected_udp_and_tcp_reach_the_proxy_and_their_peer_is_the_address_asked() {
    let lab = Lab::new("dns-connected", slots::DNS_REDIRECT);
    let proxy = proxy();
    let asked = dns(lab.ip(98));

    let udp = redirected(&lab, "udp-connected", &proxy, REDIRECT_V6_LOOPBACK);
    let o = lab.probe(&udp, Probe::udp(asked, "c-udp").connected().exchange());
    answered(&o, "proxy:c-udp", "connect X:53, send, recv");
    assert_eq!(
        o.peer,
        Some(asked),
        "getpeername of the connected socket: {o:?}"
    );
    assert_eq!(o.reply_from, Some(asked), "{o:?}");

    // An IPv6 socket connected to ::ffff:X:53: the kernel sends its datagrams through
    // sendmsg4, to the proxy address the connect wrote.
    let udp_mapped = redirected(&lab, "udp-connected-mapped", &proxy, REDIRECT_V6_LOOPBACK);
    let o = lab.probe(
        &udp_mapped,
        Probe::udp6(asked, "c-udp-mapped").connected().exchange(),
    );
    answered(&o, "proxy:c-udp-mapped", "connect ::ffff:X:53, send, recv");
    assert_eq!(o.peer, Some(mapped(asked)), "{o:?}");
    assert_eq!(o.reply_from, Some(mapped(asked)), "{o:?}");

    let tcp = redirected(&lab, "tcp", &proxy, REDIRECT_V6_LOOPBACK);
    let o = lab.probe(&tcp, Probe::tcp(asked).payload("c-tcp").exchange());
    answered(&o, "proxy:c-tcp", "TCP connect X:53");
    assert_eq!(o.peer, Some(asked), "getpeername of the TCP socket: {o:?}");

    let tcp6 = redirected(&lab, "tcp6", &proxy, REDIRECT_V6_LOOPBACK);
    let o = lab.probe(&tcp6, Probe::tcp(dns(LO6)).payload("c-tcp6").exchange());
    answered(&o, "proxy:c-tcp6", "TCP connect [::1]:53");
    assert_eq!(o.peer, Some(dns(LO6)), "{o:?}");

    let tcp_mapped = redirected(&lab, "tcp-mapped", &proxy, REDIRECT_V6_LOOPBACK);
    let o = lab.probe(
        &tcp_mapped,
        Probe::tcp6(asked).payload("c-tcp-mapped").exchange(),
    );
    answered(&o, "proxy:c-tcp-mapped", "TCP connect ::ffff:X:53");
    assert_eq!(o.peer, Some(mapped(asked)), "{o:?}");
}

#[test]
fn a_rule_that_names_the_server_and_port_53_sends_dns_there_itself() {
    let lab = Lab::new("dns-direct", slots::DNS_REDIRECT);
    let proxy = proxy();
    let server = Answerer::bind("server", &[lab.ip(97)], 53);
    let asked = dns(lab.ip(97));
    let in_cidr = Answerer::bind("cidr", &[lab.ip_in(1, 5)], 53);

    let exact = lab.cgroup("exact");
    lab.enforce(&exact, &format!("{}:53", lab.ip(97)));
    lab.enforcer()
        .set_dns_redirect(&exact, Some(DnsRedirect::new(proxy.port, 0)));
    let before = lab.enforcer().stats().dns_direct;
    let o = lab.probe(&exact, Probe::udp(asked, "d-udp").exchange());
    answered(&o, "server:d-udp", "UDP to the named server");
    let o = lab.probe(&exact, Probe::tcp(asked).payload("d-tcp").exchange());
    answered(&o, "server:d-tcp", "TCP to the named server");
    assert!(lab.enforcer().stats().dns_direct >= before + 2, "counted");

    let cidr = lab.cgroup("cidr");
    lab.enforce(&cidr, &format!("{}/24:53", lab.ip_in(1, 0)));
    lab.enforcer()
        .set_dns_redirect(&cidr, Some(DnsRedirect::new(proxy.port, 0)));
    let o = lab.probe(&cidr, Probe::udp(dns(lab.ip_in(1, 5)), "d-cidr").exchange());
    answered(&o, "cidr:d-cidr", "UDP into a CIDR named with port 53");

    // A rule for the address on any port does not name port 53: DNS goes to the proxy.
    let any_port = lab.cgroup("any-port");
    lab.enforce(&any_port, &lab.ip(97).to_string());
    lab.enforcer()
        .set_dns_redirect(&any_port, Some(DnsRedirect::new(proxy.port, 0)));
    let o = lab.probe(&any_port, Probe::udp(asked, "d-any").exchange());
    answered(&o, "proxy:d-any", "UDP to a server allowed on any port");
    assert_eq!(o.reply_from, Some(asked), "{o:?}");

    assert!(
        !proxy
            .got()
            .iter()
            .any(|g| g.starts_with("d-") && g != "d-any")
    );
    assert_eq!(server.got(), ["d-udp", "d-tcp"]);
    assert_eq!(in_cidr.got(), ["d-cidr"]);
}

#[test]
fn without_a_redirect_dns_is_denied_as_dns_proxy_not_ready() {
    let lab = Lab::new("dns-not-ready", slots::DNS_REDIRECT);
    let proxy = proxy();
    let server = Answerer::bind("server", &[lab.ip(96)], 53);
    let asked = dns(lab.ip(96));
    let cg = lab.cgroup("no-redirect");
    lab.enforce(&cg, "10.255.255.1:443");

    let denied_before = lab.enforcer().stats().denied["dns_proxy_not_ready"];
    let o = lab.probe(&cg, Probe::udp(asked, "n-udp"));
    o.assert_denied("UDP to port 53 without a redirect");
    lab.probe(&cg, Probe::tcp(asked))
        .assert_denied("TCP to port 53 without a redirect");
    let ev = lab.enforcer().expect_event("the denial", |e| {
        e.pid == o.pid && e.reason == Reason::DnsProxyNotReady
    });
    assert_eq!((ev.addr, ev.port), (asked.ip(), 53), "{ev:?}");
    assert_eq!(ev.reason_name(), "dns_proxy_not_ready");
    assert!(lab.enforcer().stats().denied["dns_proxy_not_ready"] >= denied_before + 2);

    // Set, then removed again.
    lab.enforcer()
        .set_dns_redirect(&cg, Some(DnsRedirect::new(proxy.port, 0)));
    answered(
        &lab.probe(&cg, Probe::udp(asked, "n-set").exchange()),
        "proxy:n-set",
        "once the redirect is set",
    );
    lab.enforcer().set_dns_redirect(&cg, None);
    lab.probe(&cg, Probe::udp(asked, "n-removed"))
        .assert_denied("once the redirect is removed");
    assert!(server.got().is_empty(), "{:?}", server.got());

    // Audit mode: allowed as asked, and reported.
    let audit = lab.cgroup("audit");
    lab.audit(&audit, "10.255.255.1:443");
    let o = lab.probe(&audit, Probe::udp(asked, "n-audit").exchange());
    answered(&o, "server:n-audit", "audit mode without a redirect");
    lab.enforcer().expect_event("the audit hit", |e| {
        e.pid == o.pid && e.reason == Reason::DnsProxyNotReady && e.verdict == Verdict::Audited
    });
}

#[test]
fn other_ports_ordinary_answers_and_unpoliced_cgroups_are_untouched() {
    let lab = Lab::new("dns-untouched", slots::DNS_REDIRECT);
    let proxy = proxy();
    let echo = Answerer::bind("echo", &[lab.ip(95)], 0);
    let server = Answerer::bind("server", &[lab.ip(94)], 53);

    let cg = lab.cgroup("policed");
    lab.enforce(&cg, &lab.ip(95).to_string());
    lab.enforcer()
        .set_dns_redirect(&cg, Some(DnsRedirect::new(proxy.port, 0)));
    let other = SocketAddr::new(lab.ip(95), echo.port);
    let o = lab.probe(&cg, Probe::udp(other, "u-other").exchange());
    answered(&o, "echo:u-other", "UDP to another port");
    assert_eq!(
        o.reply_from,
        Some(other),
        "an ordinary answer's source: {o:?}"
    );
    let o = lab.probe(&cg, Probe::udp(other, "u-connected").connected().exchange());
    answered(&o, "echo:u-connected", "connected UDP to another port");
    assert_eq!(o.peer, Some(other), "{o:?}");

    let unpoliced = lab.cgroup("unpoliced");
    let o = lab.probe(&unpoliced, Probe::udp(dns(lab.ip(94)), "u-dns").exchange());
    answered(&o, "server:u-dns", "an unpoliced cgroup's DNS");
    assert_eq!(o.reply_from, Some(dns(lab.ip(94))), "{o:?}");
    assert!(proxy.got().is_empty(), "{:?}", proxy.got());
    assert_eq!(server.got(), ["u-dns"]);
}

#[test]
fn the_redirect_follows_the_owner_and_a_restarted_agent_finds_it() {
    let mut lab = Lab::new("dns-owner", slots::DNS_REDIRECT);
    let proxy = proxy();
    let asked = dns(lab.ip(93));
    let cg = redirected(&lab, "owner", &proxy, 0);
    let r = DnsRedirect::new(proxy.port, 0);
    assert_eq!(lab.enforcer().dns_redirects(), [(Owner::Cgroup(cg.id), r)]);

    // A new policy id for the owner: the redirect comes along.
    assert!(lab.enforcer().remove_policy(&cg));
    lab.enforcer().set_dns_redirect(&cg, Some(r));
    lab.enforce(&cg, "10.255.255.1:443");
    answered(
        &lab.probe(&cg, Probe::udp(asked, "o-new-id").exchange()),
        "proxy:o-new-id",
        "after the owner's policy id changed",
    );

    lab.stop_enforcer();
    answered(
        &lab.probe(&cg, Probe::udp(asked, "o-no-agent").exchange()),
        "proxy:o-no-agent",
        "while no agent runs (pinned)",
    );
    lab.start_enforcer();
    assert_eq!(
        lab.enforcer().dns_redirects(),
        [(Owner::Cgroup(cg.id), r)],
        "found pinned"
    );
    assert!(lab.enforcer().remove_policy(&cg));
    assert!(
        lab.enforcer().dns_redirects().is_empty(),
        "gone with the owner"
    );
    lab.enforce(&cg, "10.255.255.1:443");
    lab.probe(&cg, Probe::udp(asked, "o-gone"))
        .assert_denied("a new policy of the owner after its redirect went");
}
