//! Decoding the programs' event records into something a person can read: denials and audit
//! hits ([`EgressEvent`]) and the `cgroup_mkdir` tracepoint's notices ([`CgroupNotice`]).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use egress_common::{
    AF_INET,
    event::{Event, Hook, NOTICE, Notice, Reason, Verdict},
};

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
    pub verdict: Verdict,
    pub reason: Reason,
    pub hook: Hook,
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

fn raw(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: the length was checked; Event is plain data valid for any bit pattern, and
    // read_unaligned copes with the ring buffer's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

fn comm(e: &Event) -> String {
    let end = e.comm.iter().position(|b| *b == 0).unwrap_or(e.comm.len());
    String::from_utf8_lossy(&e.comm[..end]).into_owned()
}

impl Record {
    /// Decodes a raw ring-buffer record; None for a record of the wrong size or with unknown
    /// codes (a newer kernel object than this agent).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let e = raw(bytes)?;
        if e.verdict == NOTICE {
            return Some(Self::Notice(CgroupNotice {
                cgroup_id: e.cgroup_id,
                policy_id: e.policy_id,
                notice: Notice::from_u8(e.reason)?,
                pid: e.pid,
                comm: comm(&e),
            }));
        }
        EgressEvent::from_raw(&e).map(Self::Egress)
    }
}

impl EgressEvent {
    /// Decodes a raw ring-buffer record. Returns None for a record of the wrong size, a notice,
    /// or one with unknown codes (a newer kernel object than this agent).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Self::from_raw(&raw(bytes)?)
    }

    pub fn from_raw(e: &Event) -> Option<Self> {
        let addr = if e.family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(e.addr))
        };
        let verdict = match e.verdict {
            1 => Verdict::Denied,
            2 => Verdict::Audited,
            _ => return None,
        };
        let reason = Reason::from_u8(e.reason)?;
        let hook = match e.hook {
            1 => Hook::Connect4,
            2 => Hook::Connect6,
            3 => Hook::Sendmsg4,
            4 => Hook::Sendmsg6,
            _ => return None,
        };
        Some(Self {
            cgroup_id: e.cgroup_id,
            pid: e.pid,
            tid: e.tid,
            comm: comm(e),
            policy_id: e.policy_id,
            addr,
            port: e.port,
            protocol: e.protocol,
            verdict,
            reason,
            hook,
        })
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
        write!(
            f,
            "{} {} {} from pid {} ({}) in cgroup {}: {}",
            self.verdict_name(),
            self.protocol_name(),
            self.destination(),
            self.pid,
            self.comm,
            self.cgroup_id,
            self.reason_name()
        )
    }
}

#[cfg(test)]
mod tests {
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
            "denied tcp 10.0.0.9:443 from pid 100 (curl) in cgroup 42: no_matching_rule"
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
