//! Waiting for a condition: the one poll loop of the harness.

use std::{
    thread,
    time::{Duration, Instant},
};

/// Calls `f` every `every` until it returns `Some` (its value) or `timeout` has passed (`None`).
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every);
    }
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
#[track_caller]
pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, Duration::from_millis(100), f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `cond` every millisecond until it holds (true) or `timeout` passes (false).
pub fn holds_within(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll(timeout, Duration::from_millis(1), || cond().then_some(())).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_returns_the_first_value_or_none_after_the_timeout() {
        let mut n = 0;
        let v = poll(Duration::from_secs(5), Duration::ZERO, || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, Some(3));
        assert_eq!(poll::<()>(Duration::ZERO, Duration::ZERO, || None), None);
        assert!(!holds_within(Duration::from_millis(5), || false));
    }
}
