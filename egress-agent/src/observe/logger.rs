//! The denial log: one line per denial or audit hit, naming the container, once per
//! (container, destination) per interval; repeats are summed up in one line when the interval
//! ends. Memory is bounded (see [`RateLimiter`]).

use std::{net::IpAddr, sync::Arc, time::Duration};

use egress_common::event::{Hook, Verdict};
use tokio::sync::broadcast::{self, error::RecvError};
use tracing::{info, warn};

use super::{
    attribute::{Attribution, PolicyOwners},
    counters::{LogCounters, Outcome},
    denials::{Decision, RateLimiter},
    events::{EgressEvent, protocol_name},
};
use crate::reconcile::index::SharedIndex;
use egress_common::container::ContainerId;

/// One log line for an event (`$level` is `warn` or `info`).
macro_rules! log_egress {
    ($level:ident, $msg:literal, $ev:ident, $meta:ident, $id:ident, $domains:ident, $mode:expr) => {
        $level!(
            container = %$meta.name,
            container_id = %$id,
            image = %$meta.image,
            cgroup_id = $ev.cgroup_id,
            pid = $ev.pid,
            comm = %$ev.comm,
            attempt = %$ev.attempt(),
            protocol = %$ev.protocol_name(),
            destination = %$ev.addr,
            port = $ev.port,
            domain = %$domains,
            mode = %$mode,
            reason = $ev.reason_name(),
            $msg
        )
    };
}

/// What the denial log counts as "the same denial".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DenialKey {
    container: Option<ContainerId>,
    /// Names the cgroup when no container is known.
    cgroup_id: u64,
    addr: IpAddr,
    port: u16,
    protocol: u8,
    /// Tells a refused socket (no destination) from a connect, and socket types apart.
    hook: Hook,
    sock_type: u8,
    verdict: Verdict,
}

/// How often the logger looks for keys whose interval ended.
fn flush_period(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// Logs the events of `events` until the stream closes (the owner stopped).
pub(super) async fn run<O: PolicyOwners>(
    mut events: broadcast::Receiver<EgressEvent>,
    attribution: Attribution<O>,
    index: SharedIndex,
    interval: Duration,
    counters: Arc<LogCounters>,
) {
    let mut limiter = RateLimiter::new(interval);
    let mut flush = tokio::time::interval(flush_period(interval));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = flush.tick() => {
                report_expired(&mut limiter, &index, interval);
                continue;
            }
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => {
                counters.count_lagged(n);
                warn!(
                    dropped = n,
                    "event log fell behind; events dropped (counters still have them)"
                );
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let container = attribution.container_of(&ev).await;
        let key = DenialKey {
            container,
            cgroup_id: ev.cgroup_id,
            addr: ev.addr,
            port: ev.port,
            protocol: ev.protocol,
            hook: ev.hook,
            sock_type: ev.sock_type,
            verdict: ev.verdict,
        };
        let now = std::time::Instant::now();
        for expired in limiter.expire(now) {
            report_repeats(&index, &expired.key, expired.suppressed, interval);
        }
        match limiter.check(&key, now) {
            Decision::Log => counters.count(Outcome::Logged),
            Decision::Suppress => {
                counters.count(Outcome::Suppressed);
                continue;
            }
            Decision::Overflow => {
                counters.count(Outcome::Overflowed);
                continue;
            }
        }
        let meta = container.and_then(|c| index.meta(&c)).unwrap_or_default();
        let domains = index.domains_of(container.as_ref(), &ev.addr).join(",");
        let id = container.map(|c| c.short().to_owned()).unwrap_or_default();
        match ev.verdict {
            Verdict::Denied => log_egress!(warn, "egress denied", ev, meta, id, domains, meta.mode),
            Verdict::Audited => log_egress!(
                info,
                "egress would be denied (audit mode)",
                ev,
                meta,
                id,
                domains,
                "audit"
            ),
        }
    }
}

/// The summary lines of keys whose interval ended, and of the events the full table dropped.
fn report_expired(limiter: &mut RateLimiter<DenialKey>, index: &SharedIndex, interval: Duration) {
    let now = std::time::Instant::now();
    for expired in limiter.expire(now) {
        report_repeats(index, &expired.key, expired.suppressed, interval);
    }
    if let Some(n) = limiter.take_overflow(now) {
        warn!(
            events = n,
            tracked = limiter.capacity(),
            interval_secs = interval.as_secs(),
            "denials to more destinations than the denial log tracks per interval were not logged one by one (the counters have every one)"
        );
    }
}

/// One line for the repeats of a logged denial within its interval.
fn report_repeats(index: &SharedIndex, key: &DenialKey, repeats: u64, interval: Duration) {
    let meta = key
        .container
        .and_then(|c| index.meta(&c))
        .unwrap_or_default();
    let id = key
        .container
        .map(|c| c.short().to_owned())
        .unwrap_or_default();
    let verdict = match key.verdict {
        Verdict::Denied => "denied",
        Verdict::Audited => "audited",
    };
    info!(
        container = %meta.name,
        container_id = %id,
        cgroup_id = key.cgroup_id,
        protocol = %protocol_name(key.protocol),
        destination = %key.addr,
        port = key.port,
        verdict,
        repeats,
        interval_secs = interval.as_secs(),
        "egress repeated within the denial log interval"
    );
}
