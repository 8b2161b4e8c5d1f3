//! The per-cgroup policy record.

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
    pub _pad: [u8; 2],
}

impl CgroupPolicy {
    pub const fn new(policy_id: u32, mode: Mode, flags: u8) -> Self {
        Self {
            policy_id,
            mode: mode as u8,
            flags,
            _pad: [0; 2],
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
