//! The `egress-bypass` process: one attempt to send a marked packet past the connect and
//! sendmsg hooks (raw, ping, UDP-Lite and packet sockets, source routes), and what the kernel
//! said at each step. The tests run it inside a policed cgroup (or container) and judge by
//! what reaches the wire ([`crate::capture`]), not only by what it reports.
//!
//! ```text
//! egress-bypass ATTEMPT ADDR MARKER [--via ADDR] [--after FILE] [--dev NAME]
//! ```
//!
//! Prints one JSON line, an [`Attempt`], and exits 0 whatever the kernel answered; a bad
//! command line exits 2.

use serde::{Deserialize, Serialize};

/// What the bypass tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A raw ICMP (ICMPv6) socket sends an echo request carrying the marker.
    RawIcmp,
    /// A ping socket (`SOCK_DGRAM`/ICMP, no capability needed) sends an echo request.
    Ping,
    /// A raw socket with `IP_HDRINCL` (`IPPROTO_RAW`) sends a whole IPv4/UDP packet.
    RawHdrincl,
    /// A UDP-Lite socket connects and sends (no sock_addr hook sees UDP-Lite).
    Udplite,
    /// An SCTP socket connects (where the kernel has SCTP).
    Sctp,
    /// An `AF_PACKET` socket sends a broadcast Ethernet frame with an IPv4/UDP packet out of
    /// `--dev` (`lo` if not given).
    Packet,
    /// A UDP socket sets a loose source route (`IP_OPTIONS`) through ADDR to `--via`, then
    /// sends to `--via`.
    IpOptions,
    /// A UDP socket sends to `--via` with a loose source route through ADDR in the ancillary
    /// data (`IP_RETOPTS`): the hook judges `--via`, the packet goes to ADDR.
    CmsgOptions,
    /// An IPv6 UDP socket sets a routing header (`IPV6_RTHDR`, type 4 segment list) through
    /// ADDR, then sends to `--via`.
    Rthdr6,
}

impl Kind {
    pub const ALL: [Self; 9] = [
        Self::RawIcmp,
        Self::Ping,
        Self::RawHdrincl,
        Self::Udplite,
        Self::Sctp,
        Self::Packet,
        Self::IpOptions,
        Self::CmsgOptions,
        Self::Rthdr6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RawIcmp => "raw-icmp",
            Self::Ping => "ping",
            Self::RawHdrincl => "raw-hdrincl",
            Self::Udplite => "udplite",
            Self::Sctp => "sctp",
            Self::Packet => "packet",
            Self::IpOptions => "ip-options",
            Self::CmsgOptions => "cmsg-options",
            Self::Rthdr6 => "rthdr6",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// The step an attempt stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Socket,
    Setsockopt,
    Connect,
    Send,
}

/// What `egress-bypass` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub kind: Kind,
    pub pid: u32,
    /// Every step succeeded (the packet was handed to the kernel).
    pub sent: bool,
    /// The step that failed, with its errno.
    pub failed_at: Option<Step>,
    pub errno: Option<i32>,
}

impl Attempt {
    /// Panics unless the attempt failed at `step` with `EPERM`.
    #[track_caller]
    pub fn assert_refused_at(&self, step: Step, what: &str) -> &Self {
        assert_eq!(
            (self.failed_at, self.errno),
            (Some(step), Some(libc::EPERM)),
            "{what}: expected EPERM at {step:?}, got {self:?}"
        );
        self
    }

    /// Panics unless the attempt failed somewhere (any step, any errno).
    #[track_caller]
    pub fn assert_not_sent(&self, what: &str) -> &Self {
        assert!(!self.sent, "{what}: the kernel took the packet: {self:?}");
        self
    }

    #[track_caller]
    pub fn assert_sent(&self, what: &str) -> &Self {
        assert!(self.sent, "{what}: expected the send to succeed: {self:?}");
        self
    }
}
