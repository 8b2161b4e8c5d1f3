//! Runs inside a test cgroup and reports what the kernel said to its connects and sends.
//!
//! ```text
//! egress-probe MODE ADDR [--payload TEXT] [--move-to CGROUP_DIR] [--loop-until FILE]
//!              [--spray N] [--connect] [--exchange]
//! egress-probe dns-connect|dns-query|dns-garbage|dns-expiry|sleep ...
//! ```
//!
//! See `egress_tests::probe` for the modes and options, `egress_tests::dns_client` for the
//! DNS subcommands (which print their own JSON lines). Prints one JSON line
//! (`egress_tests::probe::Outcome`) and exits 0 whatever the kernel answered; a bad command line
//! exits 2.

use std::{
    io::{self, Write as _},
    mem::size_of,
    net::{IpAddr, SocketAddr, SocketAddrV6},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use egress_tests::probe::{Mode, Outcome, Step};

/// Upper bound for `--loop-until`, in case the test that started the loop died.
const MAX_LOOP: Duration = Duration::from_secs(120);

struct Args {
    mode: Mode,
    addr: SocketAddr,
    payload: String,
    move_to: Option<PathBuf>,
    loop_until: Option<PathBuf>,
    spray: Option<u32>,
    connect: bool,
    exchange: bool,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "egress-probe: {msg}\nusage: egress-probe tcp|udp|tcp6|udp6|udp-serve|tcp-serve ADDR [--payload TEXT] [--move-to CGROUP_DIR] [--loop-until FILE] [--spray N] [--connect] [--exchange]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("missing MODE")?;
    let mode = Mode::parse(&mode).ok_or(format!("unknown mode {mode:?}"))?;
    let addr = it.next().ok_or("missing ADDR")?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let mut args = Args {
        mode,
        addr,
        payload: "egress-probe".into(),
        move_to: None,
        loop_until: None,
        spray: None,
        connect: false,
        exchange: false,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--connect" => args.connect = true,
            "--exchange" => args.exchange = true,
            "--payload" => args.payload = value()?,
            "--move-to" => args.move_to = Some(value()?.into()),
            "--loop-until" => args.loop_until = Some(value()?.into()),
            "--spray" => {
                let v = value()?;
                args.spray = Some(v.parse().map_err(|e| format!("bad --spray {v:?}: {e}"))?);
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if args.move_to.is_some() && args.loop_until.is_some() {
        return Err("--move-to and --loop-until do not go together".into());
    }
    if args.spray.is_some() && (args.move_to.is_some() || args.loop_until.is_some()) {
        return Err("--spray goes with neither --move-to nor --loop-until".into());
    }
    Ok(args)
}

/// The destination as the socket will see it: IPv4 addresses become `::ffff:a.b.c.d` for the
/// IPv6 modes.
fn destination(mode: Mode, addr: SocketAddr) -> SocketAddr {
    match (mode, addr) {
        (Mode::Tcp6 | Mode::Udp6, SocketAddr::V4(a)) => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        _ => addr,
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

struct Failure {
    step: Step,
    err: io::Error,
}

fn fail(step: Step) -> impl FnOnce(io::Error) -> Failure {
    move |err| Failure { step, err }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn open_socket(mode: Mode, dest: &SocketAddr) -> io::Result<OwnedFd> {
    let family = match dest.ip() {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    let ty = if mode.is_tcp() {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: plain syscall; the descriptor is owned below.
    let fd = cvt(unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if mode.is_tcp() {
        // Bound the connect (a lost SYN would otherwise retry for a minute) and reset instead of
        // lingering in TIME_WAIT, so that tight loops do not run out of ports.
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)?;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)?;
    }
    Ok(fd)
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: v points to a T of the size given.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Moves this process into the cgroup v2 directory `dir`.
fn move_self(dir: &std::path::Path) -> io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
}

/// The connect or sendto itself, timed.
fn act(args: &Args, fd: &OwnedFd, dest: &SocketAddr) -> (Result<(), Failure>, Duration) {
    let (ss, len) = sockaddr(dest);
    let sa = (&raw const ss).cast::<libc::sockaddr>();
    let start = Instant::now();
    let r = if args.mode.is_tcp() {
        // SAFETY: sa/len describe a valid socket address.
        cvt(unsafe { libc::connect(fd.as_raw_fd(), sa, len) })
            .map(|_| ())
            .map_err(fail(Step::Connect))
    } else if args.connect {
        let p = args.payload.as_bytes();
        // SAFETY: sa/len describe a valid socket address; p is valid for the send.
        cvt(unsafe { libc::connect(fd.as_raw_fd(), sa, len) })
            .map_err(fail(Step::Connect))
            .and_then(|_| {
                let rc = unsafe { libc::send(fd.as_raw_fd(), p.as_ptr().cast(), p.len(), 0) };
                if rc < 0 {
                    Err(fail(Step::Sendto)(io::Error::last_os_error()))
                } else {
                    Ok(())
                }
            })
    } else {
        let p = args.payload.as_bytes();
        // SAFETY: p and sa/len are valid for the call.
        let rc = unsafe { libc::sendto(fd.as_raw_fd(), p.as_ptr().cast(), p.len(), 0, sa, len) };
        if rc < 0 {
            Err(fail(Step::Sendto)(io::Error::last_os_error()))
        } else {
            Ok(())
        }
    };
    (r, start.elapsed())
}

/// The `k`-th of `--spray`'s destinations: ADDR's port plus `k`, wrapping through ports
/// 1024-65023, and the next address after each wrap.
fn sprayed(base: &SocketAddr, k: u32) -> SocketAddr {
    const SPAN: u32 = 64_000;
    let port = 1024 + ((u32::from(base.port()).saturating_sub(1024) + k) % SPAN) as u16;
    let bump = k / SPAN;
    let ip = match base.ip() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(bump)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(u128::from(bump))).into()),
    };
    SocketAddr::new(ip, port)
}

/// `--spray N`: one socket, N sends (or connects, one socket each) to N distinct destinations.
/// The outcome counts attempts, successes and errnos; its single fields describe the last one.
fn spray(args: &Args, dest: &SocketAddr, n: u32, out: &mut Outcome) {
    let shared = if args.mode.is_tcp() {
        None
    } else {
        match open_socket(args.mode, dest) {
            Ok(fd) => Some(fd),
            Err(e) => {
                record(out, Err(fail(Step::Socket)(e)), Duration::ZERO);
                return;
            }
        }
    };
    for k in 0..n {
        let to = sprayed(dest, k);
        let (r, took) = match &shared {
            Some(fd) => act(args, fd, &to),
            None => attempt(args, &to),
        };
        record(out, r, took);
    }
}

/// Adds one attempt's result to the outcome.
fn record(out: &mut Outcome, r: Result<(), Failure>, took: Duration) {
    let us = took.as_micros() as u64;
    out.attempts += 1;
    out.elapsed_us = us;
    out.max_elapsed_us = out.max_elapsed_us.max(us);
    match r {
        Ok(()) => {
            out.ok = true;
            out.errno = None;
            out.failed_at = None;
            out.error = None;
            out.successes += 1;
        }
        Err(f) => {
            let errno = f.err.raw_os_error().unwrap_or(-1);
            out.ok = false;
            out.errno = Some(errno);
            out.failed_at = Some(f.step);
            out.error = Some(f.err.to_string());
            *out.errnos.entry(errno).or_default() += 1;
        }
    }
}

/// How long a server probe waits for its one client.
const SERVE_WAIT: Duration = Duration::from_secs(5);

/// `udp-serve` / `tcp-serve`: listen on `addr` (prints `started` on stderr), serve one client;
/// the result is that of the answer (`sendto`, or the write on the accepted connection).
fn serve(args: &Args, addr: &SocketAddr) -> (Result<(), Failure>, Duration) {
    use std::net::{TcpListener, UdpSocket};
    let answer = args.payload.as_bytes();
    if args.mode.is_tcp() {
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => return (Err(fail(Step::Socket)(e)), Duration::ZERO),
        };
        eprintln!("started");
        let _ = l.set_nonblocking(true);
        let deadline = Instant::now() + SERVE_WAIT;
        let mut conn = loop {
            match l.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return (Err(fail(Step::Connect)(e)), Duration::ZERO),
            }
        };
        let _ = conn.set_nonblocking(false);
        let t0 = Instant::now();
        let r = conn.write_all(answer).map_err(fail(Step::Sendto));
        (r, t0.elapsed())
    } else {
        let sock = match UdpSocket::bind(addr) {
            Ok(s) => s,
            Err(e) => return (Err(fail(Step::Socket)(e)), Duration::ZERO),
        };
        eprintln!("started");
        let _ = sock.set_read_timeout(Some(SERVE_WAIT));
        let mut buf = [0u8; 512];
        let from = match sock.recv_from(&mut buf) {
            Ok((_, from)) => from,
            Err(e) => return (Err(fail(Step::Connect)(e)), Duration::ZERO),
        };
        let t0 = Instant::now();
        let r = sock
            .send_to(answer, from)
            .map(|_| ())
            .map_err(fail(Step::Sendto));
        (r, t0.elapsed())
    }
}

/// How long `--exchange` waits for the answer.
const EXCHANGE_WAIT: Duration = Duration::from_secs(2);

/// `--exchange`: one attempt, then (if it worked) the payload on a TCP connection, the answer,
/// its source and the socket's peer, into `out`.
fn exchange(args: &Args, dest: &SocketAddr, out: &mut Outcome) {
    use std::io::{Read as _, Write as _};
    let fd = match open_socket(args.mode, dest) {
        Ok(fd) => fd,
        Err(e) => return record(out, Err(fail(Step::Socket)(e)), Duration::ZERO),
    };
    let (r, took) = act(args, &fd, dest);
    let ok = r.is_ok();
    record(out, r, took);
    if !ok {
        return;
    }
    let mut buf = [0u8; 512];
    let answer = if args.mode.is_tcp() {
        let mut s = std::net::TcpStream::from(fd);
        out.peer = s.peer_addr().ok();
        let _ = s.set_read_timeout(Some(EXCHANGE_WAIT));
        s.write_all(args.payload.as_bytes())
            .and_then(|()| s.read(&mut buf))
    } else {
        let s = std::net::UdpSocket::from(fd);
        out.peer = s.peer_addr().ok();
        let _ = s.set_read_timeout(Some(EXCHANGE_WAIT));
        s.recv_from(&mut buf).map(|(n, from)| {
            out.reply_from = Some(from);
            n
        })
    };
    match answer {
        Ok(n) => out.reply = Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) => record(out, Err(fail(Step::Recv)(e)), took),
    }
}

/// One attempt: socket, optional move, connect/send; the socket closes on return.
fn attempt(args: &Args, dest: &SocketAddr) -> (Result<(), Failure>, Duration) {
    let fd = match open_socket(args.mode, dest) {
        Ok(fd) => fd,
        Err(e) => return (Err(fail(Step::Socket)(e)), Duration::ZERO),
    };
    if let Some(dir) = &args.move_to
        && let Err(e) = move_self(dir)
    {
        return (Err(fail(Step::Move)(e)), Duration::ZERO);
    }
    act(args, &fd, dest)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv
        .first()
        .is_some_and(|a| a.starts_with("dns-") || a == "sleep")
    {
        return match egress_tests::dns_client::run(&argv) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => usage(&msg),
        };
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => return usage(&msg),
    };
    let dest = destination(args.mode, args.addr);
    let mut out = Outcome {
        pid: std::process::id(),
        ok: false,
        errno: None,
        failed_at: None,
        error: None,
        elapsed_us: 0,
        attempts: 0,
        successes: 0,
        errnos: Default::default(),
        max_elapsed_us: 0,
        reply: None,
        reply_from: None,
        peer: None,
    };
    let started = Instant::now();
    if args.mode.is_server() {
        let (r, took) = serve(&args, &dest);
        record(&mut out, r, took);
    }
    if let Some(n) = args.spray {
        spray(&args, &dest, n, &mut out);
    }
    if args.exchange {
        exchange(&args, &dest, &mut out);
    }
    while args.spray.is_none() && !args.mode.is_server() && !args.exchange {
        let (r, took) = attempt(&args, &dest);
        record(&mut out, r, took);
        let Some(stop) = &args.loop_until else { break };
        if out.attempts == 1 {
            eprintln!("started");
        }
        if stop.exists() || started.elapsed() > MAX_LOOP {
            break;
        }
    }
    let line = serde_json::to_string(&out).expect("serialising the outcome");
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    ExitCode::SUCCESS
}
