//! Decoding the programs' event records into something a person can read: denials and audit
//! hits ([`EgressEvent`]) and the `cgroup_mkdir` tracepoint's notices ([`CgroupNotice`]).

use std::{fmt, net::IpAddr};

use egress_common::event::{Event, Hook, Kind, Notice, Reason, Verdict};

use crate::enforcer::reason_name;

/// `tcp`, `udp` or the IP protocol number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        6 => "tcp".into(),
        17 => "udp".into(),
        p => p.to_string(),
    }
}

/// A denial or audit hit, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressEvent {
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub policy_id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: u8,
    /// The address family (a refused socket's, or the destination's).
    pub family: u8,
    /// A refused socket's type (`SOCK_RAW` 3, ...), else 0.
    pub sock_type: u8,
    pub verdict: Verdict,
    pub reason: Reason,
    pub hook: Hook,
}

/// An address family by name (`AF_PACKET`), or its number.
fn family_name(family: u8) -> String {
    match family {
        1 => "AF_UNIX".into(),
        2 => "AF_INET".into(),
        10 => "AF_INET6".into(),
        16 => "AF_NETLINK".into(),
        17 => "AF_PACKET".into(),
        40 => "AF_VSOCK".into(),
        44 => "AF_XDP".into(),
        f => format!("family {f}"),
    }
}

/// A socket type by name (`SOCK_RAW`), or its number.
fn type_name(ty: u8) -> String {
    match ty {
        1 => "SOCK_STREAM".into(),
        2 => "SOCK_DGRAM".into(),
        3 => "SOCK_RAW".into(),
        5 => "SOCK_SEQPACKET".into(),
        10 => "SOCK_PACKET".into(),
        t => format!("type {t}"),
    }
}

/// A source-route socket option by name (level and option as the setsockopt program reports
/// them), or their numbers.
fn sockopt_name(level: u8, optname: u16) -> String {
    match (level, optname) {
        (0, 4) => "IP_OPTIONS".into(),
        (41, 5) => "IPV6_2292RTHDR".into(),
        (41, 6) => "IPV6_2292PKTOPTIONS".into(),
        (41, 57) => "IPV6_RTHDR".into(),
        (l, o) => format!("level {l} option {o}"),
    }
}

/// A notice of the `cgroup_mkdir` tracepoint about a container cgroup it just saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupNotice {
    pub cgroup_id: u64,
    /// The policy the cgroup got, or should have got (0: the unclassified default).
    pub policy_id: u32,
    pub notice: Notice,
    /// The process that made the cgroup (runc, usually).
    pub pid: u32,
    pub comm: String,
}

/// Any record of the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Egress(EgressEvent),
    Notice(CgroupNotice),
}

fn comm(e: &Event) -> String {
    String::from_utf8_lossy(e.comm_bytes()).into_owned()
}

impl Record {
    /// Decodes a raw ring-buffer record ([`Event::from_bytes`], [`Event::kind`]); None for a
    /// record too short or with unknown codes (a newer kernel object than this agent).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let e = Event::from_bytes(bytes)?;
        match e.kind()? {
            Kind::Notice(notice) => Some(Self::Notice(CgroupNotice {
                cgroup_id: e.cgroup_id,
                policy_id: e.policy_id,
                notice,
                pid: e.pid,
                comm: comm(&e),
            })),
            Kind::Egress { .. } => EgressEvent::from_raw(&e).map(Self::Egress),
        }
    }
}

impl EgressEvent {
    /// Decodes a raw ring-buffer record. Returns None for a record too short, a notice, or one
    /// with unknown codes (a newer kernel object than this agent).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Self::from_raw(&Event::from_bytes(bytes)?)
    }

    pub fn from_raw(e: &Event) -> Option<Self> {
        let Kind::Egress {
            verdict,
            reason,
            hook,
        } = e.kind()?
        else {
            return None;
        };
        Some(Self {
            cgroup_id: e.cgroup_id,
            pid: e.pid,
            tid: e.tid,
            comm: comm(e),
            policy_id: e.policy_id,
            addr: e.destination(),
            port: e.port,
            protocol: e.protocol,
            family: e.family,
            sock_type: e.sock_type,
            verdict,
            reason,
            hook,
        })
    }

    /// What was attempted: `connect`, `sendmsg`, `packet` (seen at egress), or the refused
    /// call itself (`socket(AF_PACKET, SOCK_RAW, 3)`, `setsockopt(IP_OPTIONS)`).
    pub fn attempt(&self) -> String {
        match self.hook {
            Hook::Connect4 | Hook::Connect6 => "connect".into(),
            Hook::Sendmsg4 | Hook::Sendmsg6 => "sendmsg".into(),
            Hook::Egress => "packet".into(),
            Hook::SockCreate | Hook::SocketLsm => format!(
                "socket({}, {}, {})",
                family_name(self.family),
                type_name(self.sock_type),
                self.protocol
            ),
            Hook::Setsockopt => format!("setsockopt({})", sockopt_name(self.protocol, self.port)),
        }
    }

    /// Whether the event names a destination (a refused socket or socket option has none).
    pub fn has_destination(&self) -> bool {
        !matches!(
            self.hook,
            Hook::SockCreate | Hook::SocketLsm | Hook::Setsockopt
        )
    }

    pub fn verdict_name(&self) -> &'static str {
        match self.verdict {
            Verdict::Denied => "denied",
            Verdict::Audited => "audit",
        }
    }

    pub fn reason_name(&self) -> &'static str {
        reason_name(self.reason)
    }

    /// `tcp`, `udp` or the protocol number.
    pub fn protocol_name(&self) -> String {
        protocol_name(self.protocol)
    }

    /// The destination as `addr:port` / `[addr]:port`.
    pub fn destination(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }
}

impl fmt::Display for EgressEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.has_destination() {
            format!(
                "{} {} {}",
                self.attempt(),
                self.protocol_name(),
                self.destination()
            )
        } else {
            self.attempt()
        };
        write!(
            f,
            "{} {what} from pid {} ({}) in cgroup {}: {}",
            self.verdict_name(),
            self.pid,
            self.comm,
            self.cgroup_id,
            self.reason_name()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use egress_common::{AF_INET, event::NOTICE};

    use super::*;

    fn raw() -> Event {
        let mut e = Event::zeroed();
        e.cgroup_id = 42;
        e.pid = 100;
        e.tid = 101;
        e.port = 443;
        e.family = AF_INET;
        e.protocol = 6;
        e.verdict = 1;
        e.reason = 1;
        e.hook = 1;
        e.comm[..4].copy_from_slice(b"curl");
        e.addr[..4].copy_from_slice(&[10, 0, 0, 9]);
        e
    }

    #[test]
    fn decodes_a_v4_denial() {
        let e = raw();
        // SAFETY: Event is plain data.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<Event>()) };
        let d = EgressEvent::decode(bytes).unwrap();
        assert_eq!(d.addr, "10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(d.comm, "curl");
        assert_eq!(d.destination(), "10.0.0.9:443");
        assert_eq!(
            d.to_string(),
            "denied connect tcp 10.0.0.9:443 from pid 100 (curl) in cgroup 42: no_matching_rule"
        );
    }

    #[test]
    fn a_refused_socket_and_socket_option_are_named_without_a_destination() {
        let mut e = raw();
        (e.family, e.sock_type, e.protocol, e.port) = (17, 3, 3, 0);
        (e.reason, e.hook) = (Reason::SocketRefused as u8, Hook::SocketLsm as u8);
        let d = EgressEvent::from_raw(&e).unwrap();
        assert_eq!(
            d.to_string(),
            "denied socket(AF_PACKET, SOCK_RAW, 3) from pid 100 (curl) in cgroup 42: socket_refused"
        );
        (e.family, e.protocol, e.port) = (2, 0, 4);
        (e.reason, e.hook) = (Reason::SourceRoute as u8, Hook::Setsockopt as u8);
        let d = EgressEvent::from_raw(&e).unwrap();
        assert_eq!(d.attempt(), "setsockopt(IP_OPTIONS)");
        assert!(!d.has_destination());
        (e.protocol, e.hook, e.reason) = (1, Hook::Egress as u8, Reason::UnjudgedPacket as u8);
        let d = EgressEvent::from_raw(&e).unwrap();
        assert_eq!(
            d.to_string(),
            "denied packet 1 10.0.0.9:4 from pid 100 (curl) in cgroup 42: unjudged_packet"
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(EgressEvent::decode(&[0u8; 10]).is_none());
        let mut e = raw();
        e.verdict = 9;
        assert!(EgressEvent::from_raw(&e).is_none());
    }

    #[test]
    fn notices_are_told_from_verdicts() {
        let mut e = raw();
        e.verdict = NOTICE;
        e.reason = Notice::CgroupMapFull as u8;
        e.policy_id = 7;
        // SAFETY: Event is plain data.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<Event>()) };
        assert_eq!(EgressEvent::decode(bytes), None, "a notice is no denial");
        match Record::decode(bytes) {
            Some(Record::Notice(n)) => {
                assert_eq!(n.notice, Notice::CgroupMapFull);
                assert_eq!((n.cgroup_id, n.policy_id, n.comm.as_str()), (42, 7, "curl"));
            }
            other => panic!("{other:?}"),
        }
        e.reason = 99;
        // SAFETY: as above.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<Event>()) };
        assert_eq!(Record::decode(bytes), None, "an unknown notice");
        assert!(matches!(
            Record::decode(&{
                let e = raw();
                // SAFETY: as above.
                unsafe {
                    std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<Event>())
                }
                .to_vec()
            }),
            Some(Record::Egress(_))
        ));
    }

    #[test]
    fn v6_destinations_are_bracketed() {
        let mut e = raw();
        e.family = egress_common::AF_INET6;
        e.addr = Ipv6Addr::LOCALHOST.octets();
        let d = EgressEvent::from_raw(&e).unwrap();
        assert_eq!(d.destination(), "[::1]:443");
    }
}
