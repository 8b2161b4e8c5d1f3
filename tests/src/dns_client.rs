//! The DNS side of `egress-probe` (its `dns-*` subcommands), run inside client containers:
//! what an application's lookups and the connects after them got. Each subcommand prints one
//! JSON line per attempt ([`Report`]), which the tests parse back ([`reports`]).
//!
//! ```text
//! egress-probe dns-connect NAME PORT [--count N]         resolve (getaddrinfo) + TCP connect, N times
//! egress-probe dns-query SERVER NAME [--type T] [--tcp | --connected] [--timeout-ms MS]
//!                       [--repeat N | --for-ms MS] [--every-ms MS]
//! egress-probe dns-garbage SERVER [--tcp | --connected]   malformed bytes to a DNS server
//! egress-probe dns-expiry NAME [--wait-ms MS]             a connection outliving its learned IP
//! egress-probe sleep SECS                                 keeps a probe-only container running
//! ```
//!
//! Questions and answers are hickory-proto messages; name lookups are the C library's
//! `getaddrinfo` (std's `ToSocketAddrs`), so a glibc build of the probe is a glibc resolver.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket},
    str::FromStr,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RData, RecordType},
    serialize::binary::BinDecodable as _,
};
use serde::{Deserialize, Serialize};

/// The TCP port of the targets' echo service (`nc -e cat`), for long-lived connections.
pub const ECHO_PORT: u16 = crate::e2e::ECHO_PORT;
/// The UDP port of the sinks ([`crate::e2e::UdpSink`]).
pub const SINK_PORT: u16 = crate::e2e::UDP_PORT;

/// One line a `dns-*` subcommand printed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `connect`, `query`, `garbage`, `expiry.<step>`.
    pub op: String,
    /// Wall clock when the attempt started (ms since the epoch; the container shares the
    /// host's clock).
    pub unix_ms: u128,
    /// How long the attempt took.
    pub ms: f64,
    /// The answer's response code (`NoError`, `NXDomain`, `Refused`, `ServFail`, `FormErr`), if
    /// a DNS answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// Addresses of the answer or the lookup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<IpAddr>,
    /// The address connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
    /// True if the attempt did what it tried (connected and read, sent, ...).
    pub ok: bool,
    /// The error, if any (`Operation not permitted`, `timed out`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    fn new(op: &str) -> Self {
        Self {
            op: op.to_owned(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
            ..Self::default()
        }
    }

    fn finish(mut self, t0: Instant, r: Result<(), String>) -> Self {
        self.ms = t0.elapsed().as_secs_f64() * 1000.0;
        match r {
            Ok(()) => self.ok = true,
            Err(e) => self.error = Some(e),
        }
        self
    }

    fn print(&self) {
        println!("{}", serde_json::to_string(self).expect("serializable"));
    }

    /// True if the error is EPERM (the kernel's denial).
    pub fn denied(&self) -> bool {
        self.error
            .as_deref()
            .is_some_and(|e| e.contains("Operation not permitted") || e.contains("os error 1)"))
    }
}

/// The reports in a probe's output (lines that are not reports are skipped).
pub fn reports(output: &str) -> Vec<Report> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect()
}

/// Runs a `dns-*` or `sleep` subcommand (`args` without the program name); the exit code.
pub fn run(args: &[String]) -> Result<(), String> {
    let (cmd, rest) = args.split_first().ok_or("missing subcommand")?;
    let mut opts = Opts::parse(rest)?;
    match cmd.as_str() {
        "dns-connect" => {
            let (name, port) = (opts.pos(0)?, opts.pos(1)?.parse().map_err(err)?);
            for _ in 0..opts.count.unwrap_or(1) {
                resolve_and_connect(&name, port).print();
            }
        }
        "dns-query" => {
            let server = parse_server(&opts.pos(0)?)?;
            let name = opts.pos(1)?;
            let every = Duration::from_millis(opts.every_ms.unwrap_or(0));
            let until = opts
                .for_ms
                .map(|ms| Instant::now() + Duration::from_millis(ms));
            let mut i = 0;
            while match until {
                Some(t) => Instant::now() < t,
                None => i < opts.count.unwrap_or(1),
            } {
                if i > 0 {
                    thread::sleep(every);
                }
                query(server, &name, opts.rtype, opts.transport(), opts.timeout).print();
                i += 1;
            }
        }
        "dns-garbage" => {
            garbage(parse_server(&opts.pos(0)?)?, opts.transport(), opts.timeout).print()
        }
        "dns-expiry" => {
            let wait = Duration::from_millis(opts.wait_ms.take().unwrap_or(5000));
            for r in expiry(&opts.pos(0)?, wait) {
                r.print();
            }
        }
        "sleep" => thread::sleep(Duration::from_secs(opts.pos(0)?.parse().map_err(err)?)),
        other => return Err(format!("unknown subcommand {other:?}")),
    }
    Ok(())
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `A.B.C.D` (port 53) or `ADDR:PORT`.
fn parse_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|e| format!("bad server {s:?}: {e}"))
}

#[derive(Debug)]
struct Opts {
    positional: Vec<String>,
    count: Option<u32>,
    every_ms: Option<u64>,
    for_ms: Option<u64>,
    wait_ms: Option<u64>,
    rtype: RecordType,
    tcp: bool,
    connected: bool,
    timeout: Duration,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Opts {
            positional: Vec::new(),
            count: None,
            every_ms: None,
            for_ms: None,
            wait_ms: None,
            rtype: RecordType::A,
            tcp: false,
            connected: false,
            timeout: Duration::from_secs(3),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--count" | "--repeat" => o.count = Some(value()?.parse().map_err(err)?),
                "--every-ms" => o.every_ms = Some(value()?.parse().map_err(err)?),
                "--for-ms" => o.for_ms = Some(value()?.parse().map_err(err)?),
                "--wait-ms" => o.wait_ms = Some(value()?.parse().map_err(err)?),
                "--timeout-ms" => o.timeout = Duration::from_millis(value()?.parse().map_err(err)?),
                "--type" => o.rtype = RecordType::from_str(&value()?).map_err(err)?,
                "--tcp" => o.tcp = true,
                "--connected" => o.connected = true,
                flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
                p => o.positional.push(p.to_owned()),
            }
        }
        Ok(o)
    }

    fn transport(&self) -> Via {
        match (self.tcp, self.connected) {
            (true, _) => Via::Tcp,
            (false, true) => Via::ConnectedUdp,
            (false, false) => Via::Udp,
        }
    }

    fn pos(&self, i: usize) -> Result<String, String> {
        self.positional
            .get(i)
            .cloned()
            .ok_or(format!("missing argument {}", i + 1))
    }
}

/// getaddrinfo(NAME), then a TCP connect to its first address and a read of the target's
/// `ok <role>`.
fn resolve_and_connect(name: &str, port: u16) -> Report {
    let mut r = Report::new("connect");
    let t0 = Instant::now();
    let res = (|| {
        let addrs: Vec<SocketAddr> = (name, port)
            .to_socket_addrs()
            .map_err(|e| format!("resolve: {e}"))?
            .collect();
        r.addrs = addrs.iter().map(SocketAddr::ip).collect();
        let to = *addrs.first().ok_or("resolve: no address")?;
        r.peer = Some(to);
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(err)?;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        if buf.starts_with("ok") {
            Ok(())
        } else {
            Err(format!("read {to}: got {buf:?}"))
        }
    })();
    r.finish(t0, res)
}

/// How a question is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An unconnected UDP socket: `sendto` and `recvfrom` (the sendmsg and recvmsg hooks).
    Udp,
    /// A connected UDP socket: `connect`, `send`, `recv` (the connect hook), as glibc, musl
    /// and busybox resolvers do.
    ConnectedUdp,
    /// TCP with the 2-byte length prefix.
    Tcp,
}

/// One question to `server`; the answer's code and addresses, and (unconnected UDP) the
/// address the answer came from as `peer`.
pub fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    via: Via,
    timeout: Duration,
) -> Report {
    let mut r = Report::new("query");
    let t0 = Instant::now();
    let res = (|| {
        let mut qname = Name::from_str(name).map_err(err)?;
        qname.set_fqdn(true);
        let mut msg = Message::query();
        msg.metadata.id = fastrand::u16(..);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(qname, rtype));
        let bytes = msg.to_vec().map_err(err)?;
        let (answer, from) = exchange(server, &bytes, via, timeout).map_err(err)?;
        r.peer = from;
        let answer = Message::from_bytes(&answer).map_err(|e| format!("unparsable answer: {e}"))?;
        if answer.metadata.id != msg.metadata.id {
            return Err(format!(
                "answer id {} != {}",
                answer.metadata.id, msg.metadata.id
            ));
        }
        r.rcode = Some(format!("{:?}", answer.metadata.response_code));
        r.addrs = answer
            .answers
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        Ok(())
    })();
    r.finish(t0, res)
}

/// Sends `bytes` to `server` and reads one answer; for unconnected UDP also where it came
/// from.
fn exchange(
    server: SocketAddr,
    bytes: &[u8],
    via: Via,
    timeout: Duration,
) -> io::Result<(Vec<u8>, Option<SocketAddr>)> {
    if via == Via::Tcp {
        return exchange_tcp(server, bytes, timeout).map(|b| (b, None));
    }
    let mut buf = vec![0u8; 4096];
    if via == Via::ConnectedUdp {
        // As glibc's resolver does it: `socket`, then `connect`, never `bind` (std's
        // UdpSocket cannot connect an unbound socket).
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(server),
            socket2::Type::DGRAM,
            None,
        )?;
        sock.set_read_timeout(Some(timeout))?;
        sock.connect(&server.into())?;
        let s: UdpSocket = sock.into();
        s.send(bytes)?;
        let n = s.recv(&mut buf)?;
        buf.truncate(n);
        return Ok((buf, None));
    }
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let s = UdpSocket::bind(bind)?;
    s.set_read_timeout(Some(timeout))?;
    let (n, from) = {
        s.send_to(bytes, server)?;
        let (n, from) = s.recv_from(&mut buf)?;
        (n, Some(from))
    };
    buf.truncate(n);
    Ok((buf, from))
}

fn exchange_tcp(server: SocketAddr, bytes: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let len = u16::try_from(bytes.len()).map_err(io::Error::other)?;
    s.write_all(&len.to_be_bytes())?;
    s.write_all(bytes)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// Bytes that are no DNS message (a header that claims 5 questions, then noise) to `server`;
/// any answer's response code.
fn garbage(server: SocketAddr, via: Via, timeout: Duration) -> Report {
    let mut r = Report::new("garbage");
    let t0 = Instant::now();
    let junk = b"\x12\x34\x01\x00\x00\x05\x00\x00\x00\x00\x00\x00\xff\xfe\xfd garbage \x00";
    match exchange(server, junk, via, timeout) {
        Ok((bytes, _)) => {
            r.rcode = Some(match Message::from_bytes(&bytes) {
                Ok(m) => format!("{:?}", m.metadata.response_code),
                Err(_) => "unparsable".into(),
            });
            r.finish(t0, Ok(()))
        }
        Err(e) => r.finish(t0, Err(e.to_string())),
    }
}

/// A long-lived TCP connection and a connected UDP socket to the first address of NAME, opened
/// while it is learned; after `wait` (its TTL + grace gone): the TCP connection and the
/// connected UDP socket are used again, and a new connect and an explicit `sendto` are tried.
/// One report per step: `expiry.resolve`, `expiry.tcp_open`, `expiry.udp_open`, then after the
/// wait `expiry.tcp_old`, `expiry.udp_old`, `expiry.tcp_new`, `expiry.udp_sendto`.
fn expiry(name: &str, wait: Duration) -> Vec<Report> {
    let mut out = Vec::new();
    let step = |op: &str, f: &mut dyn FnMut() -> Result<(), String>| {
        let r = Report::new(&format!("expiry.{op}"));
        let t0 = Instant::now();
        r.finish(t0, f())
    };
    let mut ip = None;
    let mut resolve = step("resolve", &mut || {
        let a = (name, ECHO_PORT)
            .to_socket_addrs()
            .map_err(err)?
            .next()
            .ok_or("no address")?;
        ip = Some(a.ip());
        Ok(())
    });
    resolve.addrs = ip.into_iter().collect();
    out.push(resolve);
    let Some(ip) = ip else { return out };
    let echo = SocketAddr::new(ip, ECHO_PORT);
    let sink = SocketAddr::new(ip, SINK_PORT);
    let mut tcp = None;
    out.push(step("tcp_open", &mut || {
        let mut s = TcpStream::connect_timeout(&echo, Duration::from_secs(3)).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(err)?;
        echo_once(&mut s, b"before\n")?;
        tcp = Some(s);
        Ok(())
    }));
    let mut udp = None;
    out.push(step("udp_open", &mut || {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(err)?;
        s.connect(sink).map_err(err)?;
        s.send(b"expiry-udp-connected-before").map_err(err)?;
        udp = Some(s);
        Ok(())
    }));
    thread::sleep(wait);
    out.push(step("tcp_old", &mut || match tcp.as_mut() {
        Some(s) => echo_once(s, b"after\n"),
        None => Err("no connection".into()),
    }));
    out.push(step("udp_old", &mut || match &udp {
        Some(s) => s
            .send(b"expiry-udp-connected-after")
            .map(|_| ())
            .map_err(err),
        None => Err("no socket".into()),
    }));
    out.push(step("tcp_new", &mut || {
        TcpStream::connect_timeout(&echo, Duration::from_secs(3))
            .map(|_| ())
            .map_err(err)
    }));
    out.push(step("udp_sendto", &mut || {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(err)?;
        s.send_to(b"expiry-udp-sendto-after", sink)
            .map(|_| ())
            .map_err(err)
    }));
    out
}

/// Writes `line` and reads it back from an echo service.
fn echo_once(s: &mut TcpStream, line: &[u8]) -> Result<(), String> {
    s.write_all(line).map_err(err)?;
    let mut buf = vec![0u8; line.len()];
    s.read_exact(&mut buf).map_err(err)?;
    if buf == line {
        Ok(())
    } else {
        Err(format!("echo returned {buf:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let mut r = Report::new("query");
        r.rcode = Some("NXDomain".into());
        r.error = Some("connect: Operation not permitted (os error 1)".into());
        let line = serde_json::to_string(&r).unwrap();
        let back = reports(&format!("noise\n{line}\n"));
        assert_eq!(back, [r]);
        assert!(back[0].denied());
    }

    #[test]
    fn options_parse() {
        let args: Vec<String> = [
            "127.0.0.11",
            "x.test",
            "--tcp",
            "--type",
            "AAAA",
            "--repeat",
            "3",
        ]
        .map(String::from)
        .to_vec();
        let o = Opts::parse(&args).unwrap();
        assert!(o.tcp);
        assert_eq!(o.rtype, RecordType::AAAA);
        assert_eq!(o.count, Some(3));
        assert_eq!(parse_server(&o.pos(0).unwrap()).unwrap().port(), 53);
    }
}
