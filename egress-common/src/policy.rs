//! The per-cgroup policy record.

#[cfg(feature = "user")]
mod encode;

/// What a policed cgroup does with a destination that no rule allows.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Deny with EPERM and report.
    Enforce = 1,
    /// Allow, but report what would have been denied.
    Audit = 2,
}

impl Mode {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Enforce),
            2 => Some(Self::Audit),
            _ => None,
        }
    }
}

/// Flag: the policy has IPv4 CIDR rules (else the IPv4 trie is not consulted).
pub const FLAG_CIDR4: u8 = 1 << 0;
/// Flag: the policy has IPv6 CIDR rules (else the IPv6 trie is not consulted).
pub const FLAG_CIDR6: u8 = 1 << 1;
// Bit 2 is free (it marked unpoliced containers in EG_CONTAINERS up to layout 2; they have a
// map of their own now, `crate::maps::UNPOLICED`).
/// Flag: the cgroup belongs to a container the agent had not classified when the cgroup was
/// made; it has no rules and everything is denied with [`crate::event::Reason::Unclassified`].
pub const FLAG_UNCLASSIFIED: u8 = 1 << 3;
/// Flag: every exact IPv4 address rule of the policy allows any port, so the lookup with the
/// destination's port is skipped (one hash lookup less per judged IPv4 destination). Without
/// it both lookups are made, so an entry written before this flag existed is judged right.
pub const FLAG_ANY_PORT_ONLY4: u8 = 1 << 4;
/// Flag: the same for exact IPv6 address rules.
pub const FLAG_ANY_PORT_ONLY6: u8 = 1 << 5;
/// Flag: the policy may reach its own network namespace's loopback (`127.0.0.0/8`, `::1`) on
/// any port but 53, and never Docker's embedded resolver `127.0.0.11`. Set by the agent only for
/// a container whose network namespace is its own (not `--network host`, not shared with a
/// container whose policy is wider).
pub const FLAG_LOOPBACK: u8 = 1 << 6;
/// Flag: the agent could not write this policy (a map was full, or a rule it had to remove
/// would not go): everything is denied with [`crate::event::Reason::PolicyNotWritten`],
/// whatever the rules say, until the agent has written the policy in full. The mode of such an
/// entry is always [`Mode::Enforce`] (see [`CgroupPolicy::failed_closed`]).
pub const FLAG_DENY_ALL: u8 = 1 << 7;
/// Note bit (in [`CgroupPolicy::notes`], never read by the programs): the container holds a
/// privilege that lets it switch off or escape any cgroup policy (`--privileged`,
/// `CAP_SYS_ADMIN`, `CAP_NET_ADMIN`, `CAP_BPF`, the Docker socket, a bpffs or a writable
/// cgroupfs, the host's PID namespace). `status` shows it as "policed, not enforceable".
pub const NOTE_ESCAPABLE: u8 = 1 << 0;
/// Note bit: the container's cgroup is outside the cgroup the programs are attached to, so no
/// program judges it. `status` shows it as "not enforceable".
pub const NOTE_OUTSIDE_ATTACH: u8 = 1 << 1;
/// Note bit: a cgroup of the owner found no room in [`crate::maps::CGROUP_POLICY`], so the agent
/// killed the processes in it (cgroup v2 `cgroup.kill`) rather than let them run unpoliced.
/// `status` shows it.
pub const NOTE_KILLED: u8 = 1 << 2;
/// Policy id that has no rules (used by unclassified cgroups).
pub const NO_RULES_POLICY_ID: u32 = 0;

/// Value of [`crate::maps::CGROUP_POLICY`], keyed by cgroup id (the cgroup v2 directory's inode).
///
/// Rules are keyed by `policy_id`, not by cgroup id, so that a policy can be filled before the
/// cgroup it will apply to exists (a container's cgroup is made after Docker's `create` event).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CgroupPolicy {
    pub policy_id: u32,
    /// A [`Mode`] as u8. Any other value is treated as [`Mode::Enforce`] (fail closed).
    pub mode: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// `NOTE_*` bits: what the agent knows about the policy's enforceability, for `status`.
    /// The programs never read them.
    pub notes: u8,
    pub _pad: u8,
}

impl CgroupPolicy {
    pub const fn new(policy_id: u32, mode: Mode, flags: u8) -> Self {
        Self {
            policy_id,
            mode: mode as u8,
            flags,
            notes: 0,
            _pad: 0,
        }
    }

    /// The policy of an unclassified container cgroup: deny everything.
    pub const fn unclassified() -> Self {
        Self::new(NO_RULES_POLICY_ID, Mode::Enforce, FLAG_UNCLASSIFIED)
    }

    /// The same entry, denying everything ([`FLAG_DENY_ALL`], enforce mode, no loopback): what
    /// an owner whose policy could not be written gets. Id and notes stay, so the entry still
    /// names its owner.
    pub const fn failed_closed(self) -> Self {
        Self {
            mode: Mode::Enforce as u8,
            flags: (self.flags & !FLAG_LOOPBACK) | FLAG_DENY_ALL,
            ..self
        }
    }

    /// The mode, failing closed on an unknown value.
    pub const fn mode(&self) -> Mode {
        match Mode::from_u8(self.mode) {
            Some(m) => m,
            None => Mode::Enforce,
        }
    }
}

crate::user_pod!(CgroupPolicy);
