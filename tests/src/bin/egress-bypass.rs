//! One attempt to send a marked packet past the connect and sendmsg hooks; see
//! `egress_tests::bypass`. With `--after FILE` it makes its socket, says `socket` on stderr,
//! and sends once FILE exists (20 s at most). Prints one JSON line and exits 0 whatever the kernel answered; a bad
//! command line exits 2.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::ExitCode,
    sync::OnceLock,
    time::{Duration, Instant},
};

use egress_tests::bypass::{Attempt, Kind, Step};

const IPPROTO_UDPLITE: i32 = 136;
const IPPROTO_SCTP: i32 = 132;
const IP_RETOPTS: i32 = 7;
const ETH_P_ALL: u16 = 3;
const ETH_P_IP: u16 = 0x0800;

type Failed = (Step, io::Error);

/// `--after FILE`.
static AFTER: OnceLock<PathBuf> = OnceLock::new();
/// `--dev NAME`: the interface an `AF_PACKET` frame goes out of (`lo` if not given).
static DEV: OnceLock<String> = OnceLock::new();

/// With `--after`, waits for its file before the first send.
fn wait_after() {
    let Some(file) = AFTER.get() else { return };
    eprintln!("socket");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!(
            "usage: egress-bypass {} ADDR MARKER [--via ADDR] [--after FILE] [--dev NAME]",
            Kind::ALL.map(Kind::name).join("|")
        );
        ExitCode::from(2)
    };
    let (Some(kind), Some(addr), Some(marker)) = (
        args.first().and_then(|k| Kind::parse(k)),
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2),
    ) else {
        return usage();
    };
    let mut via = addr;
    let mut rest = args[3..].iter();
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next()) {
            ("--via", Some(v)) => match v.parse() {
                Ok(v) => via = v,
                Err(_) => return usage(),
            },
            ("--after", Some(f)) => {
                let _ = AFTER.set(PathBuf::from(f));
            }
            ("--dev", Some(d)) => {
                let _ = DEV.set(d.clone());
            }
            _ => return usage(),
        }
    }
    let result = attempt(kind, addr, via, marker.as_bytes());
    let (failed_at, errno) = match &result {
        Ok(()) => (None, None),
        Err((step, e)) => (Some(*step), e.raw_os_error()),
    };
    let out = Attempt {
        kind,
        pid: std::process::id(),
        sent: result.is_ok(),
        failed_at,
        errno,
    };
    println!(
        "{}",
        serde_json::to_string(&out).expect("an attempt serializes")
    );
    ExitCode::SUCCESS
}

fn attempt(kind: Kind, addr: SocketAddr, via: SocketAddr, marker: &[u8]) -> Result<(), Failed> {
    let v6 = addr.is_ipv6();
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    match kind {
        Kind::RawIcmp | Kind::Ping => {
            let ty = if kind == Kind::Ping {
                libc::SOCK_DGRAM
            } else {
                libc::SOCK_RAW
            };
            let proto = if v6 {
                libc::IPPROTO_ICMPV6
            } else {
                libc::IPPROTO_ICMP
            };
            let fd = socket(family, ty, proto)?;
            let mut msg = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0x12, 0x34, 0, 1];
            msg.extend_from_slice(marker);
            if !v6 {
                let sum = checksum(&msg);
                msg[2..4].copy_from_slice(&sum.to_be_bytes());
            }
            send_to(&fd, &msg, addr, None)
        }
        Kind::RawHdrincl => {
            let IpAddr::V4(dst) = addr.ip() else {
                return Err((Step::Socket, io::Error::from_raw_os_error(libc::EINVAL)));
            };
            let fd = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            send_to(&fd, &ipv4_udp(dst, addr.port(), marker), addr, None)
        }
        Kind::Udplite | Kind::Sctp => {
            let (ty, proto) = if kind == Kind::Sctp {
                (libc::SOCK_STREAM, IPPROTO_SCTP)
            } else {
                (libc::SOCK_DGRAM, IPPROTO_UDPLITE)
            };
            let fd = socket(family, ty, proto)?;
            let (sa, len) = sockaddr(addr);
            wait_after();
            // SAFETY: a valid socket and a sockaddr of `len` bytes.
            if unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) } != 0 {
                return Err((Step::Connect, io::Error::last_os_error()));
            }
            // SAFETY: a valid socket and buffer.
            let n = unsafe { libc::send(fd.as_raw_fd(), marker.as_ptr().cast(), marker.len(), 0) };
            if n < 0 {
                return Err((Step::Send, io::Error::last_os_error()));
            }
            Ok(())
        }
        Kind::Packet => {
            let IpAddr::V4(dst) = addr.ip() else {
                return Err((Step::Socket, io::Error::from_raw_os_error(libc::EINVAL)));
            };
            let fd = socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ETH_P_ALL.to_be()),
            )?;
            let dev = CString::new(DEV.get().map_or("lo", String::as_str))
                .map_err(|_| (Step::Socket, io::Error::from_raw_os_error(libc::EINVAL)))?;
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
            // SAFETY: plain data, zeroed is valid.
            let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            ll.sll_family = libc::AF_PACKET as u16;
            ll.sll_protocol = ETH_P_IP.to_be();
            ll.sll_ifindex = ifindex as i32;
            ll.sll_halen = 6;
            ll.sll_addr = [0xff; 8];
            // To the broadcast address, so that a bridge floods it to every port.
            let mut frame = vec![0xffu8; 6];
            frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            frame.extend_from_slice(&ETH_P_IP.to_be_bytes());
            // A frame bypasses the IP stack: the header is whole, source and checksum too.
            let mut packet = ipv4_udp(dst, addr.port(), marker);
            packet[12..16].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
            let sum = checksum(&packet[..20]);
            packet[10..12].copy_from_slice(&sum.to_be_bytes());
            frame.extend_from_slice(&packet);
            wait_after();
            // SAFETY: a valid socket, buffer and sockaddr_ll.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n < 0 {
                return Err((Step::Send, io::Error::last_os_error()));
            }
            Ok(())
        }
        Kind::IpOptions | Kind::CmsgOptions => {
            let IpAddr::V4(hop) = addr.ip() else {
                return Err((Step::Socket, io::Error::from_raw_os_error(libc::EINVAL)));
            };
            let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP)?;
            // A loose source route through `hop` (LSRR, length 7, pointer 4), padded with NOP.
            let mut opts = vec![131u8, 7, 4];
            opts.extend_from_slice(&hop.octets());
            opts.push(1);
            if kind == Kind::IpOptions {
                setsockopt(&fd, libc::IPPROTO_IP, libc::IP_OPTIONS, &opts)?;
                send_to(&fd, marker, via, None)
            } else {
                send_to(
                    &fd,
                    marker,
                    via,
                    Some((libc::IPPROTO_IP, IP_RETOPTS, &opts)),
                )
            }
        }
        Kind::Rthdr6 => {
            let IpAddr::V6(hop) = addr.ip() else {
                return Err((Step::Socket, io::Error::from_raw_os_error(libc::EINVAL)));
            };
            let fd = socket(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP)?;
            // A segment routing header (type 4) with one segment, `hop`.
            let mut rthdr = vec![0u8, 2, 4, 0, 0, 0, 0, 0];
            rthdr.extend_from_slice(&hop.octets());
            setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_RTHDR, &rthdr)?;
            send_to(&fd, marker, via, None)
        }
    }
}

fn socket(family: i32, ty: i32, proto: i32) -> Result<OwnedFd, Failed> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err((Step::Socket, io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt(fd: &OwnedFd, level: i32, name: i32, value: &[u8]) -> Result<(), Failed> {
    // SAFETY: a valid socket and a buffer of `value.len()` bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as u32,
        )
    };
    if rc != 0 {
        return Err((Step::Setsockopt, io::Error::last_os_error()));
    }
    Ok(())
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: plain data, zeroed is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            (ss, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            (ss, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// `sendmsg` of `data` to `to`, with one control message if given.
fn send_to(
    fd: &OwnedFd,
    data: &[u8],
    to: SocketAddr,
    cmsg: Option<(i32, i32, &[u8])>,
) -> Result<(), Failed> {
    wait_after();
    let (mut sa, len) = sockaddr(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: plain data, zeroed is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut sa).cast();
    msg.msg_namelen = len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some((level, ty, value)) = cmsg {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is arithmetic.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(value.len() as u32) } as usize;
        // SAFETY: the control buffer holds CMSG_SPACE(value.len()) bytes (128 >= that).
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = level;
            (*c).cmsg_type = ty;
            (*c).cmsg_len = libc::CMSG_LEN(value.len() as u32) as usize;
            std::ptr::copy_nonoverlapping(value.as_ptr(), libc::CMSG_DATA(c), value.len());
        }
    }
    // SAFETY: every pointer of `msg` is valid for the call.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err((Step::Send, io::Error::last_os_error()));
    }
    Ok(())
}

/// An IPv4/UDP packet to `dst:port` carrying `payload` (source and checksum left to the
/// kernel where it fills them).
fn ipv4_udp(dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&4242u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
