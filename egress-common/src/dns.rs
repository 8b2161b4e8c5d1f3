//! The DNS redirect: where the programs send a policed cgroup's port-53 traffic (the agent's
//! DNS proxy in the cgroup's own network namespace), and what they remember to make the answer
//! appear to come from the address the application asked.
//!
//! The agent writes one [`DnsRedirect`] per policy id into [`crate::maps::DNS_REDIRECT`]; the
//! connect and sendmsg programs rewrite a port-53 destination to the proxy and store the
//! [`DnsOrigin`] under the socket's cookie in [`crate::maps::DNS_ORIGIN`]; the recvmsg and
//! getpeername programs write the origin back over the proxy's address.

/// The DNS port the programs redirect.
pub const DNS_PORT: u16 = 53;

/// The proxy's IPv4 address: every network namespace's loopback route covers `127.0.0.0/8`,
/// and the agent binds it with `IP_FREEBIND`, so it needs no address configured anywhere.
pub const PROXY_V4: [u8; 4] = [127, 255, 53, 1];

/// The proxy's IPv4 address as an IPv4-mapped IPv6 address (`::ffff:127.255.53.1`), for IPv6
/// sockets: the target of a v4-mapped destination, and of every IPv6 destination when the
/// agent could not bind `[::1]` in the namespace.
pub const PROXY_V4_MAPPED: [u8; 16] = mapped(PROXY_V4);

/// The IPv6 loopback address `::1`.
pub const LOOPBACK_V6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// [`DnsRedirect::flags`] bit: the agent's proxy listens on `[::1]:port` too, so IPv6
/// destinations go there; without it they go to [`PROXY_V4_MAPPED`].
pub const REDIRECT_V6_LOOPBACK: u8 = 1 << 0;

/// The second octet of the first peer address (see [`peer_addr`]); peer addresses are
/// `127.128.0.0` to `127.254.255.255`, away from `127.0.0.1`, Docker's `127.0.0.11` and the
/// proxy's `127.255.53.1`.
pub const PEER_FIRST: u8 = 128;
/// How many values the second octet of a peer address takes.
pub const PEER_SPAN: u64 = 127;

/// The loopback source address the programs give a redirected IPv4 socket (`bpf_bind` at
/// connect, the message's source at sendmsg), made from its cookie: the DNS proxy sees it as
/// its client's address and finds the destination asked under it in
/// [`crate::maps::DNS_PEER`]. About eight million sockets get distinct addresses; an older
/// socket's entry is replaced by a newer one with the same address only after that many.
pub const fn peer_addr(cookie: u64) -> [u8; 4] {
    [
        127,
        PEER_FIRST + ((cookie >> 16) % PEER_SPAN) as u8,
        (cookie >> 8) as u8,
        cookie as u8,
    ]
}

/// True for an address [`peer_addr`] makes.
pub const fn is_peer_addr(a: [u8; 4]) -> bool {
    a[0] == 127 && a[1] >= PEER_FIRST && (a[1] as u64) < PEER_FIRST as u64 + PEER_SPAN
}

/// `a.b.c.d` as `::ffff:a.b.c.d`.
pub const fn mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Value of [`crate::maps::DNS_REDIRECT`], keyed by policy id (u32): where the port-53
/// traffic of the policy's cgroups goes. Written by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsRedirect {
    /// The proxy's port (UDP and TCP), host byte order.
    pub port: u16,
    /// `REDIRECT_*` bits.
    pub flags: u8,
    pub _pad: u8,
}

impl DnsRedirect {
    pub const fn new(port: u16, flags: u8) -> Self {
        Self {
            port,
            flags,
            _pad: 0,
        }
    }

    /// The proxy address an IPv6 socket's non-mapped destination is rewritten to.
    pub const fn proxy_v6(&self) -> [u8; 16] {
        if self.flags & REDIRECT_V6_LOOPBACK != 0 {
            LOOPBACK_V6
        } else {
            PROXY_V4_MAPPED
        }
    }
}

/// Value of [`crate::maps::DNS_ORIGIN`], keyed by socket cookie (u64): what a socket's
/// redirected destination was. Written by the connect and sendmsg programs; the last
/// redirected destination of a socket wins.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsOrigin {
    /// The address asked, network byte order; IPv4 (also a v4-mapped destination) uses the
    /// first 4 bytes.
    pub addr: [u8; 16],
    /// The port asked (53), host byte order.
    pub port: u16,
    /// The proxy port the destination was rewritten to, host byte order: an answer is given
    /// the origin only if it comes from that port.
    pub proxy_port: u16,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`], of `addr`.
    pub family: u8,
    pub _pad: [u8; 3],
}

impl DnsOrigin {
    pub const fn v4(addr: [u8; 4], port: u16, proxy_port: u16) -> Self {
        Self {
            addr: [
                addr[0], addr[1], addr[2], addr[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            port,
            proxy_port,
            family: crate::AF_INET,
            _pad: [0; 3],
        }
    }

    pub const fn v6(addr: [u8; 16], port: u16, proxy_port: u16) -> Self {
        Self {
            addr,
            port,
            proxy_port,
            family: crate::AF_INET6,
            _pad: [0; 3],
        }
    }

    /// The IPv4 address, for an origin of family [`crate::AF_INET`].
    pub const fn addr4(&self) -> [u8; 4] {
        [self.addr[0], self.addr[1], self.addr[2], self.addr[3]]
    }

    /// The address as an IPv6 socket sees it: itself, or `::ffff:a.b.c.d` for IPv4.
    pub const fn addr6(&self) -> [u8; 16] {
        if self.family == crate::AF_INET {
            mapped(self.addr4())
        } else {
            self.addr
        }
    }
}

crate::user_pod!(DnsRedirect, DnsOrigin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_no_hidden_padding() {
        assert_eq!(core::mem::size_of::<DnsRedirect>(), 4);
        assert_eq!(core::mem::size_of::<DnsOrigin>(), 16 + 2 + 2 + 1 + 3);
    }

    #[test]
    fn peer_addresses_stay_clear_of_the_loopback_addresses_in_use() {
        for cookie in [
            0u64,
            1,
            0xffff,
            0x1_0000,
            0x7e_ffff,
            u64::MAX,
            0x1234_5678_9abc,
        ] {
            let a = peer_addr(cookie);
            assert!(is_peer_addr(a), "{a:?}");
            assert_ne!(a, PROXY_V4);
        }
        assert!(!is_peer_addr([127, 0, 0, 1]) && !is_peer_addr([127, 0, 0, 11]));
        assert!(!is_peer_addr(PROXY_V4) && !is_peer_addr([10, 200, 0, 1]));
        assert_ne!(peer_addr(1), peer_addr(2));
    }

    #[test]
    fn v6_targets_and_mapped_origins() {
        assert_eq!(
            PROXY_V4_MAPPED,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 255, 53, 1]
        );
        assert_eq!(
            DnsRedirect::new(5353, REDIRECT_V6_LOOPBACK).proxy_v6(),
            LOOPBACK_V6
        );
        assert_eq!(DnsRedirect::new(5353, 0).proxy_v6(), PROXY_V4_MAPPED);
        let o = DnsOrigin::v4([10, 0, 0, 2], 53, 5353);
        assert_eq!(o.addr6(), mapped([10, 0, 0, 2]));
        assert_eq!(o.addr4(), [10, 0, 0, 2]);
        let six = DnsOrigin::v6(LOOPBACK_V6, 53, 5353);
        assert_eq!(six.addr6(), LOOPBACK_V6);
    }
}
