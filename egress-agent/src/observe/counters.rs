//! The counters of what the agent observes: the kernel's (every allow, denial and audit hit by
//! reason, lost events, failed inserts: [`Stats`], read through the owner) and the observer's
//! own (what the denial log did with the events it got: [`LogCounters`]). `status` reads the
//! kernel's from the pinned map; the `ready` line and the coming metrics read them here.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    enforcer::Stats,
    owner::{CommandError, EnforcerHandle},
};

/// What the denial log did with the events it got (monotonic, shared with readers).
#[derive(Debug, Default)]
pub struct LogCounters {
    events: AtomicU64,
    logged: AtomicU64,
    suppressed: AtomicU64,
    overflowed: AtomicU64,
    lagged: AtomicU64,
}

/// A reading of [`LogCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LogSnapshot {
    /// Denials and audit hits received.
    pub events: u64,
    /// Logged one by one.
    pub logged: u64,
    /// Repeats of a key logged within its interval (summed up when it ends).
    pub suppressed: u64,
    /// New keys while the table was full (summed up once per interval).
    pub overflowed: u64,
    /// Dropped before the logger read them (it fell behind the owner).
    pub lagged: u64,
}

/// What the denial log did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Logged,
    Suppressed,
    Overflowed,
}

impl LogCounters {
    pub(crate) fn count(&self, outcome: Outcome) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let c = match outcome {
            Outcome::Logged => &self.logged,
            Outcome::Suppressed => &self.suppressed,
            Outcome::Overflowed => &self.overflowed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_lagged(&self, n: u64) {
        self.lagged.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LogSnapshot {
        LogSnapshot {
            events: self.events.load(Ordering::Relaxed),
            logged: self.logged.load(Ordering::Relaxed),
            suppressed: self.suppressed.load(Ordering::Relaxed),
            overflowed: self.overflowed.load(Ordering::Relaxed),
            lagged: self.lagged.load(Ordering::Relaxed),
        }
    }
}

/// Every counter of what the agent observes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub kernel: Stats,
    pub log: LogSnapshot,
}

/// Reads the kernel's counters (through the owner) and the denial log's.
pub async fn read(handle: &EnforcerHandle, log: &LogCounters) -> Result<Counters, CommandError> {
    Ok(Counters {
        kernel: handle.stats().await?,
        log: log.snapshot(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted() {
        let c = LogCounters::default();
        c.count(Outcome::Logged);
        c.count(Outcome::Suppressed);
        c.count(Outcome::Suppressed);
        c.count(Outcome::Overflowed);
        c.count_lagged(5);
        assert_eq!(
            c.snapshot(),
            LogSnapshot {
                events: 4,
                logged: 1,
                suppressed: 2,
                overflowed: 1,
                lagged: 5
            }
        );
    }
}
