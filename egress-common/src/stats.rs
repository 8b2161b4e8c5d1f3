//! Slots of the per-CPU counter array [`crate::maps::STATS`].

use crate::event::{REASON_SLOTS, Reason, Verdict};

/// A policed cgroup reached an allowed destination.
pub const ALLOWED: u32 = 0;
/// An event could not be sent because the ring buffer was full (the verdict still applied).
pub const EVENTS_LOST: u32 = 1;
/// First slot of the per-reason denial counters.
pub const DENIED_BASE: u32 = REASON_SLOTS;
/// First slot of the per-reason audit counters.
pub const AUDITED_BASE: u32 = 2 * REASON_SLOTS;
/// Number of slots.
pub const SLOTS: u32 = 3 * REASON_SLOTS;

/// The slot counting `verdict` for `reason`.
pub const fn slot(verdict: Verdict, reason: Reason) -> u32 {
    let base = match verdict {
        Verdict::Denied => DENIED_BASE,
        Verdict::Audited => AUDITED_BASE,
    };
    base + reason as u32
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
    }
}
