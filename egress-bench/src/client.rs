//! The load generator of the connect benchmarks:
//! `egress-bench client OP --a-cgroup CG --a-dst ADDR [--a-netns NS] [--b-... ] ...`.
//!
//! The harness starts it as a separate process that is placed in side A's cgroup (and network
//! namespace) between fork and exec. It then measures in batches, moving itself between side A
//! and side B before each batch (writing its pid to the side's `cgroup.procs`, `setns` into
//! the side's namespace) in the order A B B A A B B A ..., so both sides are measured in the
//! same time windows and drift hits both alike. Every socket is made after the move, so it is
//! judged as a socket of that side's cgroup. Each consecutive (A, B) or (B, A) pair of batches
//! gives one ratio rate(B) / rate(A). With no side B it measures side A only.
//!
//! - `tcp-connect`: `socket` + `connect` + `close` with `SO_LINGER` 0 (the close sends a RST, so
//!   no TIME_WAIT piles up and the 28k ephemeral ports are reused); the latency is that of
//!   `connect` alone, the rate that of the whole cycle. Each connect has a 2 s send timeout so
//!   a dropped SYN fails the run instead of hanging it.
//! - `udp-sendto`: a new unconnected UDP socket per batch, `sendto` of a 16-byte datagram per
//!   operation (the `sendmsg4` hook runs for every unconnected send).
//! - `http-cycle`: one unloaded HTTP request on a new connection: `connect`, `GET /small.txt`,
//!   read the whole response (by its `Content-Length`), `close` with `SO_LINGER` 0; the latency
//!   is the whole cycle. A response other than `200` counts as an error.
//! - `dns-udp`, `dns-tcp`: one A question for each of `--names` in turn, over a new connected
//!   UDP socket or a new TCP connection ([`crate::dns_client`]); the latency is the whole
//!   exchange. `dns-udp-window`: `--window` questions in flight on one UDP socket per batch;
//!   the latency is each question's, the rate the server's under load. `dns-learn`: each of
//!   `--names` once, over UDP, each retried (every 20 ms, for 3 s) until it is answered: what
//!   a container that looks up its names does, also while the agent's DNS proxy for it is
//!   still being set up; it stops at the first name never answered. An answer other than
//!   NOERROR with records counts as an error.
//!
//! It prints one JSON line ([`ClientReport`]) on stdout.

use std::{
    ffi::CString,
    fs::File,
    io,
    mem::size_of,
    net::SocketAddrV4,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::dns_client;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Op {
    TcpConnect,
    UdpSendto,
    HttpCycle,
    DnsUdp,
    DnsTcp,
    DnsUdpWindow,
    DnsLearn,
}

impl Op {
    pub fn arg(self) -> &'static str {
        match self {
            Op::TcpConnect => "tcp-connect",
            Op::UdpSendto => "udp-sendto",
            Op::HttpCycle => "http-cycle",
            Op::DnsUdp => "dns-udp",
            Op::DnsTcp => "dns-tcp",
            Op::DnsUdpWindow => "dns-udp-window",
            Op::DnsLearn => "dns-learn",
        }
    }

    fn is_dns(self) -> bool {
        matches!(
            self,
            Op::DnsUdp | Op::DnsTcp | Op::DnsUdpWindow | Op::DnsLearn
        )
    }
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    #[arg(value_enum)]
    pub op: Op,
    /// Side A: cgroup v2 directory.
    #[arg(long)]
    pub a_cgroup: PathBuf,
    /// Side A: network namespace file (e.g. /run/netns/NAME).
    #[arg(long)]
    pub a_netns: Option<PathBuf>,
    /// Side A: IPv4 destination.
    #[arg(long)]
    pub a_dst: SocketAddrV4,
    #[arg(long, requires = "b_dst")]
    pub b_cgroup: Option<PathBuf>,
    #[arg(long, requires = "b_cgroup")]
    pub b_netns: Option<PathBuf>,
    #[arg(long, requires = "b_cgroup")]
    pub b_dst: Option<SocketAddrV4>,
    /// Timed operations per batch.
    #[arg(long)]
    pub batch: usize,
    /// Batches per side.
    #[arg(long)]
    pub batches: usize,
    /// Untimed operations on each side before the first batch.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Untimed operations after each move, before the batch.
    #[arg(long, default_value_t = 10)]
    pub settle: usize,
    /// The names the DNS operations ask for (A), in turn.
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    /// Questions in flight for `dns-udp-window`.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
}

/// What one operation is, with what the DNS operations ask.
struct Work {
    op: Op,
    questions: Option<dns_client::Questions>,
    window: usize,
}

/// One side's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SideReport {
    pub ops: usize,
    /// Sum of the timed batches' wall time.
    pub elapsed_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl SideReport {
    /// Operations per second over the timed batches.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / (self.elapsed_ns.max(1) as f64 / 1e9)
    }
}

/// What the client prints (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientReport {
    pub a: SideReport,
    pub b: Option<SideReport>,
    /// rate(B) / rate(A) for each pair of neighbouring batches.
    pub pair_ratios: Vec<f64>,
    pub errors: usize,
    pub first_error: Option<String>,
}

struct Side {
    procs: CString,
    netns: Option<File>,
    dst: libc::sockaddr_in,
}

impl Side {
    fn new(cgroup: &std::path::Path, netns: Option<&PathBuf>, dst: SocketAddrV4) -> Result<Self> {
        Ok(Self {
            procs: CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())?,
            netns: netns
                .map(|p| File::open(p).with_context(|| format!("opening {}", p.display())))
                .transpose()?,
            dst: sockaddr(dst),
        })
    }

    /// Moves this (single-threaded) process here.
    fn enter(&self) -> Result<()> {
        if let Some(ns) = &self.netns {
            // SAFETY: setns with a namespace descriptor we own.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", io::Error::last_os_error());
            }
        }
        let pid = std::process::id().to_string();
        std::fs::write(
            std::ffi::OsStr::from_bytes(self.procs.as_bytes()),
            pid.as_bytes(),
        )
        .with_context(|| format!("moving into {:?}", self.procs))?;
        Ok(())
    }
}

pub fn run(args: ClientArgs) -> Result<()> {
    if args.batch == 0 || args.batches == 0 {
        bail!("--batch and --batches must be at least 1");
    }
    let mut sides = vec![Side::new(
        &args.a_cgroup,
        args.a_netns.as_ref(),
        args.a_dst,
    )?];
    if let (Some(cg), Some(dst)) = (&args.b_cgroup, args.b_dst) {
        sides.push(Side::new(cg, args.b_netns.as_ref(), dst)?);
    }
    let mut work = Work {
        op: args.op,
        questions: if args.op.is_dns() {
            Some(dns_client::Questions::new(&args.names)?)
        } else {
            None
        },
        window: args.window,
    };
    let report = measure(&args, &sides, &mut work)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The order of the batches: A B B A A B B A ... (one side: A A A ...).
pub fn schedule(sides: usize, batches_per_side: usize) -> Vec<usize> {
    const ABBA: [usize; 4] = [0, 1, 1, 0];
    (0..sides * batches_per_side)
        .map(|k| if sides == 1 { 0 } else { ABBA[k % 4] })
        .collect()
}

fn measure(args: &ClientArgs, sides: &[Side], work: &mut Work) -> Result<ClientReport> {
    let mut errors = 0;
    let mut first_error: Option<String> = None;
    let mut note = |e: io::Error, what: &str| {
        errors += 1;
        first_error.get_or_insert_with(|| format!("{what}: {e}"));
    };
    for s in sides {
        s.enter()?;
        let _ = batch(work, &s.dst, args.warmup, &mut note, false);
    }
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut elapsed = vec![Duration::ZERO; sides.len()];
    let mut batch_rates: Vec<(usize, f64)> = Vec::new();
    for side in schedule(sides.len(), args.batches) {
        let s = &sides[side];
        s.enter()?;
        let _ = batch(work, &s.dst, args.settle, &mut note, false);
        let t0 = Instant::now();
        let l = batch(work, &s.dst, args.batch, &mut note, true);
        let dt = t0.elapsed();
        elapsed[side] += dt;
        batch_rates.push((side, args.batch as f64 / dt.as_secs_f64()));
        lat[side].extend(l);
    }
    let pair_ratios = batch_rates
        .chunks(2)
        .filter_map(|p| match p {
            [(0, a), (1, b)] | [(1, b), (0, a)] => Some(b / a),
            _ => None,
        })
        .collect();
    let mut reports = lat.into_iter().zip(elapsed).map(|(l, e)| summarize(l, e));
    let a = reports.next().unwrap_or_default();
    let b = reports.next();
    Ok(ClientReport {
        a,
        b,
        pair_ratios,
        errors,
        first_error,
    })
}

/// `n` operations; returns their latencies if `timed`.
fn batch(
    work: &mut Work,
    dst: &libc::sockaddr_in,
    n: usize,
    note: &mut impl FnMut(io::Error, &str),
    timed: bool,
) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(if timed { n } else { 0 });
    let op = work.op;
    if let Some(q) = work.questions.as_mut() {
        dns_batch(op, q, work.window, dst, n, note, &mut lat);
        if !timed {
            lat.clear();
        }
        return lat;
    }
    match op {
        Op::TcpConnect | Op::HttpCycle => {
            let (once, what): (fn(&libc::sockaddr_in) -> io::Result<Duration>, _) = match op {
                Op::TcpConnect => (connect_once, "connect"),
                _ => (http_cycle, "HTTP request"),
            };
            for _ in 0..n {
                match once(dst) {
                    Ok(d) if timed => lat.push(d),
                    Ok(_) => {}
                    Err(e) => note(e, what),
                }
            }
        }
        Op::UdpSendto => {
            // SAFETY: plain socket call.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                note(io::Error::last_os_error(), "socket(SOCK_DGRAM)");
                return lat;
            }
            for _ in 0..n {
                let t0 = Instant::now();
                match sendto(fd, dst) {
                    Ok(()) if timed => lat.push(t0.elapsed()),
                    Ok(()) => {}
                    Err(e) => note(e, "sendto"),
                }
            }
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
        }
        Op::DnsUdp | Op::DnsTcp | Op::DnsUdpWindow | Op::DnsLearn => {
            unreachable!("DNS operations have their questions")
        }
    }
    lat
}

/// `n` DNS operations (see the module docs); their latencies go to `lat`.
fn dns_batch(
    op: Op,
    q: &mut dns_client::Questions,
    window: usize,
    dst: &libc::sockaddr_in,
    n: usize,
    note: &mut impl FnMut(io::Error, &str),
    lat: &mut Vec<Duration>,
) {
    let to = std::net::SocketAddr::V4(socket_addr(dst));
    match op {
        Op::DnsUdpWindow => {
            let (l, errors) = dns_client::udp_window(to, q, n, window);
            lat.extend(l);
            for e in errors {
                note(e, "DNS over UDP (window)");
            }
        }
        Op::DnsLearn => {
            'names: for _ in 0..n {
                let deadline = Instant::now() + Duration::from_secs(3);
                loop {
                    match dns_client::udp_once(to, q) {
                        Ok(d) => {
                            lat.push(d);
                            break;
                        }
                        Err(e) if Instant::now() > deadline => {
                            note(e, "DNS over UDP (learning)");
                            break 'names;
                        }
                        // The same name again: step back to it.
                        Err(_) => {
                            q.back();
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            }
        }
        _ => {
            for _ in 0..n {
                let r = if op == Op::DnsTcp {
                    dns_client::tcp_once(|| connect_rst(dst).map(|(s, _)| s), q)
                } else {
                    dns_client::udp_once(to, q)
                };
                match r {
                    Ok(d) => lat.push(d),
                    Err(e) => note(
                        e,
                        if op == Op::DnsTcp {
                            "DNS over TCP"
                        } else {
                            "DNS over UDP"
                        },
                    ),
                }
            }
        }
    }
}

fn socket_addr(a: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        u32::from_be(a.sin_addr.s_addr).into(),
        u16::from_be(a.sin_port),
    )
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, v: &T) -> io::Result<()> {
    // SAFETY: v points to a valid T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new TCP socket that closes with a RST (`SO_LINGER` 0: no TIME_WAIT piles up) and gives up
/// sending after 2 s, connected to `addr`; returns it with the duration of `connect`.
fn connect_rst(addr: &libc::sockaddr_in) -> io::Result<(std::net::TcpStream, Duration)> {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket that nothing else owns; the stream closes it.
    let stream = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )?;
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDTIMEO,
        &libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        },
    )?;
    let t0 = Instant::now();
    // SAFETY: addr is a valid sockaddr_in of the size given.
    let rc = unsafe {
        libc::connect(
            fd,
            (addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    let dt = t0.elapsed();
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stream, dt))
}

/// One connect cycle; returns the duration of `connect` (the close follows, untimed).
fn connect_once(addr: &libc::sockaddr_in) -> io::Result<Duration> {
    connect_rst(addr).map(|(_, dt)| dt)
}

/// The request of `http-cycle`: the static file of the proxy benchmark's upstream.
const HTTP_REQUEST: &[u8] = b"GET /small.txt HTTP/1.1\r\nHost: egress-bench\r\n\r\n";

/// The length of a complete HTTP response at the start of `buf` (headers and a body of
/// `Content-Length` bytes), or None while it is incomplete. Errors on a status other than 200.
fn response_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {head:?}"));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(bad("not a 200 response"));
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .ok_or_else(|| bad("no Content-Length"))?;
    let total = end + 4 + len;
    Ok((buf.len() >= total).then_some(total))
}

/// One HTTP cycle; returns its duration.
fn http_cycle(addr: &libc::sockaddr_in) -> io::Result<Duration> {
    let t0 = Instant::now();
    let (mut stream, _) = connect_rst(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    io::Write::write_all(&mut stream, HTTP_REQUEST)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = io::Read::read(&mut stream, &mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed before the whole response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if response_len(&buf)?.is_some() {
            break;
        }
    }
    // The close (a RST, SO_LINGER 0) is part of the cycle.
    drop(stream);
    Ok(t0.elapsed())
}

fn sendto(fd: i32, addr: &libc::sockaddr_in) -> io::Result<()> {
    let payload = *b"egress-bench-udp";
    // SAFETY: payload and addr are valid for the sizes given.
    let rc = unsafe {
        libc::sendto(
            fd,
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn summarize(mut lat: Vec<Duration>, elapsed: Duration) -> SideReport {
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_nanos() as u64
    };
    SideReport {
        ops: lat.len(),
        elapsed_ns: elapsed.as_nanos() as u64,
        p50_ns: pct(0.50),
        p90_ns: pct(0.90),
        p99_ns: pct(0.99),
        max_ns: lat.last().map_or(0, |d| d.as_nanos() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_are_complete_by_content_length() {
        let ok = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 3\r\n\r\nab";
        assert_eq!(response_len(ok).unwrap(), None);
        let mut full = ok.to_vec();
        full.push(b'c');
        assert_eq!(response_len(&full).unwrap(), Some(full.len()));
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(response_len(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(response_len(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn batches_alternate_abba() {
        assert_eq!(schedule(2, 4), [0, 1, 1, 0, 0, 1, 1, 0]);
        assert_eq!(schedule(1, 3), [0, 0, 0]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_nanos).collect();
        let r = summarize(lat, Duration::from_micros(1));
        assert_eq!((r.p50_ns, r.p90_ns, r.p99_ns, r.max_ns), (50, 90, 99, 100));
        assert_eq!(r.ops, 100);
    }
}
