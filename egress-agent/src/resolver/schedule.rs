//! When to look a domain up again and which of its IPs are still allowed: pure logic, with the
//! time passed in (`now`) so that it is tested with a fake clock.
//!
//! A [`FamilyState`] holds the last good answer of one family (A or AAAA) of one domain and the
//! IPs that dropped out of an answer but are still in their grace period, with its own refresh
//! time and failure backoff. Its *effective* set is the union of both. A [`DomainState`] is a
//! domain's two families, kept independently — a failure of one never touches the other — and
//! its effective set, the one that belongs in the kernel, is the union of theirs (a family that
//! never answered adds nothing). Every method that moves time forward returns the [`Change`] of
//! the effective set, so the caller only writes what changed.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{Family, PerFamily, ResolverError};

/// How answers are refreshed and how long old IPs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshConfig {
    /// A domain is never looked up again sooner than this after an answer, whatever its TTL
    /// (TTL 0 included). Default 5 s.
    pub ttl_floor: Duration,
    /// A domain is looked up again at the latest this long after an answer, whatever its TTL;
    /// also the longest wait between retries after failures. Default 300 s.
    pub ttl_ceiling: Duration,
    /// How long an IP that dropped out of an answer (or whose name stopped existing) stays in
    /// the effective set, so that answers cached by applications and open connections keep
    /// working. Zero removes it at once. Default 300 s.
    pub grace: Duration,
    /// Wait before the first retry after a failed lookup; it doubles with every consecutive
    /// failure. Default 1 s.
    pub failure_retry_min: Duration,
    /// Longest wait between retries after failures (also bounded by `ttl_ceiling`).
    /// Default 30 s.
    pub failure_retry_max: Duration,
}

impl RefreshConfig {
    /// Default of [`RefreshConfig::ttl_floor`].
    pub const DEFAULT_TTL_FLOOR: Duration = Duration::from_secs(5);
    /// Default of [`RefreshConfig::ttl_ceiling`].
    pub const DEFAULT_TTL_CEILING: Duration = Duration::from_secs(300);
    /// Default of [`RefreshConfig::grace`].
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);
    /// Default of [`RefreshConfig::failure_retry_min`].
    pub const DEFAULT_FAILURE_RETRY_MIN: Duration = Duration::from_secs(1);
    /// Default of [`RefreshConfig::failure_retry_max`].
    pub const DEFAULT_FAILURE_RETRY_MAX: Duration = Duration::from_secs(30);

    /// Checks that the configuration cannot make the service spin or contradict itself: the
    /// floor and the first retry must be positive, floor <= ceiling, and retry min <= max.
    pub fn validate(&self) -> Result<(), ResolverError> {
        let bad = |msg: String| Err(ResolverError::InvalidConfig(msg));
        if self.ttl_floor.is_zero() {
            return bad("the TTL floor must be positive".into());
        }
        if self.failure_retry_min.is_zero() {
            return bad("the first failure retry delay must be positive".into());
        }
        if self.ttl_floor > self.ttl_ceiling {
            return bad(format!(
                "the TTL floor ({:?}) is above the TTL ceiling ({:?})",
                self.ttl_floor, self.ttl_ceiling
            ));
        }
        if self.failure_retry_min > self.failure_retry_max {
            return bad(format!(
                "the first failure retry delay ({:?}) is above the longest one ({:?})",
                self.failure_retry_min, self.failure_retry_max
            ));
        }
        Ok(())
    }

    /// How long after an answer with this TTL the domain is looked up again: the TTL clamped to
    /// `[ttl_floor, ttl_ceiling]` (the ceiling wins if they cross).
    pub fn refresh_after(&self, ttl: Duration) -> Duration {
        ttl.max(self.ttl_floor).min(self.ttl_ceiling)
    }

    /// How long to wait before retrying after `consecutive_failures` (>= 1) failures in a row:
    /// `failure_retry_min * 2^(n-1)`, at most `failure_retry_max` and `ttl_ceiling`.
    pub fn retry_after(&self, consecutive_failures: u32) -> Duration {
        let doublings = consecutive_failures.saturating_sub(1).min(31);
        let cap = self.failure_retry_max.min(self.ttl_ceiling);
        self.failure_retry_min
            .checked_mul(1u32 << doublings)
            .unwrap_or(Duration::MAX)
            .min(cap)
    }
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            ttl_floor: Self::DEFAULT_TTL_FLOOR,
            ttl_ceiling: Self::DEFAULT_TTL_CEILING,
            grace: Self::DEFAULT_GRACE,
            failure_retry_min: Self::DEFAULT_FAILURE_RETRY_MIN,
            failure_retry_max: Self::DEFAULT_FAILURE_RETRY_MAX,
        }
    }
}

/// What changed in an effective set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// IPs that entered the effective set.
    pub added: BTreeSet<IpAddr>,
    /// IPs that left it.
    pub removed: BTreeSet<IpAddr>,
}

impl Change {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Adds a change of a disjoint set (the other family's).
    fn merge(&mut self, other: Change) {
        self.added.extend(other.added);
        self.removed.extend(other.removed);
    }

    fn between(before: &BTreeSet<IpAddr>, after: &BTreeSet<IpAddr>) -> Self {
        Self {
            added: after.difference(before).copied().collect(),
            removed: before.difference(after).copied().collect(),
        }
    }
}

/// The resolution state of one family of one domain.
///
/// Life cycle: [`new`](Self::new) (a lookup is due at once) → when [`is_due`](Self::is_due),
/// [`begin_lookup`](Self::begin_lookup) → [`on_answer`](Self::on_answer) or
/// [`on_failure`](Self::on_failure) (which schedule the next lookup) → ... and
/// [`expire`](Self::expire) whenever [`next_deadline`](Self::next_deadline) passes.
#[derive(Debug, Clone)]
pub struct FamilyState {
    config: RefreshConfig,
    /// IPs of the last good answer.
    current: BTreeSet<IpAddr>,
    /// IPs that dropped out of an answer → when their grace period ends.
    grace: BTreeMap<IpAddr, Instant>,
    /// At least one answer (empty ones included) was received.
    answered: bool,
    /// When the next lookup is due.
    refresh_at: Instant,
    /// A lookup was started and has not reported yet.
    in_flight: bool,
    /// Failed lookups since the last answer.
    failures: u32,
}

impl FamilyState {
    /// A family never looked up; its first lookup is due at `now`.
    pub fn new(config: RefreshConfig, now: Instant) -> Self {
        Self {
            config,
            current: BTreeSet::new(),
            grace: BTreeMap::new(),
            answered: false,
            refresh_at: now,
            in_flight: false,
            failures: 0,
        }
    }

    /// The effective set: the last good answer and the IPs still in grace.
    pub fn effective(&self) -> BTreeSet<IpAddr> {
        self.current
            .iter()
            .chain(self.grace.keys())
            .copied()
            .collect()
    }

    /// IPs of the last good answer (without those in grace).
    pub fn current(&self) -> &BTreeSet<IpAddr> {
        &self.current
    }

    /// IPs in grace and when they go.
    pub fn in_grace(&self) -> &BTreeMap<IpAddr, Instant> {
        &self.grace
    }

    /// At least one answer was received (an empty one counts).
    pub fn has_answer(&self) -> bool {
        self.answered
    }

    /// Failed lookups since the last answer.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// At least one lookup reported: an answer or a failure.
    pub fn has_outcome(&self) -> bool {
        self.answered || self.failures > 0
    }

    /// A lookup is running.
    pub fn is_in_flight(&self) -> bool {
        self.in_flight
    }

    /// When the next lookup is due (in the past while one is running).
    pub fn refresh_at(&self) -> Instant {
        self.refresh_at
    }

    /// A lookup should be started now.
    pub fn is_due(&self, now: Instant) -> bool {
        !self.in_flight && self.refresh_at <= now
    }

    /// Marks a lookup as started: no other is due until it reports.
    pub fn begin_lookup(&mut self) {
        self.in_flight = true;
    }

    /// The earliest instant something has to be done: a lookup becomes due (not while one is
    /// running) or a grace period ends. `None` if nothing is scheduled.
    pub fn next_deadline(&self) -> Option<Instant> {
        let grace = self.grace.values().min().copied();
        let refresh = (!self.in_flight).then_some(self.refresh_at);
        match (grace, refresh) {
            (Some(g), Some(r)) => Some(g.min(r)),
            (g, r) => g.or(r),
        }
    }

    /// A lookup answered `ips` (possibly none: NXDOMAIN or no records) with this TTL. IPs of the
    /// previous answer that are missing enter their grace period; IPs in grace that are back
    /// leave it. The next lookup is due after the TTL clamped to the floor and ceiling.
    pub fn on_answer(&mut self, now: Instant, ips: BTreeSet<IpAddr>, ttl: Duration) -> Change {
        let before = self.effective();
        let until = now + self.config.grace;
        for gone in self.current.difference(&ips) {
            self.grace.entry(*gone).or_insert(until);
        }
        for ip in &ips {
            self.grace.remove(ip);
        }
        self.current = ips;
        self.answered = true;
        self.in_flight = false;
        self.failures = 0;
        self.refresh_at = now + self.config.refresh_after(ttl);
        self.drop_expired(now);
        Change::between(&before, &self.effective())
    }

    /// A lookup failed: the last good IPs stay; the next attempt is due after the backoff delay
    /// of this run of failures. Only grace periods that ended by `now` change the set.
    pub fn on_failure(&mut self, now: Instant) -> Change {
        self.in_flight = false;
        self.failures = self.failures.saturating_add(1);
        self.refresh_at = now + self.config.retry_after(self.failures);
        self.expire(now)
    }

    /// Drops the IPs whose grace period ended by `now`.
    pub fn expire(&mut self, now: Instant) -> Change {
        // The service calls this for every domain after every finished lookup: make the
        // common case (nothing to expire) free of set building.
        if !self.grace.values().any(|until| *until <= now) {
            return Change::default();
        }
        let before = self.effective();
        self.drop_expired(now);
        Change::between(&before, &self.effective())
    }

    fn drop_expired(&mut self, now: Instant) {
        self.grace.retain(|_, until| *until > now);
    }
}

/// The resolution state of one domain: its two families, each with its own answer, TTL,
/// grace periods and failure backoff (see [`FamilyState`]).
///
/// The same life cycle as [`FamilyState`], per family: [`due`](Self::due) lists the families to
/// look up now; [`begin_lookup`](Self::begin_lookup), [`on_answer`](Self::on_answer) and
/// [`on_failure`](Self::on_failure) name the family they are about. Answers keep only the
/// addresses of their family, so the two families' sets never overlap.
#[derive(Debug, Clone)]
pub struct DomainState {
    families: PerFamily<FamilyState>,
}

impl DomainState {
    /// A domain never looked up; the first lookups of both families are due at `now`.
    pub fn new(config: RefreshConfig, now: Instant) -> Self {
        Self {
            families: PerFamily::from_fn(|_| FamilyState::new(config, now)),
        }
    }

    /// The state of one family.
    pub fn family(&self, family: Family) -> &FamilyState {
        &self.families[family]
    }

    /// The effective set: the union of both families' (answers and IPs in grace).
    pub fn effective(&self) -> BTreeSet<IpAddr> {
        let mut all = self.families.v4.effective();
        all.extend(self.families.v6.effective());
        all
    }

    /// At least one family was answered (an empty answer counts).
    pub fn has_answer(&self) -> bool {
        self.families.iter().any(|(_, s)| s.has_answer())
    }

    /// Every family has reported at least once (answered or failed): what `add` waits for.
    pub fn is_settled(&self) -> bool {
        self.families.iter().all(|(_, s)| s.has_outcome())
    }

    /// A lookup of either family is running.
    pub fn is_in_flight(&self) -> bool {
        self.families.iter().any(|(_, s)| s.is_in_flight())
    }

    /// The families whose lookup should be started now, with when it became due.
    pub fn due(&self, now: Instant) -> impl Iterator<Item = (Family, Instant)> + '_ {
        self.families
            .iter()
            .filter(move |(_, s)| s.is_due(now))
            .map(|(f, s)| (f, s.refresh_at()))
    }

    /// Marks a lookup of `family` as started.
    pub fn begin_lookup(&mut self, family: Family) {
        self.families[family].begin_lookup();
    }

    /// The earliest instant something has to be done for either family.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.families
            .iter()
            .filter_map(|(_, s)| s.next_deadline())
            .min()
    }

    /// `family` answered `ips` with this TTL (see [`FamilyState::on_answer`]); addresses of the
    /// other family in `ips` are ignored. The other family is untouched, but grace periods of
    /// both that ended by `now` are reported too.
    pub fn on_answer(
        &mut self,
        family: Family,
        now: Instant,
        mut ips: BTreeSet<IpAddr>,
        ttl: Duration,
    ) -> Change {
        ips.retain(|ip| Family::of(ip) == family);
        let mut change = self.families[family].on_answer(now, ips, ttl);
        change.merge(self.families[family.other()].expire(now));
        change
    }

    /// A lookup of `family` failed: its last good IPs stay and it backs off (see
    /// [`FamilyState::on_failure`]); the other family is untouched.
    pub fn on_failure(&mut self, family: Family, now: Instant) -> Change {
        let mut change = self.families[family].on_failure(now);
        change.merge(self.families[family.other()].expire(now));
        change
    }

    /// Drops the IPs of both families whose grace period ended by `now`.
    pub fn expire(&mut self, now: Instant) -> Change {
        let mut change = Change::default();
        for (_, s) in self.families.iter_mut() {
            change.merge(s.expire(now));
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
        ips.iter().map(|s| ip(s)).collect()
    }

    fn config() -> RefreshConfig {
        RefreshConfig {
            ttl_floor: secs(5),
            ttl_ceiling: secs(300),
            grace: secs(60),
            failure_retry_min: secs(1),
            failure_retry_max: secs(30),
        }
    }

    fn change(added: &[&str], removed: &[&str]) -> Change {
        Change {
            added: set(added),
            removed: set(removed),
        }
    }

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = RefreshConfig::default();
        assert_eq!(c.ttl_floor, secs(5));
        assert_eq!(c.ttl_ceiling, secs(300));
        assert_eq!(c.grace, secs(300));
        assert_eq!(c.failure_retry_min, secs(1));
        assert_eq!(c.failure_retry_max, secs(30));
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_spinning_or_crossed_settings() {
        let zero_floor = RefreshConfig {
            ttl_floor: Duration::ZERO,
            ..config()
        };
        assert!(zero_floor.validate().is_err());
        let zero_retry = RefreshConfig {
            failure_retry_min: Duration::ZERO,
            ..config()
        };
        assert!(zero_retry.validate().is_err());
        let crossed = RefreshConfig {
            ttl_floor: secs(10),
            ttl_ceiling: secs(9),
            ..config()
        };
        assert!(crossed.validate().is_err());
        let crossed_retry = RefreshConfig {
            failure_retry_min: secs(10),
            failure_retry_max: secs(9),
            ..config()
        };
        assert!(crossed_retry.validate().is_err());
        let zero_grace = RefreshConfig {
            grace: Duration::ZERO,
            ..config()
        };
        zero_grace.validate().unwrap();
    }

    #[test]
    fn ttl_is_clamped_to_floor_and_ceiling() {
        let c = config();
        assert_eq!(c.refresh_after(Duration::ZERO), secs(5));
        assert_eq!(c.refresh_after(secs(1)), secs(5));
        assert_eq!(c.refresh_after(secs(5)), secs(5));
        assert_eq!(c.refresh_after(secs(60)), secs(60));
        assert_eq!(c.refresh_after(secs(300)), secs(300));
        assert_eq!(c.refresh_after(secs(86_400)), secs(300));
        assert_eq!(c.refresh_after(Duration::MAX), secs(300));
    }

    #[test]
    fn retry_backoff_doubles_up_to_the_max_and_the_ceiling() {
        let c = config();
        let delays: Vec<_> = (1..=8).map(|n| c.retry_after(n)).collect();
        assert_eq!(
            delays,
            [1, 2, 4, 8, 16, 30, 30, 30].map(secs).to_vec(),
            "1 s doubling, capped at 30 s"
        );
        assert_eq!(c.retry_after(u32::MAX), secs(30), "no overflow");
        assert_eq!(c.retry_after(0), secs(1));
        let low_ceiling = RefreshConfig {
            ttl_ceiling: secs(10),
            ..c
        };
        assert_eq!(
            low_ceiling.retry_after(5),
            secs(10),
            "bounded by the ceiling"
        );
    }

    #[test]
    fn a_new_domain_is_due_at_once_and_not_while_in_flight() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        assert!(s.is_due(t0));
        assert_eq!(s.next_deadline(), Some(t0));
        assert!(!s.has_answer());
        s.begin_lookup();
        assert!(s.is_in_flight());
        assert!(!s.is_due(t0 + secs(1000)));
        assert_eq!(
            s.next_deadline(),
            None,
            "nothing to do until the lookup reports"
        );
    }

    #[test]
    fn first_answer_adds_everything_and_schedules_by_ttl() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.begin_lookup();
        let c = s.on_answer(t0, set(&["10.0.0.1", "2001:db8::1"]), secs(60));
        assert_eq!(c, change(&["10.0.0.1", "2001:db8::1"], &[]));
        assert!(s.has_answer());
        assert!(!s.is_in_flight());
        assert_eq!(s.refresh_at(), t0 + secs(60));
        assert_eq!(s.next_deadline(), Some(t0 + secs(60)));
        assert!(!s.is_due(t0 + secs(59)));
        assert!(s.is_due(t0 + secs(60)));
    }

    #[test]
    fn short_and_long_ttls_are_clamped_when_scheduling() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.on_answer(t0, set(&["10.0.0.1"]), secs(1));
        assert_eq!(s.refresh_at(), t0 + secs(5), "floor");
        s.on_answer(t0 + secs(5), set(&["10.0.0.1"]), secs(100_000));
        assert_eq!(s.refresh_at(), t0 + secs(305), "ceiling");
    }

    #[test]
    fn same_answer_changes_nothing() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.on_answer(t0, set(&["10.0.0.1"]), secs(10));
        let c = s.on_answer(t0 + secs(10), set(&["10.0.0.1"]), secs(10));
        assert!(c.is_empty());
        assert_eq!(s.refresh_at(), t0 + secs(20));
    }

    #[test]
    fn dropped_ip_stays_for_the_grace_period_then_goes() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.on_answer(t0, set(&["10.0.0.1"]), secs(10));
        let t1 = t0 + secs(10);
        let c = s.on_answer(t1, set(&["10.0.0.2"]), secs(10));
        assert_eq!(
            c,
            change(&["10.0.0.2"], &[]),
            "the old IP is still effective"
        );
        assert_eq!(s.effective(), set(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(s.current(), &set(&["10.0.0.2"]));
        assert_eq!(s.in_grace().get(&ip("10.0.0.1")), Some(&(t1 + secs(60))));
        // Refreshes before the grace ends don't restart it.
        let c = s.on_answer(t1 + secs(10), set(&["10.0.0.2"]), secs(10));
        assert!(c.is_empty());
        assert_eq!(s.in_grace().get(&ip("10.0.0.1")), Some(&(t1 + secs(60))));
        // The deadline is the earlier of the refresh and the grace end.
        assert_eq!(s.next_deadline(), Some(t1 + secs(20)));
        assert!(s.expire(t1 + secs(59)).is_empty());
        let c = s.expire(t1 + secs(60));
        assert_eq!(c, change(&[], &["10.0.0.1"]));
        assert_eq!(s.effective(), set(&["10.0.0.2"]));
        assert!(s.in_grace().is_empty());
    }

    #[test]
    fn next_deadline_is_the_grace_end_when_it_comes_first() {
        let t0 = Instant::now();
        let c = RefreshConfig {
            grace: secs(3),
            ..config()
        };
        let mut s = FamilyState::new(c, t0);
        s.on_answer(t0, set(&["10.0.0.1"]), secs(100));
        s.on_answer(t0, set(&["10.0.0.2"]), secs(100));
        assert_eq!(s.next_deadline(), Some(t0 + secs(3)));
        s.begin_lookup();
        assert_eq!(
            s.next_deadline(),
            Some(t0 + secs(3)),
            "grace still ends while a lookup runs"
        );
    }

    #[test]
    fn ip_coming_back_during_grace_leaves_grace_without_a_change() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.on_answer(t0, set(&["10.0.0.1"]), secs(10));
        s.on_answer(t0 + secs(10), set(&["10.0.0.2"]), secs(10));
        let c = s.on_answer(t0 + secs(20), set(&["10.0.0.1"]), secs(10));
        assert!(c.is_empty(), "both were and stay effective: {c:?}");
        assert_eq!(
            s.in_grace().keys().copied().collect::<Vec<_>>(),
            [ip("10.0.0.2")]
        );
        // 10.0.0.1 must not be removed when its old grace would have ended (t0 + 70 s)...
        assert!(s.expire(t0 + secs(70)).is_empty());
        // ... and 10.0.0.2 goes when its own grace ends.
        let c = s.expire(t0 + secs(20) + secs(60));
        assert_eq!(c, change(&[], &["10.0.0.2"]));
        assert_eq!(s.effective(), set(&["10.0.0.1"]));
    }

    #[test]
    fn zero_grace_removes_at_once() {
        let t0 = Instant::now();
        let c = RefreshConfig {
            grace: Duration::ZERO,
            ..config()
        };
        let mut s = FamilyState::new(c, t0);
        s.on_answer(t0, set(&["10.0.0.1"]), secs(10));
        let c = s.on_answer(t0 + secs(10), set(&["10.0.0.2"]), secs(10));
        assert_eq!(c, change(&["10.0.0.2"], &["10.0.0.1"]));
        assert!(s.in_grace().is_empty());
    }

    #[test]
    fn empty_answer_is_an_answer_and_ips_enter_grace() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.on_answer(t0, set(&["10.0.0.1", "::1"]), secs(10));
        s.begin_lookup();
        let c = s.on_answer(t0 + secs(10), BTreeSet::new(), Duration::ZERO);
        assert!(c.is_empty(), "still effective during grace");
        assert_eq!(s.consecutive_failures(), 0);
        assert!(s.current().is_empty());
        assert_eq!(s.refresh_at(), t0 + secs(15), "TTL 0 → floor");
        let c = s.expire(t0 + secs(70));
        assert_eq!(c, change(&[], &["10.0.0.1", "::1"]));
        assert!(s.effective().is_empty());
    }

    #[test]
    fn first_answer_empty_is_still_an_answer() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.begin_lookup();
        let c = s.on_answer(t0, BTreeSet::new(), secs(30));
        assert!(c.is_empty());
        assert!(s.has_answer());
        assert_eq!(s.refresh_at(), t0 + secs(30));
    }

    #[test]
    fn failure_keeps_the_last_good_ips_and_backs_off() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.on_answer(t0, set(&["10.0.0.1"]), secs(10));
        let mut t = t0 + secs(10);
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert!(s.is_due(t));
            s.begin_lookup();
            let c = s.on_failure(t);
            assert!(c.is_empty());
            assert_eq!(s.effective(), set(&["10.0.0.1"]), "last good IPs kept");
            waits.push(s.refresh_at() - t);
            t = s.refresh_at();
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30].map(secs).to_vec());
        assert_eq!(s.consecutive_failures(), 7);
        // Long after the old TTL and the grace period, the IP is still there.
        assert!(s.expire(t + secs(3600)).is_empty());
        // Success resets the backoff.
        s.begin_lookup();
        s.on_answer(t, set(&["10.0.0.1"]), secs(10));
        assert_eq!(s.consecutive_failures(), 0);
        s.begin_lookup();
        s.on_failure(t + secs(10));
        assert_eq!(s.refresh_at(), t + secs(11));
    }

    #[test]
    fn failure_before_any_answer_retries_with_backoff() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.begin_lookup();
        assert!(s.on_failure(t0).is_empty());
        assert!(!s.has_answer());
        assert_eq!(s.refresh_at(), t0 + secs(1));
        s.begin_lookup();
        s.on_failure(t0 + secs(1));
        assert_eq!(s.refresh_at(), t0 + secs(3));
    }

    #[test]
    fn grace_keeps_running_during_failures() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.on_answer(t0, set(&["10.0.0.1"]), secs(10));
        s.on_answer(t0 + secs(10), set(&["10.0.0.2"]), secs(10));
        // Grace of 10.0.0.1 ends at t0 + 70 s; a failure after that reports its removal.
        let c = s.on_failure(t0 + secs(80));
        assert_eq!(c, change(&[], &["10.0.0.1"]));
        assert_eq!(s.effective(), set(&["10.0.0.2"]));
    }

    #[test]
    fn an_answer_also_reports_grace_that_ended() {
        let t0 = Instant::now();
        let mut s = FamilyState::new(config(), t0);
        s.on_answer(t0, set(&["10.0.0.1"]), secs(10));
        s.on_answer(t0 + secs(10), set(&["10.0.0.2"]), secs(10));
        let c = s.on_answer(t0 + secs(100), set(&["10.0.0.3"]), secs(10));
        // 10.0.0.1's grace ended; 10.0.0.2 enters grace; 10.0.0.3 is new.
        assert_eq!(c, change(&["10.0.0.3"], &["10.0.0.1"]));
        assert_eq!(s.effective(), set(&["10.0.0.2", "10.0.0.3"]));
    }

    #[test]
    fn a_family_that_fails_costs_the_other_nothing() {
        let t0 = Instant::now();
        let mut d = DomainState::new(config(), t0);
        let due: Vec<_> = d.due(t0).collect();
        assert_eq!(
            due,
            [(Family::V4, t0), (Family::V6, t0)],
            "both due at once"
        );
        d.begin_lookup(Family::V4);
        d.begin_lookup(Family::V6);
        assert_eq!(d.due(t0).count(), 0);
        assert!(!d.is_settled());
        let c = d.on_answer(Family::V4, t0, set(&["10.0.0.1"]), secs(60));
        assert_eq!(c, change(&["10.0.0.1"], &[]));
        assert!(d.has_answer());
        assert!(!d.is_settled(), "AAAA has not reported yet");
        let c = d.on_failure(Family::V6, t0);
        assert!(c.is_empty(), "a family that never answered adds nothing");
        assert!(d.is_settled());
        assert_eq!(d.effective(), set(&["10.0.0.1"]));
        // AAAA alone is retried with its own backoff; A waits for its TTL.
        assert_eq!(d.family(Family::V6).refresh_at(), t0 + secs(1));
        assert_eq!(d.family(Family::V4).refresh_at(), t0 + secs(60));
        assert_eq!(d.next_deadline(), Some(t0 + secs(1)));
        let due: Vec<_> = d.due(t0 + secs(1)).map(|(f, _)| f).collect();
        assert_eq!(due, [Family::V6]);
        d.begin_lookup(Family::V6);
        d.on_failure(Family::V6, t0 + secs(1));
        assert_eq!(d.family(Family::V6).refresh_at(), t0 + secs(3));
        assert_eq!(d.family(Family::V6).consecutive_failures(), 2);
        assert_eq!(d.family(Family::V4).consecutive_failures(), 0);
    }

    #[test]
    fn a_failing_family_keeps_its_ips_while_the_other_changes() {
        let t0 = Instant::now();
        let mut d = DomainState::new(config(), t0);
        d.on_answer(Family::V4, t0, set(&["10.0.0.1"]), secs(10));
        d.on_answer(Family::V6, t0, set(&["fd00::1"]), secs(10));
        let t1 = t0 + secs(10);
        assert!(d.on_failure(Family::V6, t1).is_empty());
        let c = d.on_answer(Family::V4, t1, set(&["10.0.0.2"]), secs(10));
        assert_eq!(c, change(&["10.0.0.2"], &[]), "10.0.0.1 in grace");
        assert_eq!(d.effective(), set(&["10.0.0.1", "10.0.0.2", "fd00::1"]));
        // A's grace ends; AAAA, still failing, keeps its last good address.
        let c = d.on_failure(Family::V6, t1 + secs(60));
        assert_eq!(c, change(&[], &["10.0.0.1"]));
        assert_eq!(d.effective(), set(&["10.0.0.2", "fd00::1"]));
        assert!(d.expire(t1 + secs(3600)).is_empty());
    }

    #[test]
    fn an_answer_keeps_only_its_familys_addresses() {
        let t0 = Instant::now();
        let mut d = DomainState::new(config(), t0);
        d.on_answer(Family::V6, t0, set(&["fd00::1"]), secs(10));
        // An A answer carrying an AAAA address cannot touch (or duplicate) the AAAA set.
        let c = d.on_answer(Family::V4, t0, set(&["10.0.0.1", "fd00::9"]), secs(10));
        assert_eq!(c, change(&["10.0.0.1"], &[]));
        assert_eq!(d.family(Family::V4).current(), &set(&["10.0.0.1"]));
        // An empty A answer (NODATA, NXDOMAIN) is an answer: only A's IPs enter grace.
        let c = d.on_answer(Family::V4, t0 + secs(10), BTreeSet::new(), secs(10));
        assert!(c.is_empty());
        let c = d.expire(t0 + secs(70));
        assert_eq!(c, change(&[], &["10.0.0.1"]));
        assert_eq!(d.effective(), set(&["fd00::1"]));
    }

    #[test]
    fn a_domain_whose_families_both_fail_has_no_answer_but_is_settled() {
        let t0 = Instant::now();
        let mut d = DomainState::new(config(), t0);
        d.on_failure(Family::V4, t0);
        assert!(!d.is_settled());
        d.on_failure(Family::V6, t0);
        assert!(d.is_settled());
        assert!(!d.has_answer());
        assert!(d.effective().is_empty());
    }
}
