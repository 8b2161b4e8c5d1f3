//! The DNS redirect of the connect and sendmsg programs: a policed cgroup's TCP or UDP
//! destination on port 53 goes to its DNS proxy, unless a rule names it with port 53.

use aya_ebpf::{
    helpers::{bpf_bind, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use egress_common::{
    AF_INET,
    dns::{DnsOrigin, PROXY_V4, PROXY_V4_MAPPED, REDIRECT_V6_LOOPBACK, peer_addr},
    event::Hook,
    policy::{CgroupPolicy, FLAG_ANY_PORT_ONLY4, FLAG_ANY_PORT_ONLY6, FLAG_CIDR4, FLAG_CIDR6},
    rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey},
    stats,
};

use crate::{
    dest::{Addr, Dest},
    judge::{cidr4, cidr6},
    maps::{ALLOW_V4, ALLOW_V6, DNS_ORIGIN, DNS_PEER, DNS_REDIRECT},
    report::count,
};

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

/// What became of a port-53 destination.
pub enum Outcome {
    /// Allowed: rewritten to the proxy, or named by a rule.
    Allow,
    /// Denied without an event: its origin could not be stored (counted).
    Deny,
    /// The policy has no DNS redirect: judged like a denied destination.
    NotReady,
}

/// Redirects `dest` (port 53, of a policed cgroup that is neither unclassified nor denied
/// everything) to the policy's proxy. None for a protocol other than TCP and UDP: judged by the
/// rules.
///
/// The kernel refuses a sendmsg6 whose IPv6 destination a program rewrote to a v4-mapped one
/// (`udpv6_sendmsg`: ENOTSUPP), so an unconnected UDP send to an IPv6 address needs the proxy
/// on `[::1]` ([`egress_common::dns::REDIRECT_V6_LOOPBACK`]); without it, it is not ready.
/// (A v4-mapped destination of an IPv6 UDP socket is sent by `udp_sendmsg`, through sendmsg4.)
#[inline(always)]
pub fn redirect(
    ctx: &SockAddrContext,
    hook: Hook,
    policy: &CgroupPolicy,
    dest: &Dest,
) -> Option<Outcome> {
    // SAFETY: a field of the valid context.
    let protocol = unsafe { (*ctx.sock_addr).protocol };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return None;
    }
    if named(policy, dest) {
        count(stats::DNS_DIRECT);
        return Some(Outcome::Allow);
    }
    // SAFETY: the value is plain data, copied out at once.
    let Some(r) = (unsafe { DNS_REDIRECT.get(policy.policy_id) }).copied() else {
        return Some(Outcome::NotReady);
    };
    let v6_socket = matches!(hook, Hook::Connect6 | Hook::Sendmsg6);
    if hook == Hook::Sendmsg6
        && matches!(dest.addr, Addr::V6(_))
        && r.flags & REDIRECT_V6_LOOPBACK == 0
    {
        return Some(Outcome::NotReady);
    }
    // SAFETY: the helper takes the program's context, which it is.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let origin = match dest.addr {
        Addr::V4(a) => DnsOrigin::v4(a, dest.port, r.port),
        Addr::V6(a) => DnsOrigin::v6(a, dest.port, r.port),
    };
    if DNS_ORIGIN.insert(cookie, origin, 0).is_err() {
        count(stats::DNS_ORIGIN_FAILED);
        return Some(Outcome::Deny);
    }
    let sa = ctx.sock_addr;
    // SAFETY: the destination fields of a connect or sendmsg context are writable; each is
    // written with a 4-byte store, the port in network order in its low 16 bits.
    unsafe {
        if v6_socket {
            let target = match dest.addr {
                Addr::V4(_) => PROXY_V4_MAPPED,
                Addr::V6(_) => r.proxy_v6(),
            };
            let w = words(target);
            (*sa).user_ip6[0] = w[0];
            (*sa).user_ip6[1] = w[1];
            (*sa).user_ip6[2] = w[2];
            (*sa).user_ip6[3] = w[3];
        } else {
            (*sa).user_ip4 = u32::from_ne_bytes(PROXY_V4);
        }
        (*sa).user_port = u32::from(r.port.to_be());
    }
    if !v6_socket {
        name_the_peer(ctx, hook, cookie, &origin);
    }
    count(stats::DNS_REDIRECTED);
    Some(Outcome::Allow)
}

/// `struct sockaddr_in`, for `bpf_bind`.
#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: u32,
    zero: [u8; 8],
}

/// Gives the redirected IPv4 socket the loopback source address [`peer_addr`] makes of its
/// cookie — bound at connect (port left to the kernel), the message's source at sendmsg — and
/// stores the destination asked under it, so the proxy forwards the question to the server the
/// application asked. A socket bound already keeps its address (`bpf_bind` fails): the proxy
/// then asks the container's resolvers.
#[inline(always)]
fn name_the_peer(ctx: &SockAddrContext, hook: Hook, cookie: u64, origin: &DnsOrigin) {
    let peer = u32::from_ne_bytes(peer_addr(cookie));
    if DNS_PEER.insert(peer, *origin, 0).is_err() {
        return;
    }
    let sa = ctx.sock_addr;
    if hook == Hook::Sendmsg4 {
        // SAFETY: msg_src_ip4 of a sendmsg4 context is writable with a 4-byte store.
        unsafe { (*sa).msg_src_ip4 = peer };
        return;
    }
    let mut bind = SockaddrIn {
        family: AF_INET as u16,
        port: 0,
        addr: peer,
        zero: [0; 8],
    };
    // SAFETY: the helper takes the program's context and a sockaddr_in of the given size on
    // the program's stack; its result (already bound: no effect) is ignored.
    unsafe {
        bpf_bind(
            sa,
            (&mut bind as *mut SockaddrIn).cast(),
            core::mem::size_of::<SockaddrIn>() as i32,
        );
    }
}

/// True if `dest` is the policy's DNS proxy itself (`127.255.53.1:port`). The kernel sends a
/// datagram of an IPv6 UDP socket connected to a v4-mapped address through `udp_sendmsg` with
/// that address, which runs sendmsg4: the socket a connect6 redirected sends to its proxy. Only
/// asked for a destination no rule allows, so it costs nothing on the way of the others.
#[inline(always)]
pub fn is_proxy(policy: &CgroupPolicy, dest: &Dest) -> bool {
    let Addr::V4(a) = dest.addr else {
        return false;
    };
    // SAFETY: the value is plain data, only its port is read.
    a == PROXY_V4
        && unsafe { DNS_REDIRECT.get(policy.policy_id) }.is_some_and(|r| r.port == dest.port)
}

/// An IPv6 address as the four words of `user_ip6`.
#[inline(always)]
pub fn words(a: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// True if a rule of `policy` names `dest` with its port (53) itself, an exact address or a
/// CIDR: the operator allowed that server explicitly. Rules that allow any port do not count.
#[inline(always)]
fn named(policy: &CgroupPolicy, dest: &Dest) -> bool {
    let id = policy.policy_id;
    let port = dest.port;
    // SAFETY (every `get` below): the value is only tested for presence.
    match dest.addr {
        Addr::V4(a) => {
            (policy.flags & FLAG_ANY_PORT_ONLY4 == 0
                && unsafe { ALLOW_V4.get(Ip4RuleKey::new(id, a, port)) }.is_some())
                || (policy.flags & FLAG_CIDR4 != 0 && cidr4(Cidr4Data::new(id, a, port)))
        }
        Addr::V6(a) => {
            (policy.flags & FLAG_ANY_PORT_ONLY6 == 0
                && unsafe { ALLOW_V6.get(Ip6RuleKey::new(id, a, port)) }.is_some())
                || (policy.flags & FLAG_CIDR6 != 0 && cidr6(Cidr6Data::new(id, a, port)))
        }
    }
}
