//! Denials are logged once per (container, destination) per interval: a container hammering a
//! forbidden address must not flood the log, and what was suppressed is still said. The kernel
//! counters count every one.
//!
//! The table that remembers what was logged is bounded twice, so a container that sprays
//! denied destinations cannot grow the agent:
//! - a key is forgotten one interval after it was logged, whether or not events were
//!   suppressed meanwhile; if some were, [`RateLimiter::expire`] hands back their count for one
//!   summary line;
//! - the table holds at most [`RateLimiter::capacity`] keys. An event of a new key while it is
//!   full is not logged on its own ([`Decision::Overflow`]); [`RateLimiter::take_overflow`]
//!   gives their number once per interval for one line.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

/// Keys the table holds at most (one per recently logged container and destination).
pub const DEFAULT_CAPACITY: usize = 4096;

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Log it.
    Log,
    /// Drop it: the same key was logged less than an interval ago (counted, reported when the
    /// key expires).
    Suppress,
    /// Drop it: a new key while the table is full (counted, see
    /// [`RateLimiter::take_overflow`]).
    Overflow,
}

/// A key whose interval ended with events suppressed since it was logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired<K> {
    pub key: K,
    pub suppressed: u64,
}

struct Slot {
    logged_at: Instant,
    suppressed: u64,
}

/// Per-key rate limiter: the first event of a key is logged, the rest of its interval is
/// counted; memory is bounded by the capacity.
pub struct RateLimiter<K> {
    interval: Duration,
    capacity: usize,
    slots: HashMap<K, Slot>,
    /// Keys in the order they were logged (so in the order their intervals end).
    order: VecDeque<(K, Instant)>,
    overflow: u64,
    overflow_reported: Option<Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(interval: Duration) -> Self {
        Self::with_capacity(interval, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(interval: Duration, capacity: usize) -> Self {
        Self {
            interval,
            capacity: capacity.max(1),
            slots: HashMap::new(),
            order: VecDeque::new(),
            overflow: 0,
            overflow_reported: None,
        }
    }

    /// Decides about one event with `key` at `now`. Call [`expire`](Self::expire) first, so
    /// that keys whose interval ended are gone.
    pub fn check(&mut self, key: &K, now: Instant) -> Decision {
        if self.interval.is_zero() {
            return Decision::Log;
        }
        if let Some(slot) = self.slots.get_mut(key) {
            slot.suppressed += 1;
            return Decision::Suppress;
        }
        if self.slots.len() >= self.capacity {
            self.overflow += 1;
            return Decision::Overflow;
        }
        self.slots.insert(
            key.clone(),
            Slot {
                logged_at: now,
                suppressed: 0,
            },
        );
        self.order.push_back((key.clone(), now));
        Decision::Log
    }

    /// Forgets every key logged an interval or more before `now`; returns those that had
    /// suppressed events, with their counts.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired<K>> {
        let mut out = Vec::new();
        while let Some((_, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.interval {
                break;
            }
            let Some((key, at)) = self.order.pop_front() else {
                break;
            };
            // Each key is queued once per slot, so the slot is the one queued.
            if let Some(slot) = self.slots.remove(&key) {
                debug_assert_eq!(slot.logged_at, at);
                if slot.suppressed > 0 {
                    out.push(Expired {
                        key,
                        suppressed: slot.suppressed,
                    });
                }
            }
        }
        out
    }

    /// Events of new keys dropped because the table was full, at most once per interval (and
    /// only when there were some); resets the count.
    pub fn take_overflow(&mut self, now: Instant) -> Option<u64> {
        if self.overflow == 0
            || self
                .overflow_reported
                .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        {
            return None;
        }
        self.overflow_reported = Some(now);
        Some(std::mem::take(&mut self.overflow))
    }

    /// Number of keys tracked.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Most keys tracked at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn first_is_logged_the_rest_of_the_interval_is_counted_and_reported_at_its_end() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(secs(10));
        assert_eq!(rl.check(&"a", t0), Decision::Log);
        assert_eq!(rl.check(&"a", t0 + secs(1)), Decision::Suppress);
        assert_eq!(rl.check(&"a", t0 + secs(2)), Decision::Suppress);
        assert!(rl.expire(t0 + secs(9)).is_empty());
        assert_eq!(
            rl.expire(t0 + secs(10)),
            vec![Expired {
                key: "a",
                suppressed: 2
            }]
        );
        assert!(rl.is_empty());
        assert_eq!(rl.check(&"a", t0 + secs(11)), Decision::Log);
    }

    #[test]
    fn keys_are_independent() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(secs(10));
        assert_eq!(rl.check(&"a", t0), Decision::Log);
        assert_eq!(rl.check(&"b", t0), Decision::Log);
        assert_eq!(rl.check(&"a", t0), Decision::Suppress);
    }

    #[test]
    fn keys_are_forgotten_after_the_interval_suppressed_or_not() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(secs(1));
        rl.check(&"quiet", t0);
        rl.check(&"busy", t0);
        rl.check(&"busy", t0);
        assert_eq!(rl.len(), 2);
        let expired = rl.expire(t0 + secs(1));
        assert_eq!(
            expired,
            vec![Expired {
                key: "busy",
                suppressed: 1
            }]
        );
        assert_eq!(rl.len(), 0, "both keys forgotten");
    }

    #[test]
    fn a_full_table_counts_new_keys_and_reports_them_once_per_interval() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::with_capacity(secs(10), 2);
        assert_eq!(rl.check(&1, t0), Decision::Log);
        assert_eq!(rl.check(&2, t0), Decision::Log);
        for k in 3..1000 {
            assert_eq!(rl.check(&k, t0), Decision::Overflow);
        }
        assert_eq!(rl.len(), 2);
        assert_eq!(
            rl.check(&1, t0),
            Decision::Suppress,
            "known keys still count"
        );
        assert_eq!(rl.take_overflow(t0), Some(997));
        rl.check(&5000, t0 + secs(1));
        assert_eq!(rl.take_overflow(t0 + secs(1)), None, "once per interval");
        assert_eq!(rl.take_overflow(t0 + secs(10)), Some(1));
        assert_eq!(rl.take_overflow(t0 + secs(30)), None, "nothing new");
        rl.expire(t0 + secs(10));
        assert_eq!(rl.check(&7, t0 + secs(10)), Decision::Log, "room again");
    }

    #[test]
    fn memory_is_bounded_by_the_capacity_whatever_the_key_count() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::with_capacity(secs(60), 100);
        for k in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(k));
            rl.expire(now);
            rl.check(&k, now);
        }
        assert_eq!(rl.len(), 100);
        assert!(rl.order.len() <= 100);
    }

    #[test]
    fn zero_interval_logs_everything_and_keeps_nothing() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(Duration::ZERO);
        assert_eq!(rl.check(&1, t0), Decision::Log);
        assert_eq!(rl.check(&1, t0), Decision::Log);
        assert!(rl.is_empty());
    }
}
