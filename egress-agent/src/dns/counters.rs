//! What the proxy counts, over all containers (atomics: every question touches them).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The proxy's counters.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot {
            $(pub $name: u64,)*
        }

        impl Counters {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl std::fmt::Display for Snapshot {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut first = true;
                $(
                    if !first { f.write_str(" ")?; }
                    first = false;
                    write!(f, "{}={}", stringify!($name), self.$name)?;
                )*
                let _ = first;
                Ok(())
            }
        }
    };
}

counters! {
    /// Questions received from containers.
    questions,
    /// Answers released to containers (from a resolver).
    answered,
    /// Questions for names the policy does not allow, answered NXDOMAIN/REFUSED, never forwarded.
    refused,
    /// Questions for names not allowed, forwarded because the container is in audit mode.
    audited,
    /// Questions answered SERVFAIL: no resolver answered in time, or its answer was unusable.
    failed,
    /// Answers held longer than `--dns-hold` while their addresses were written: SERVFAIL.
    held_too_long,
    /// Answers whose addresses could not be written: SERVFAIL.
    learn_failed,
    /// Messages that were no DNS query: FORMERR, or dropped when not even the id was readable.
    malformed,
    /// Questions dropped because the container had too many in flight.
    dropped_busy,
    /// Learned addresses pushed out by the per-name cap.
    evicted,
}

/// Adds one.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}
