//! The policy model's [`Policy`] and [`Mode`](egress_policy::policy::Mode) as these kernel
//! records spell them (user space only).

use egress_policy::policy::{self as model, Policy};

use super::{
    CgroupPolicy, FLAG_ANY_PORT_ONLY4, FLAG_ANY_PORT_ONLY6, FLAG_CIDR4, FLAG_CIDR6, FLAG_LOOPBACK,
    Mode,
};

impl From<model::Mode> for Mode {
    fn from(m: model::Mode) -> Self {
        match m {
            model::Mode::Enforce => Self::Enforce,
            model::Mode::Audit => Self::Audit,
        }
    }
}

impl From<Mode> for model::Mode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Enforce => Self::Enforce,
            Mode::Audit => Self::Audit,
        }
    }
}

impl CgroupPolicy {
    /// The cgroup entry of `policy` stored under `policy_id`: its mode, its notes and the flags
    /// that spare the programs lookups.
    pub fn of(policy_id: u32, policy: &Policy) -> Self {
        let mut flags = 0;
        if !policy.has_v4_host_port() {
            flags |= FLAG_ANY_PORT_ONLY4;
        }
        if !policy.has_v6_host_port() {
            flags |= FLAG_ANY_PORT_ONLY6;
        }
        if policy.has_v4_cidr() {
            flags |= FLAG_CIDR4;
        }
        if policy.has_v6_cidr() {
            flags |= FLAG_CIDR6;
        }
        if policy.loopback {
            flags |= FLAG_LOOPBACK;
        }
        let mut value = Self::new(policy_id, policy.mode.into(), flags);
        value.notes = policy.notes;
        value
    }
}

#[cfg(test)]
mod tests {
    use egress_policy::policy::parse_ip_entries;

    use super::*;

    #[test]
    fn flags_follow_the_rules() {
        let p = Policy::new(
            model::Mode::Audit,
            parse_ip_entries("10.0.0.1:443, 10.0.0.0/8, ::1").unwrap(),
        )
        .with_loopback(true)
        .with_notes(3);
        let v = CgroupPolicy::of(9, &p);
        assert_eq!(v.policy_id, 9);
        assert_eq!(v.mode(), Mode::Audit);
        assert_eq!(v.notes, 3);
        assert_eq!(
            v.flags,
            FLAG_ANY_PORT_ONLY6 | FLAG_CIDR4 | FLAG_LOOPBACK,
            "{:#b}",
            v.flags
        );
    }
}
