//! The backstop: what the connect and sendmsg hooks never see, for policed cgroups only (an
//! unpoliced cgroup passes after the one lookup every program starts with).
//!
//! - `sock_create` (inet sockets): a policed cgroup may make TCP (`SOCK_STREAM`/TCP) and UDP
//!   (`SOCK_DGRAM`/UDP) sockets only. Raw sockets, ping sockets (`SOCK_DGRAM`/ICMP, which need
//!   no capability), UDP-Lite, SCTP, MPTCP and every other protocol are refused with `EPERM`:
//!   no sock_addr hook judges what they send.
//! - LSM `socket_create` (every address family, where the kernel runs the BPF LSM): a policed
//!   cgroup may make unix, inet, inet6, netlink and alg sockets only; `AF_PACKET`, `AF_XDP`,
//!   `AF_VSOCK` and the rest are refused with `EPERM`.
//! - `setsockopt`: a source route (`IP_OPTIONS`, `IPV6_RTHDR` and their RFC 2292 forms) is
//!   refused with `EPERM`: the hooks judge the address given, a source-routed packet goes to
//!   the route's first hop.
//! - `cgroup_skb/egress`: a packet of a policed cgroup's socket leaves only if it is TCP or
//!   UDP without a source route (judged by the hooks at connect or send, never again here, so
//!   a learned address that expires cuts no established connection), an ICMP error, echo
//!   reply, neighbour discovery or MLD message (the kernel's own, for sockets made before the
//!   cgroup was policed or for its namespace), or anything else to a destination a rule
//!   allows on any port. IPv4 options and IPv6 routing headers that came in through
//!   `sendmsg` ancillary data are dropped here.
//!
//! Each refusal or drop is counted and reported like a denial; in audit mode it is reported
//! and let through.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_skb_cgroup_id},
    programs::{LsmContext, SkBuffContext, SockContext, SockoptContext},
};
use egress_common::{
    AF_INET, AF_INET6,
    event::{Hook, Reason, Verdict},
    policy::{CgroupPolicy, Mode},
    rule::ANY_PORT,
    stats,
};

use crate::{
    dest::{Addr, Dest},
    judge::allowed,
    maps::CGROUP_POLICY,
    report::{count, send, send_without_task, set_destination},
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;
const EPERM: i32 = 1;

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_IP: i32 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_IPV6: i32 = 41;
const IPPROTO_ICMPV6: u8 = 58;

/// Address families a policed cgroup may make sockets of: unix, inet, netlink, alg, inet6.
const AF_UNIX: i32 = 1;
const AF_NETLINK: i32 = 16;
const AF_ALG: i32 = 38;

const IP_OPTIONS: i32 = 4;
const IPV6_2292RTHDR: i32 = 5;
const IPV6_2292PKTOPTIONS: i32 = 6;
const IPV6_RTHDR: i32 = 57;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// IPv6 extension headers walked past before the upper-layer header.
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_DEST_OPTS: u8 = 60;
/// At most this many extension headers are walked; a packet with more is judged as unjudged.
const MAX_EXT_HEADERS: usize = 4;

/// The policy of a policed cgroup, if `cgroup_id` is one.
#[inline(always)]
fn policed(cgroup_id: u64) -> Option<CgroupPolicy> {
    // SAFETY: the value is plain data, copied out at once.
    unsafe { CGROUP_POLICY.get(cgroup_id) }.copied()
}

/// The verdict on something a policed cgroup may not do: denied, or audited in audit mode.
/// Counts it.
#[inline(always)]
fn verdict_on(policy: &CgroupPolicy, reason: Reason) -> Verdict {
    let verdict = match policy.mode() {
        Mode::Audit => Verdict::Audited,
        Mode::Enforce => Verdict::Denied,
    };
    count(stats::slot(verdict, reason));
    verdict
}

/// `cgroup/sock_create`: refuses every inet socket but TCP and UDP for a policed cgroup.
#[inline(always)]
pub fn sock_create(ctx: &SockContext) -> i32 {
    // SAFETY: fields of the valid context.
    let (family, ty, protocol) = unsafe {
        let sk = ctx.sock;
        ((*sk).family, (*sk).type_, (*sk).protocol)
    };
    let tcp = ty == SOCK_STREAM && protocol == u32::from(IPPROTO_TCP);
    let udp = ty == SOCK_DGRAM && protocol == u32::from(IPPROTO_UDP);
    if tcp || udp {
        return ALLOW;
    }
    // SAFETY: a helper with no arguments, valid in cgroup programs.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let Some(policy) = policed(cgroup_id) else {
        return ALLOW;
    };
    let socket = (family as u8, ty as u8, protocol as u8);
    match refuse_socket(cgroup_id, &policy, socket, Hook::SockCreate) {
        Verdict::Audited => ALLOW,
        Verdict::Denied => DENY,
    }
}

/// Counts and reports a refused socket `(family, type, protocol)`; the verdict to apply.
#[inline(always)]
fn refuse_socket(
    cgroup_id: u64,
    policy: &CgroupPolicy,
    socket: (u8, u8, u8),
    hook: Hook,
) -> Verdict {
    let verdict = verdict_on(policy, Reason::SocketRefused);
    send(cgroup_id, policy.policy_id, |ev| {
        (ev.family, ev.sock_type, ev.protocol) = socket;
        ev.verdict = verdict as u8;
        ev.reason = Reason::SocketRefused as u8;
        ev.hook = hook as u8;
    });
    verdict
}

/// LSM `socket_create(family, type, protocol, kern)`: refuses the address families no hook
/// judges for a policed cgroup. Returns 0 or `-EPERM`.
#[inline(always)]
pub fn lsm_socket_create(ctx: &LsmContext) -> i32 {
    let (family, ty, protocol, kern, earlier): (i32, i32, i32, i32, i32) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3), ctx.arg(4));
    if earlier != 0 {
        // An earlier program refused it already.
        return earlier;
    }
    if kern != 0
        || matches!(family, AF_UNIX | AF_NETLINK | AF_ALG)
        || family == i32::from(AF_INET)
        || family == i32::from(AF_INET6)
    {
        return 0;
    }
    // SAFETY: a helper with no arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let Some(policy) = policed(cgroup_id) else {
        return 0;
    };
    let socket = (family as u8, ty as u8, protocol as u8);
    match refuse_socket(cgroup_id, &policy, socket, Hook::SocketLsm) {
        Verdict::Audited => 0,
        Verdict::Denied => -EPERM,
    }
}

/// `cgroup/setsockopt`: refuses a source route for a policed cgroup.
#[inline(always)]
pub fn setsockopt(ctx: &SockoptContext) -> i32 {
    // SAFETY: fields of the valid context.
    let (level, optname, optlen) = unsafe {
        let o = ctx.sockopt;
        ((*o).level, (*o).optname, (*o).optlen)
    };
    let route = match level {
        IPPROTO_IP => optname == IP_OPTIONS,
        IPPROTO_IPV6 => matches!(optname, IPV6_RTHDR | IPV6_2292RTHDR | IPV6_2292PKTOPTIONS),
        _ => false,
    };
    // An empty value clears the option: nothing to refuse.
    if !route || optlen <= 0 {
        return ALLOW;
    }
    // SAFETY: a helper with no arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let Some(policy) = policed(cgroup_id) else {
        return ALLOW;
    };
    let verdict = verdict_on(&policy, Reason::SourceRoute);
    send(cgroup_id, policy.policy_id, |ev| {
        ev.family = if level == IPPROTO_IP {
            AF_INET
        } else {
            AF_INET6
        };
        ev.protocol = level as u8;
        ev.port = optname as u16;
        ev.verdict = verdict as u8;
        ev.reason = Reason::SourceRoute as u8;
        ev.hook = Hook::Setsockopt as u8;
    });
    match verdict {
        Verdict::Audited => ALLOW,
        Verdict::Denied => DENY,
    }
}

/// What the egress program makes of a packet.
enum Packet {
    /// TCP or UDP without a source route, or a control message of the kernel's.
    Judged,
    SourceRoute(Dest, u8),
    /// Another protocol: allowed only to a destination a rule allows on any port.
    Other(Dest, u8),
    /// Could not be read: dropped.
    Unreadable,
}

/// True for a TCP or UDP packet without IPv4 options or IPv6 extension headers, read straight
/// from the packet (no helper, no map): what nearly every packet is, so that the program costs
/// every cgroup, policed or not, a few instructions for it.
#[inline(always)]
fn plain_tcp_or_udp(ctx: &SkBuffContext) -> bool {
    // SAFETY: fields of the valid context; the reads below stay within [data, data_end), as
    // the verifier checks.
    unsafe {
        let skb = ctx.skb.skb;
        let data = (*skb).data as usize;
        let end = (*skb).data_end as usize;
        match u16::from_be((*skb).protocol as u16) {
            ETH_P_IP if data + 20 <= end => {
                let ver_ihl = *(data as *const u8);
                let protocol = *((data + 9) as *const u8);
                ver_ihl == 0x45 && (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP)
            }
            ETH_P_IPV6 if data + 40 <= end => {
                let next = *((data + 6) as *const u8);
                next == IPPROTO_TCP || next == IPPROTO_UDP
            }
            _ => false,
        }
    }
}

/// `cgroup_skb/egress`: see the module docs. 1 lets the packet go, 0 drops it.
#[inline(always)]
pub fn egress(ctx: &SkBuffContext) -> i32 {
    if plain_tcp_or_udp(ctx) {
        return ALLOW;
    }
    // SAFETY: the context's own socket buffer, valid for the program run.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let Some(policy) = policed(cgroup_id) else {
        return ALLOW;
    };
    let packet = match u16::from_be(ctx.skb.protocol() as u16) {
        ETH_P_IP => v4(ctx),
        ETH_P_IPV6 => v6(ctx),
        _ => Packet::Judged,
    };
    let (dest, protocol, reason) = match packet {
        Packet::Judged => return ALLOW,
        Packet::Other(dest, protocol) => {
            if allowed(&policy, &dest) {
                count(stats::ALLOWED);
                return ALLOW;
            }
            (dest, protocol, Reason::UnjudgedPacket)
        }
        Packet::SourceRoute(dest, protocol) => (dest, protocol, Reason::SourceRoute),
        Packet::Unreadable => (
            Dest {
                addr: Addr::V4([0; 4]),
                port: ANY_PORT,
            },
            0,
            Reason::UnjudgedPacket,
        ),
    };
    let verdict = verdict_on(&policy, reason);
    send_without_task(cgroup_id, policy.policy_id, |ev| {
        ev.protocol = protocol;
        ev.verdict = verdict as u8;
        ev.reason = reason as u8;
        ev.hook = Hook::Egress as u8;
        set_destination(ev, &dest);
    });
    match verdict {
        Verdict::Audited => ALLOW,
        Verdict::Denied => DENY,
    }
}

#[inline(always)]
fn v4(ctx: &SkBuffContext) -> Packet {
    let (Ok(ver_ihl), Ok(protocol), Ok(dst)) = (
        ctx.load::<u8>(0),
        ctx.load::<u8>(9),
        ctx.load::<[u8; 4]>(16),
    ) else {
        return Packet::Unreadable;
    };
    let dest = Dest {
        addr: Addr::V4(dst),
        port: ANY_PORT,
    };
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ihl != 20 {
        return Packet::SourceRoute(dest, protocol);
    }
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP => Packet::Judged,
        IPPROTO_ICMP => match ctx.load::<u8>(20) {
            // Echo reply, destination unreachable, time exceeded, parameter problem.
            Ok(0 | 3 | 11 | 12) => Packet::Judged,
            _ => Packet::Other(dest, protocol),
        },
        _ => Packet::Other(dest, protocol),
    }
}

#[inline(always)]
fn v6(ctx: &SkBuffContext) -> Packet {
    let (Ok(mut next), Ok(dst)) = (ctx.load::<u8>(6), ctx.load::<[u8; 16]>(24)) else {
        return Packet::Unreadable;
    };
    let dest = Dest {
        addr: Addr::V6(dst),
        port: ANY_PORT,
    };
    let mut off = 40usize;
    let mut i = 0;
    while i < MAX_EXT_HEADERS {
        match next {
            EXT_ROUTING => return Packet::SourceRoute(dest, next),
            EXT_HOP_BY_HOP | EXT_DEST_OPTS => {
                let (Ok(n), Ok(len)) = (ctx.load::<u8>(off), ctx.load::<u8>(off + 1)) else {
                    return Packet::Unreadable;
                };
                next = n;
                off += (usize::from(len) + 1) * 8;
            }
            EXT_FRAGMENT => {
                let Ok(n) = ctx.load::<u8>(off) else {
                    return Packet::Unreadable;
                };
                next = n;
                off += 8;
            }
            _ => break,
        }
        i += 1;
    }
    match next {
        IPPROTO_TCP | IPPROTO_UDP => Packet::Judged,
        IPPROTO_ICMPV6 => match ctx.load::<u8>(off) {
            // Errors (1-4), echo reply (129), MLD (130-132, 143), neighbour discovery
            // (133-137).
            Ok(1..=4 | 129..=137 | 143) => Packet::Judged,
            _ => Packet::Other(dest, next),
        },
        _ => Packet::Other(dest, next),
    }
}
