//! Reading the destination out of a `bpf_sock_addr` context.

use aya_ebpf::programs::SockAddrContext;

/// A destination as the policy judges it.
#[derive(Clone, Copy)]
pub enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Clone, Copy)]
pub struct Dest {
    pub addr: Addr,
    /// Host byte order.
    pub port: u16,
}

/// The port in the context, host byte order.
#[inline(always)]
pub fn port(ctx: &SockAddrContext) -> u16 {
    // SAFETY: the kernel hands every sock_addr program a valid context; the verifier checks the
    // access (user_port is read with a 4-byte load, the port is in its low 16 bits, big-endian).
    let raw = unsafe { (*ctx.sock_addr).user_port };
    u16::from_be(raw as u16)
}

/// Destination of an IPv4 connect or sendmsg.
#[inline(always)]
pub fn v4(ctx: &SockAddrContext) -> Dest {
    // SAFETY: as in `port`.
    let ip = unsafe { (*ctx.sock_addr).user_ip4 };
    Dest {
        addr: Addr::V4(ip.to_ne_bytes()),
        port: port(ctx),
    }
}

/// Destination of an IPv6 connect or sendmsg; `::ffff:a.b.c.d` is judged as IPv4 `a.b.c.d`.
#[inline(always)]
pub fn v6(ctx: &SockAddrContext) -> Dest {
    // SAFETY: as in `port`; each word of user_ip6 is read with its own 4-byte load.
    let w = unsafe {
        let sa = ctx.sock_addr;
        [
            (*sa).user_ip6[0],
            (*sa).user_ip6[1],
            (*sa).user_ip6[2],
            (*sa).user_ip6[3],
        ]
    };
    let port = port(ctx);
    if w[0] == 0 && w[1] == 0 && w[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
        return Dest {
            addr: Addr::V4(w[3].to_ne_bytes()),
            port,
        };
    }
    let mut a = [0u8; 16];
    a[0..4].copy_from_slice(&w[0].to_ne_bytes());
    a[4..8].copy_from_slice(&w[1].to_ne_bytes());
    a[8..12].copy_from_slice(&w[2].to_ne_bytes());
    a[12..16].copy_from_slice(&w[3].to_ne_bytes());
    Dest {
        addr: Addr::V6(a),
        port,
    }
}
