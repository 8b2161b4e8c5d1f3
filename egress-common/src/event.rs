//! The fixed-size record the programs send to user space for every denial and audit hit, and
//! its decoding from the ring buffer's bytes ([`Event::from_bytes`], [`Event::kind`]): plain
//! `core`, no `unsafe`, so the agent and the fuzz targets share it.

use core::{
    mem::offset_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// What the program did.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Denied with EPERM.
    Denied = 1,
    /// Allowed because the policy is in audit mode; enforce mode would have denied it.
    Audited = 2,
}

impl Verdict {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Denied),
            2 => Some(Self::Audited),
            _ => None,
        }
    }
}

/// Why a destination was not allowed. Doubles as the index offset in the stats map.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No rule of the cgroup's policy matches the destination address and port.
    NoMatchingRule = 1,
    /// The cgroup belongs to a container the agent had not classified yet (fail closed).
    Unclassified = 2,
    /// The agent could not write the cgroup's policy (a map was full): everything is denied
    /// ([`crate::policy::FLAG_DENY_ALL`]).
    PolicyNotWritten = 3,
    /// A port-53 destination of a policy that has no DNS redirect ([`crate::maps::DNS_REDIRECT`]):
    /// the agent's DNS proxy for it is not (or no longer) there, so its DNS fails closed.
    DnsProxyNotReady = 4,
    /// A socket a policed container may not have, refused at creation: raw and ping sockets,
    /// IP protocols other than TCP and UDP, address families other than unix, inet, inet6,
    /// netlink and alg (`AF_PACKET`, `AF_XDP`, ...). No connect or sendmsg hook judges what
    /// such a socket sends.
    SocketRefused = 5,
    /// A source route: `IP_OPTIONS` or an IPv6 routing header set on a socket (refused), or
    /// found in a packet (dropped). The hooks judge the address given; a source-routed packet
    /// goes to the first hop of the route instead.
    SourceRoute = 6,
    /// A packet that no connect or sendmsg hook judged (an IP protocol other than TCP and UDP)
    /// to a destination no rule allows on any port: dropped at egress.
    UnjudgedPacket = 7,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Self; 7] = [
        Self::NoMatchingRule,
        Self::Unclassified,
        Self::PolicyNotWritten,
        Self::DnsProxyNotReady,
        Self::SocketRefused,
        Self::SourceRoute,
        Self::UnjudgedPacket,
    ];

    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::NoMatchingRule),
            2 => Some(Self::Unclassified),
            3 => Some(Self::PolicyNotWritten),
            4 => Some(Self::DnsProxyNotReady),
            5 => Some(Self::SocketRefused),
            6 => Some(Self::SourceRoute),
            7 => Some(Self::UnjudgedPacket),
            _ => None,
        }
    }
}

/// [`Event::verdict`] of a notice: not a verdict on a destination but news from the
/// `cgroup_mkdir` tracepoint about a container cgroup it just saw; [`Event::reason`] then holds
/// a [`Notice`], `cgroup_id` the new cgroup, `policy_id` the policy it got (or should have
/// got), `pid`/`comm` the process that made it. Address, port and protocol are zero.
pub const NOTICE: u8 = 0x80;

/// What a notice of the `cgroup_mkdir` tracepoint says.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Notice {
    /// The cgroup got the policy of its (registered) container: the agent adds it to the
    /// cgroups it keeps in step with that policy.
    Classified = 1,
    /// The cgroup's entry did not fit in [`crate::maps::CGROUP_POLICY`]: the cgroup is not
    /// policed, and the agent must fail it closed.
    CgroupMapFull = 2,
}

impl Notice {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Classified),
            2 => Some(Self::CgroupMapFull),
            _ => None,
        }
    }
}

/// Number of reason slots reserved per verdict in the stats map.
pub const REASON_SLOTS: u32 = 16;

/// Which hook saw the destination.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    Connect4 = 1,
    Connect6 = 2,
    Sendmsg4 = 3,
    Sendmsg6 = 4,
    /// `cgroup/sock_create`: an inet socket being made.
    SockCreate = 5,
    /// `cgroup/setsockopt`.
    Setsockopt = 6,
    /// `cgroup_skb/egress`: a packet leaving a socket.
    Egress = 7,
    /// The BPF LSM's `socket_create`: a socket of any address family being made.
    SocketLsm = 8,
}

impl Hook {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Connect4),
            2 => Some(Self::Connect6),
            3 => Some(Self::Sendmsg4),
            4 => Some(Self::Sendmsg6),
            5 => Some(Self::SockCreate),
            6 => Some(Self::Setsockopt),
            7 => Some(Self::Egress),
            8 => Some(Self::SocketLsm),
            _ => None,
        }
    }
}

/// What a record reports, its codes checked ([`Event::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A denial or an audit hit.
    Egress {
        verdict: Verdict,
        reason: Reason,
        hook: Hook,
    },
    /// A notice of the `cgroup_mkdir` tracepoint ([`NOTICE`]).
    Notice(Notice),
}

/// Ring-buffer record (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// cgroup id the policy was found under.
    pub cgroup_id: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub policy_id: u32,
    /// Destination port, host byte order.
    pub port: u16,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`]; a `::ffff:a.b.c.d` destination is reported as
    /// IPv4, as it was judged.
    pub family: u8,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub protocol: u8,
    /// A [`Verdict`].
    pub verdict: u8,
    /// A [`Reason`].
    pub reason: u8,
    /// A [`Hook`].
    pub hook: u8,
    /// The socket's type (`SOCK_STREAM` 1, `SOCK_DGRAM` 2, `SOCK_RAW` 3, ...) for a refused
    /// socket ([`Reason::SocketRefused`]), else 0. Its address family is in `family`, its
    /// protocol in `protocol`; a refused socket has no address.
    pub sock_type: u8,
    pub _pad: [u8; 4],
    /// Thread name, NUL-padded.
    pub comm: [u8; 16],
    /// Destination address in network byte order; IPv4 uses the first 4 bytes.
    pub addr: [u8; 16],
}

impl Event {
    pub const fn zeroed() -> Self {
        Self {
            cgroup_id: 0,
            pid: 0,
            tid: 0,
            policy_id: 0,
            port: 0,
            family: 0,
            protocol: 0,
            verdict: 0,
            reason: 0,
            hook: 0,
            sock_type: 0,
            _pad: [0; 4],
            comm: [0; 16],
            addr: [0; 16],
        }
    }
}

/// `N` bytes of `b` from `at` (every caller's range lies inside the record).
fn field<const N: usize>(b: &[u8; Event::SIZE], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl Event {
    /// The size of a record on the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();

    /// Decodes a ring-buffer record: the first [`Event::SIZE`] bytes of `bytes`, each field at
    /// its `#[repr(C)]` offset in the programs' (the host's) byte order. None when `bytes` is
    /// shorter. Every bit pattern is a record; [`Event::kind`] checks its codes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; Self::SIZE] = bytes.first_chunk()?;
        Some(Self {
            cgroup_id: u64::from_ne_bytes(field(b, offset_of!(Self, cgroup_id))),
            pid: u32::from_ne_bytes(field(b, offset_of!(Self, pid))),
            tid: u32::from_ne_bytes(field(b, offset_of!(Self, tid))),
            policy_id: u32::from_ne_bytes(field(b, offset_of!(Self, policy_id))),
            port: u16::from_ne_bytes(field(b, offset_of!(Self, port))),
            family: b[offset_of!(Self, family)],
            protocol: b[offset_of!(Self, protocol)],
            verdict: b[offset_of!(Self, verdict)],
            reason: b[offset_of!(Self, reason)],
            hook: b[offset_of!(Self, hook)],
            sock_type: b[offset_of!(Self, sock_type)],
            _pad: field(b, offset_of!(Self, _pad)),
            comm: field(b, offset_of!(Self, comm)),
            addr: field(b, offset_of!(Self, addr)),
        })
    }

    /// The record as the programs write it (the inverse of [`Event::from_bytes`]).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        // Destructured, so that a new field cannot be left out.
        let Self {
            cgroup_id,
            pid,
            tid,
            policy_id,
            port,
            family,
            protocol,
            verdict,
            reason,
            hook,
            sock_type,
            _pad,
            comm,
            addr,
        } = *self;
        let mut b = [0; Self::SIZE];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(offset_of!(Self, cgroup_id), &cgroup_id.to_ne_bytes());
        put(offset_of!(Self, pid), &pid.to_ne_bytes());
        put(offset_of!(Self, tid), &tid.to_ne_bytes());
        put(offset_of!(Self, policy_id), &policy_id.to_ne_bytes());
        put(offset_of!(Self, port), &port.to_ne_bytes());
        put(offset_of!(Self, family), &[family]);
        put(offset_of!(Self, protocol), &[protocol]);
        put(offset_of!(Self, verdict), &[verdict]);
        put(offset_of!(Self, reason), &[reason]);
        put(offset_of!(Self, hook), &[hook]);
        put(offset_of!(Self, sock_type), &[sock_type]);
        put(offset_of!(Self, _pad), &_pad);
        put(offset_of!(Self, comm), &comm);
        put(offset_of!(Self, addr), &addr);
        b
    }

    /// What the record reports: a notice ([`NOTICE`] and a known [`Notice`]), or a denial or
    /// audit hit with a known verdict, reason and hook; None for any other code (a newer
    /// kernel object than this agent).
    pub fn kind(&self) -> Option<Kind> {
        if self.verdict == NOTICE {
            return Notice::from_u8(self.reason).map(Kind::Notice);
        }
        Some(Kind::Egress {
            verdict: Verdict::from_u8(self.verdict)?,
            reason: Reason::from_u8(self.reason)?,
            hook: Hook::from_u8(self.hook)?,
        })
    }

    /// The destination: IPv4 from the first 4 bytes of `addr` when `family` is
    /// [`crate::AF_INET`], else IPv6.
    pub fn destination(&self) -> IpAddr {
        if self.family == crate::AF_INET {
            let [a, b, c, d, ..] = self.addr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        }
    }

    /// The thread name's bytes, up to the first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self
            .comm
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.comm.len());
        &self.comm[..end]
    }
}

crate::user_pod!(Event);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_is_64_bytes() {
        assert_eq!(core::mem::size_of::<super::Event>(), 64);
    }

    fn sample() -> Event {
        let mut e = Event::zeroed();
        e.cgroup_id = 0x0102_0304_0506_0708;
        e.pid = 100;
        e.tid = 101;
        e.policy_id = 7;
        e.port = 443;
        e.family = crate::AF_INET;
        e.protocol = 6;
        e.verdict = 1;
        e.reason = 4;
        e.hook = 3;
        e.sock_type = 2;
        e._pad = [1, 2, 3, 4];
        e.comm[..4].copy_from_slice(b"curl");
        e.addr[..4].copy_from_slice(&[10, 0, 0, 9]);
        e
    }

    #[test]
    fn bytes_are_the_repr_c_layout() {
        let e = sample();
        // SAFETY: Event is plain data of SIZE bytes, every byte a field (no padding).
        let raw = unsafe { core::slice::from_raw_parts((&raw const e).cast::<u8>(), Event::SIZE) };
        assert_eq!(&e.to_bytes()[..], raw);
        assert_eq!(Event::from_bytes(raw), Some(e));
        let mut longer = [0xff; 80];
        longer[..Event::SIZE].copy_from_slice(raw);
        assert_eq!(
            Event::from_bytes(&longer),
            Some(e),
            "trailing bytes are ignored"
        );
        assert_eq!(Event::from_bytes(&raw[..Event::SIZE - 1]), None);
        assert_eq!(Event::from_bytes(&[]), None);
    }

    #[test]
    fn kinds_destinations_and_comm() {
        let mut e = sample();
        assert_eq!(
            e.kind(),
            Some(Kind::Egress {
                verdict: Verdict::Denied,
                reason: Reason::DnsProxyNotReady,
                hook: Hook::Sendmsg4
            })
        );
        assert_eq!(e.destination(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(e.comm_bytes(), b"curl");
        e.hook = 0xff;
        assert_eq!(e.kind(), None);
        e.verdict = NOTICE;
        e.reason = Notice::CgroupMapFull as u8;
        assert_eq!(e.kind(), Some(Kind::Notice(Notice::CgroupMapFull)));
        e.reason = 0;
        assert_eq!(e.kind(), None);
        e.family = crate::AF_INET6;
        e.addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(e.destination(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        e.comm = [b'x'; 16];
        assert_eq!(e.comm_bytes(), &[b'x'; 16]);
    }
}
