//! Slots of the per-CPU counter array [`crate::maps::STATS`].

use crate::{
    event::{REASON_SLOTS, Reason, Verdict},
    maps,
};

/// A policed cgroup reached an allowed destination.
pub const ALLOWED: u32 = 0;
/// An event could not be sent because the ring buffer was full (the verdict still applied).
pub const EVENTS_LOST: u32 = 1;
/// The `cgroup_mkdir` tracepoint could not insert a new container cgroup's entry into
/// [`maps::CGROUP_POLICY`] (the map was full). It reports each one to the agent as a
/// [`crate::event::Notice::CgroupMapFull`] notice, and the agent fails the cgroup closed.
pub const CGROUP_MKDIR_INSERT_FAILED: u32 = 2;
/// First of the agent's own insert-failure counters, one per map of [`INSERT_FAILED_MAPS`] in
/// that order. Only the agent writes them (the programs never do), so it can add to them
/// without racing a program.
pub const INSERT_FAILED_BASE: u32 = 3;
/// The maps the agent inserts into, in the order of their [`INSERT_FAILED_BASE`] counters.
pub const INSERT_FAILED_MAPS: [&str; 8] = [
    maps::CGROUP_POLICY,
    maps::ALLOW_V4,
    maps::ALLOW_V6,
    maps::CIDR_V4,
    maps::CIDR_V6,
    maps::CONTAINERS,
    maps::UNPOLICED,
    maps::DNS_REDIRECT,
];
/// A policed cgroup's port-53 destination was rewritten to its DNS proxy
/// ([`maps::DNS_REDIRECT`]).
pub const DNS_REDIRECTED: u32 = INSERT_FAILED_BASE + INSERT_FAILED_MAPS.len() as u32;
/// A policed cgroup's port-53 destination was left alone and allowed: a rule of its policy
/// names that address (or CIDR) and port 53 explicitly.
pub const DNS_DIRECT: u32 = DNS_REDIRECTED + 1;
/// The program could not store a redirected socket's origin in [`maps::DNS_ORIGIN`]; the
/// connect or send was denied (the answer could not have been given its origin back).
pub const DNS_ORIGIN_FAILED: u32 = DNS_DIRECT + 1;
/// First slot of the per-reason denial counters.
pub const DENIED_BASE: u32 = REASON_SLOTS;
/// First slot of the per-reason audit counters.
pub const AUDITED_BASE: u32 = 2 * REASON_SLOTS;
/// Number of slots.
pub const SLOTS: u32 = 3 * REASON_SLOTS;

const _: () = assert!(DNS_ORIGIN_FAILED < DENIED_BASE);

/// The slot counting `verdict` for `reason`.
pub const fn slot(verdict: Verdict, reason: Reason) -> u32 {
    let base = match verdict {
        Verdict::Denied => DENIED_BASE,
        Verdict::Audited => AUDITED_BASE,
    };
    base + reason as u32
}

/// The slot counting the agent's failed inserts into the map called `map`.
pub fn insert_failed_slot(map: &str) -> Option<u32> {
    let mut i = 0;
    while i < INSERT_FAILED_MAPS.len() {
        if INSERT_FAILED_MAPS[i] == map {
            return Some(INSERT_FAILED_BASE + i as u32);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_overlap() {
        let d = slot(Verdict::Denied, Reason::NoMatchingRule);
        let a = slot(Verdict::Audited, Reason::NoMatchingRule);
        assert!((EVENTS_LOST + 1..AUDITED_BASE).contains(&d));
        assert!((AUDITED_BASE..SLOTS).contains(&a));
        let last = slot(Verdict::Denied, Reason::DnsProxyNotReady);
        assert!(last < AUDITED_BASE);
    }

    #[test]
    fn insert_failure_slots_sit_between_the_fixed_ones_and_the_reasons() {
        let mut seen = [false; SLOTS as usize];
        for m in INSERT_FAILED_MAPS {
            let s = insert_failed_slot(m).unwrap();
            assert!(
                s > CGROUP_MKDIR_INSERT_FAILED && s < DENIED_BASE,
                "{m}: {s}"
            );
            assert!(!seen[s as usize], "{m} shares slot {s}");
            seen[s as usize] = true;
        }
        assert_eq!(insert_failed_slot(maps::EVENTS), None);
        for s in [DNS_REDIRECTED, DNS_DIRECT, DNS_ORIGIN_FAILED] {
            assert!(s < DENIED_BASE && !seen[s as usize], "dns slot {s}");
            seen[s as usize] = true;
        }
    }
}
