//! Denials are logged once per (container, destination) per interval: a container hammering a
//! forbidden address must not flood the log, and the line that is logged says how many were
//! suppressed since the last one. The kernel counters still count every one.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Log it; `suppressed` events with the same key were dropped since the last logged one.
    Log { suppressed: u64 },
    /// Drop it (counted, reported with the next logged one).
    Suppress,
}

struct Slot {
    last_logged: Instant,
    suppressed: u64,
}

/// Per-key rate limiter: the first event of a key is logged, then at most one per `interval`.
pub struct RateLimiter<K> {
    interval: Duration,
    slots: HashMap<K, Slot>,
    /// Keys are forgotten after this long without events (bounds memory).
    idle_expiry: Duration,
    last_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: HashMap::new(),
            idle_expiry: interval.max(Duration::from_secs(1)) * 4,
            last_sweep: None,
        }
    }

    /// Decides about one event with `key` at `now`.
    pub fn check(&mut self, key: &K, now: Instant) -> Decision {
        self.sweep(now);
        match self.slots.get_mut(key) {
            Some(slot) if now.duration_since(slot.last_logged) < self.interval => {
                slot.suppressed += 1;
                Decision::Suppress
            }
            Some(slot) => {
                let suppressed = slot.suppressed;
                slot.suppressed = 0;
                slot.last_logged = now;
                Decision::Log { suppressed }
            }
            None => {
                self.slots.insert(
                    key.clone(),
                    Slot {
                        last_logged: now,
                        suppressed: 0,
                    },
                );
                Decision::Log { suppressed: 0 }
            }
        }
    }

    /// Number of keys tracked.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < self.idle_expiry)
        {
            return;
        }
        self.last_sweep = Some(now);
        let expiry = self.idle_expiry;
        self.slots
            .retain(|_, s| s.suppressed > 0 || now.duration_since(s.last_logged) < expiry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_is_logged_then_one_per_interval_with_the_suppressed_count() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(Duration::from_secs(10));
        assert_eq!(rl.check(&"a", t0), Decision::Log { suppressed: 0 });
        assert_eq!(
            rl.check(&"a", t0 + Duration::from_secs(1)),
            Decision::Suppress
        );
        assert_eq!(
            rl.check(&"a", t0 + Duration::from_secs(2)),
            Decision::Suppress
        );
        assert_eq!(
            rl.check(&"a", t0 + Duration::from_secs(10)),
            Decision::Log { suppressed: 2 }
        );
        assert_eq!(
            rl.check(&"a", t0 + Duration::from_secs(11)),
            Decision::Suppress
        );
    }

    #[test]
    fn keys_are_independent() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(Duration::from_secs(10));
        assert_eq!(rl.check(&"a", t0), Decision::Log { suppressed: 0 });
        assert_eq!(rl.check(&"b", t0), Decision::Log { suppressed: 0 });
        assert_eq!(rl.check(&"a", t0), Decision::Suppress);
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(Duration::from_secs(1));
        rl.check(&"a", t0);
        rl.check(&"b", t0 + Duration::from_secs(100));
        assert_eq!(rl.len(), 1);
    }

    #[test]
    fn zero_interval_logs_everything() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(Duration::ZERO);
        assert_eq!(rl.check(&1, t0), Decision::Log { suppressed: 0 });
        assert_eq!(rl.check(&1, t0), Decision::Log { suppressed: 0 });
    }
}
