//! The fixed-size record the programs send to user space for every denial and audit hit.

/// What the program did.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Denied with EPERM.
    Denied = 1,
    /// Allowed because the policy is in audit mode; enforce mode would have denied it.
    Audited = 2,
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
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Self; 4] = [
        Self::NoMatchingRule,
        Self::Unclassified,
        Self::PolicyNotWritten,
        Self::DnsProxyNotReady,
    ];

    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::NoMatchingRule),
            2 => Some(Self::Unclassified),
            3 => Some(Self::PolicyNotWritten),
            4 => Some(Self::DnsProxyNotReady),
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
    pub _pad: [u8; 5],
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
            _pad: [0; 5],
            comm: [0; 16],
            addr: [0; 16],
        }
    }
}

crate::user_pod!(Event);

#[cfg(test)]
mod tests {
    #[test]
    fn event_is_64_bytes() {
        assert_eq!(core::mem::size_of::<super::Event>(), 64);
    }
}
