//! The recvmsg and getpeername programs: an address in the context that is the DNS proxy's
//! becomes the destination the socket's redirected DNS was sent to, so that the answer (and
//! the peer of a connected socket) appears to come from the address the application asked.
//! Anything that is not the proxy's address costs one compare and no map lookup.

use aya_ebpf::{helpers::bpf_get_socket_cookie, programs::SockAddrContext};
use egress_common::dns::{DnsOrigin, LOOPBACK_V6, PROXY_V4, PROXY_V4_MAPPED};

use crate::{dest, dns::words, maps::DNS_ORIGIN};

/// What recvmsg and getpeername programs return: the kernel accepts nothing else.
pub const PASS: i32 = 1;

/// The origin of the socket's redirected DNS, if it went to the proxy port in the context.
#[inline(always)]
fn origin(ctx: &SockAddrContext) -> Option<DnsOrigin> {
    // SAFETY: the helper takes the program's context, which it is.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: the value is plain data, copied out at once.
    let o = (unsafe { DNS_ORIGIN.get(cookie) }).copied()?;
    (o.proxy_port == dest::port(ctx)).then_some(o)
}

/// The IPv4 socket's peer or source address.
#[inline(always)]
pub fn v4(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: a field of the valid context.
    if unsafe { (*sa).user_ip4 } != u32::from_ne_bytes(PROXY_V4) {
        return PASS;
    }
    if let Some(o) = origin(ctx) {
        // SAFETY: the address fields of a recvmsg or getpeername context are writable with
        // 4-byte stores.
        unsafe {
            (*sa).user_ip4 = u32::from_ne_bytes(o.addr4());
            (*sa).user_port = u32::from(o.port.to_be());
        }
    }
    PASS
}

/// The IPv6 socket's peer or source address (`::1` or the v4-mapped proxy address).
#[inline(always)]
pub fn v6(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    let (lo, mapped) = (words(LOOPBACK_V6), words(PROXY_V4_MAPPED));
    // SAFETY: fields of the valid context, each read with its own 4-byte load.
    let w = unsafe {
        [
            (*sa).user_ip6[0],
            (*sa).user_ip6[1],
            (*sa).user_ip6[2],
            (*sa).user_ip6[3],
        ]
    };
    if w[0] != 0 || w[1] != 0 || (w != lo && w != mapped) {
        return PASS;
    }
    if let Some(o) = origin(ctx) {
        let a = words(o.addr6());
        // SAFETY: as in `v4`.
        unsafe {
            (*sa).user_ip6[0] = a[0];
            (*sa).user_ip6[1] = a[1];
            (*sa).user_ip6[2] = a[2];
            (*sa).user_ip6[3] = a[3];
            (*sa).user_port = u32::from(o.port.to_be());
        }
    }
    PASS
}
