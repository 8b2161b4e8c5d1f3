//! One owner's learned addresses: the addresses its DNS answers carried, per name, until they
//! expire.
//!
//! - [`Store::learn`] holds each address of an answer under the name asked until
//!   `now + ttl + grace` (the TTL capped at [`MAX_TTL`]). An address the name already holds is
//!   refreshed: it keeps the later of its two expiries and counts as just learned.
//! - Each name holds at most [`Limits::max_addrs_per_name`] addresses: a new one pushes the
//!   oldest learned out first. An answer with more addresses than that holds its first ones
//!   (the ones clients try first); the rest are not held. The store holds at most
//!   [`Limits::max_names`] names: a new name pushes out the name learned least recently, with
//!   its addresses. Both are counted ([`Store::counters`]), so memory is bounded by
//!   `max_names × max_addrs_per_name` entries.
//! - An address held under several names stays until the last of them lets it go.
//!   [`Store::expire`] returns the addresses that left the store entirely, as
//!   [`Learned::removed`] does for those a cap pushed out.
//! - Every policed container has a store, so it is kept small: each name owns its addresses
//!   and only a count of holders is kept per address (no copy by address or by expiry), in
//!   sorted vectors of exact capacity (a hash table holds up to twice its entries' room).
//!
//! Time is a [`std::time::Instant`] the caller passes in; the store never reads a clock.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

/// The longest TTL the store honours, in seconds (a week: longer TTLs are cut to it).
pub const MAX_TTL: u32 = 7 * 24 * 3600;

/// The store's limits, set at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long an address stays after its TTL ran out.
    pub grace: Duration,
    /// The most addresses one name holds (at least 1).
    pub max_addrs_per_name: usize,
    /// The most names the store holds (at least 1).
    pub max_names: usize,
}

impl Default for Limits {
    /// 30 s of grace, 32 addresses per name, 256 names.
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
            max_addrs_per_name: 32,
            max_names: 256,
        }
    }
}

/// What one [`Store::learn`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Addresses new to the store (no name held them before).
    pub added: Vec<IpAddr>,
    /// Addresses that left the store entirely because a cap pushed them out.
    pub removed: Vec<IpAddr>,
    /// Addresses of this answer the name does not hold: beyond the per-name cap.
    pub not_held: Vec<IpAddr>,
    /// How many (name, address) entries the caps pushed out or refused in this call.
    pub evicted: usize,
}

/// How often the caps pushed something out, since the store was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Addresses pushed out of a name, or not held by it, by the per-name cap.
    pub addrs_evicted: u64,
    /// Names pushed out by the cap on names.
    pub names_evicted: u64,
}

/// One owner's learned addresses.
///
/// Kept small, since every policed container has one: each name owns its addresses (no
/// second copy by address or by expiry). How many names hold each address is counted
/// (`holders`), so learning and letting go stay O(1) per address; the expiry sweep walks
/// the entries, and only when the earliest expiry ([`Store::next_expiry`]) has passed.
#[derive(Debug)]
pub struct Store {
    limits: Limits,
    /// Sorted by name.
    names: Vec<NameEntry>,
    /// Each held address and how many names hold it, sorted by address.
    holders: Vec<(IpAddr, u32)>,
    /// The earliest expiry of any entry.
    soonest: Option<Instant>,
    /// Orders names by their last learn (for the cap on names).
    clock: u64,
    counters: Counters,
}

#[derive(Debug)]
struct NameEntry {
    name: Box<str>,
    /// Oldest learned first.
    held: Vec<Held>,
    last_learned: u64,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    addr: IpAddr,
    expires: Instant,
}

impl Store {
    /// An empty store with `limits` (caps below 1 count as 1).
    pub fn new(limits: Limits) -> Self {
        Self {
            limits: Limits {
                max_addrs_per_name: limits.max_addrs_per_name.max(1),
                max_names: limits.max_names.max(1),
                ..limits
            },
            names: Vec::new(),
            holders: Vec::new(),
            soonest: None,
            clock: 0,
            counters: Counters::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Holds `addrs` under `name` (a domain key) until `now + ttl + grace` (`ttl` in seconds).
    pub fn learn(&mut self, name: &str, addrs: &[IpAddr], ttl: u32, now: Instant) -> Learned {
        let mut learned = Learned::default();
        let mut unique: Vec<IpAddr> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if !unique.contains(addr) {
                unique.push(*addr);
            }
        }
        if unique.is_empty() {
            return learned;
        }
        let cap = self.limits.max_addrs_per_name;
        if unique.len() > cap {
            learned.not_held = unique.split_off(cap);
            learned.evicted += learned.not_held.len();
            self.counters.addrs_evicted += learned.not_held.len() as u64;
        }
        let expires = now
            .checked_add(Duration::from_secs(u64::from(ttl.min(MAX_TTL))) + self.limits.grace)
            .unwrap_or(now);
        let at = match self.find(name) {
            Ok(at) => at,
            Err(_) => {
                if self.names.len() >= self.limits.max_names {
                    self.evict_oldest_name(&mut learned);
                }
                let at = self.find(name).unwrap_or_else(|at| at);
                insert_exact(
                    &mut self.names,
                    at,
                    NameEntry {
                        name: name.into(),
                        held: Vec::new(),
                        last_learned: 0,
                    },
                );
                at
            }
        };
        self.clock += 1;
        let clock = self.clock;
        let entry = &mut self.names[at];
        entry.last_learned = clock;
        let mut pushed_out = Vec::new();
        let mut new_addrs = Vec::new();
        // An entry that was the earliest to expire moved or left: the earliest is looked for
        // again.
        let mut soonest_moved = false;
        // The earliest expiry among the entries this answer holds (a refreshed entry keeps
        // the later of its two).
        let mut held_until = None::<Instant>;
        for addr in unique {
            if let Some(i) = entry.held.iter().position(|h| h.addr == addr) {
                let old = entry.held.remove(i);
                soonest_moved |= Some(old.expires) == self.soonest && old.expires < expires;
                let kept = old.expires.max(expires);
                held_until = Some(held_until.map_or(kept, |t| t.min(kept)));
                entry.held.push(Held {
                    addr,
                    expires: kept,
                });
                continue;
            }
            held_until = Some(held_until.map_or(expires, |t| t.min(expires)));
            if entry.held.len() >= cap {
                let old = entry.held.remove(0);
                soonest_moved |= Some(old.expires) == self.soonest;
                pushed_out.push(old.addr);
            }
            entry.held.push(Held { addr, expires });
            new_addrs.push(addr);
        }
        entry.held.shrink_to_fit();
        self.soonest = match (soonest_moved, self.soonest, held_until) {
            (true, _, _) => self.earliest(),
            (false, Some(s), Some(h)) => Some(s.min(h)),
            (false, s, h) => s.or(h),
        };
        for addr in new_addrs {
            match self.holders.binary_search_by_key(&addr, |(a, _)| *a) {
                Ok(i) => self.holders[i].1 += 1,
                Err(i) => {
                    insert_exact(&mut self.holders, i, (addr, 1));
                    learned.added.push(addr);
                }
            }
        }
        for addr in pushed_out {
            self.counters.addrs_evicted += 1;
            learned.evicted += 1;
            if self.release(addr) {
                learned.removed.push(addr);
            }
        }
        learned
    }

    /// Lets go of every entry expired at `now`; returns the addresses that left the store
    /// entirely (no name holds them any more).
    pub fn expire(&mut self, now: Instant) -> Vec<IpAddr> {
        if self.soonest.is_none_or(|s| s > now) {
            return Vec::new();
        }
        let mut expired = Vec::new();
        let mut soonest: Option<Instant> = None;
        self.names.retain_mut(|entry| {
            entry.held.retain(|h| {
                if h.expires <= now {
                    expired.push(h.addr);
                    return false;
                }
                soonest = Some(soonest.map_or(h.expires, |s| s.min(h.expires)));
                true
            });
            entry.held.shrink_to_fit();
            !entry.held.is_empty()
        });
        self.names.shrink_to_fit();
        self.soonest = soonest;
        let mut gone = Vec::new();
        for addr in expired {
            if self.release(addr) {
                gone.push(addr);
            }
        }
        self.holders.shrink_to_fit();
        gone
    }

    /// When the next entry expires, if any is held.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.soonest
    }

    /// Every address held (under any name), each once, in no particular order.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.holders.iter().map(|(a, _)| *a)
    }

    /// Whether some name holds `addr`.
    pub fn holds(&self, addr: IpAddr) -> bool {
        self.holders
            .binary_search_by_key(&addr, |(a, _)| *a)
            .is_ok()
    }

    /// The names holding `addr`.
    pub fn names_of(&self, addr: IpAddr) -> impl Iterator<Item = &str> + '_ {
        let held = self.holds(addr);
        self.names
            .iter()
            .filter(move |entry| held && entry.held.iter().any(|h| h.addr == addr))
            .map(|entry| &*entry.name)
    }

    /// Whether `name` holds every one of `addrs`.
    pub fn name_holds_all(&self, name: &str, addrs: &[IpAddr]) -> bool {
        self.entry(name)
            .is_some_and(|e| addrs.iter().all(|a| e.held.iter().any(|h| h.addr == *a)))
    }

    /// Each name and the addresses it holds, oldest learned first.
    pub fn entries(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = IpAddr> + '_)> + '_ {
        self.names
            .iter()
            .map(|entry| (&*entry.name, entry.held.iter().map(|h| h.addr)))
    }

    /// The addresses `name` holds and when each expires, oldest learned first.
    pub fn addrs_of(&self, name: &str) -> impl Iterator<Item = (IpAddr, Instant)> + '_ {
        self.entry(name)
            .into_iter()
            .flat_map(|entry| entry.held.iter().map(|h| (h.addr, h.expires)))
    }

    /// How many names hold at least one address.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// How many distinct addresses are held.
    pub fn addr_count(&self) -> usize {
        self.holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Where `name` is in `names` (Ok), or where it would go (Err).
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.names.binary_search_by(|e| (*e.name).cmp(name))
    }

    fn entry(&self, name: &str) -> Option<&NameEntry> {
        self.find(name).ok().map(|at| &self.names[at])
    }

    fn earliest(&self) -> Option<Instant> {
        self.names
            .iter()
            .flat_map(|e| e.held.iter().map(|h| h.expires))
            .min()
    }

    fn evict_oldest_name(&mut self, learned: &mut Learned) {
        let Some(oldest) = self
            .names
            .iter()
            .enumerate()
            .min_by_key(|(_, entry)| entry.last_learned)
            .map(|(at, _)| at)
        else {
            return;
        };
        let entry = self.names.remove(oldest);
        self.counters.names_evicted += 1;
        learned.evicted += entry.held.len();
        for held in entry.held {
            if self.release(held.addr) {
                learned.removed.push(held.addr);
            }
        }
        self.soonest = self.earliest();
    }

    /// One name fewer holds `addr`; true when no name holds it any more.
    fn release(&mut self, addr: IpAddr) -> bool {
        let Ok(i) = self.holders.binary_search_by_key(&addr, |(a, _)| *a) else {
            return false;
        };
        let n = &mut self.holders[i].1;
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.holders.remove(i);
            return true;
        }
        false
    }

    /// Every entry's expiry, for the tests' bound checks.
    #[cfg(test)]
    fn entry_count(&self) -> usize {
        self.names.iter().map(|e| e.held.len()).sum()
    }
}

/// Inserts `value` at `at`, growing `v` by exactly one slot when it is full (these vectors
/// are many and small: doubling would leave up to half of each unused).
fn insert_exact<T>(v: &mut Vec<T>, at: usize, value: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(1);
    }
    v.insert(at, value);
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, net::Ipv4Addr};

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn store(grace: u64, per_name: usize, names: usize) -> Store {
        Store::new(Limits {
            grace: secs(grace),
            max_addrs_per_name: per_name,
            max_names: names,
        })
    }

    fn sorted(mut addrs: Vec<IpAddr>) -> Vec<IpAddr> {
        addrs.sort();
        addrs
    }

    #[test]
    fn learn_then_expire_after_ttl_and_grace() {
        let t0 = Instant::now();
        let mut s = store(30, 8, 8);
        let learned = s.learn("cdn.test", &[ip(1), ip(2), ip(1)], 60, t0);
        assert_eq!(learned.added, vec![ip(1), ip(2)]);
        assert_eq!((learned.removed.len(), learned.evicted), (0, 0));
        assert_eq!(s.next_expiry(), Some(t0 + secs(90)));
        assert_eq!(sorted(s.addrs().collect()), vec![ip(1), ip(2)]);
        assert_eq!(s.names_of(ip(1)).collect::<Vec<_>>(), ["cdn.test"]);
        assert!(s.expire(t0 + secs(89)).is_empty());
        assert_eq!(sorted(s.expire(t0 + secs(90))), vec![ip(1), ip(2)]);
        assert!(s.is_empty() && s.next_expiry().is_none() && s.addr_count() == 0);
    }

    #[test]
    fn refresh_keeps_the_later_expiry() {
        let t0 = Instant::now();
        let mut s = store(0, 8, 8);
        s.learn("a.test", &[ip(1)], 10, t0);
        let again = s.learn("a.test", &[ip(1)], 10, t0 + secs(5));
        assert!(again.added.is_empty(), "already held");
        assert_eq!(s.next_expiry(), Some(t0 + secs(15)));
        // A shorter TTL later does not cut the expiry.
        s.learn("a.test", &[ip(1)], 1, t0 + secs(6));
        assert_eq!(
            s.addrs_of("a.test").collect::<Vec<_>>(),
            [(ip(1), t0 + secs(15))]
        );
        assert!(s.expire(t0 + secs(14)).is_empty());
        assert_eq!(s.expire(t0 + secs(15)), vec![ip(1)]);
    }

    #[test]
    fn per_name_cap_pushes_the_oldest_out() {
        let t0 = Instant::now();
        let mut s = store(0, 2, 8);
        s.learn("cdn.test", &[ip(1)], 60, t0);
        s.learn("cdn.test", &[ip(2)], 60, t0 + secs(1));
        // Refreshing 1 makes 2 the oldest.
        s.learn("cdn.test", &[ip(1)], 60, t0 + secs(2));
        let learned = s.learn("cdn.test", &[ip(3)], 60, t0 + secs(3));
        assert_eq!(learned.added, vec![ip(3)]);
        assert_eq!(learned.removed, vec![ip(2)]);
        assert_eq!(learned.evicted, 1);
        assert_eq!(sorted(s.addrs().collect()), vec![ip(1), ip(3)]);
        assert_eq!(s.counters().addrs_evicted, 1);
        // 2's old expiry is gone with it.
        assert_eq!(s.next_expiry(), Some(t0 + secs(62)));
    }

    #[test]
    fn an_answer_longer_than_the_cap_keeps_its_first_addresses() {
        let t0 = Instant::now();
        let mut s = store(0, 2, 8);
        let learned = s.learn("big.test", &[ip(1), ip(2), ip(3), ip(4)], 60, t0);
        assert_eq!(learned.added, vec![ip(1), ip(2)]);
        assert_eq!(learned.not_held, vec![ip(3), ip(4)]);
        assert_eq!(learned.evicted, 2);
        assert_eq!(s.counters().addrs_evicted, 2);
    }

    #[test]
    fn a_shared_address_stays_until_the_last_name_lets_go() {
        let t0 = Instant::now();
        let mut s = store(0, 1, 8);
        s.learn("a.test", &[ip(1)], 10, t0);
        let learned = s.learn("b.test", &[ip(1)], 20, t0);
        assert!(learned.added.is_empty(), "held by a.test already");
        assert_eq!(sorted_names(&s, ip(1)), ["a.test", "b.test"]);
        assert!(s.expire(t0 + secs(10)).is_empty(), "b.test still holds it");
        assert_eq!(sorted_names(&s, ip(1)), ["b.test"]);
        // The per-name cap of b.test pushes it out: now it leaves.
        let learned = s.learn("b.test", &[ip(2)], 20, t0 + secs(11));
        assert_eq!(learned.removed, vec![ip(1)]);
        assert!(!s.holds(ip(1)));
        assert_eq!(s.expire(t0 + secs(31)), vec![ip(2)]);
    }

    fn sorted_names(s: &Store, addr: IpAddr) -> Vec<String> {
        let mut names: Vec<String> = s.names_of(addr).map(str::to_owned).collect();
        names.sort();
        names
    }

    #[test]
    fn name_cap_pushes_the_least_recently_learned_name_out() {
        let t0 = Instant::now();
        let mut s = store(0, 4, 2);
        s.learn("a.test", &[ip(1), ip(9)], 60, t0);
        s.learn("b.test", &[ip(2), ip(9)], 60, t0);
        s.learn("a.test", &[ip(1)], 60, t0 + secs(1));
        let learned = s.learn("c.test", &[ip(3)], 60, t0 + secs(2));
        assert_eq!(learned.removed, vec![ip(2)], "9 is still held by a.test");
        assert_eq!(learned.evicted, 2);
        assert_eq!(s.counters().names_evicted, 1);
        assert_eq!(s.name_count(), 2);
        assert_eq!(s.addrs_of("b.test").count(), 0);
        assert_eq!(sorted(s.addrs().collect()), vec![ip(1), ip(3), ip(9)]);
        // Nothing of b.test is left to expire.
        assert_eq!(sorted(s.expire(t0 + secs(100))), vec![ip(1), ip(3), ip(9)]);
        assert!(s.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut s = store(5, 3, 4);
        for i in 0..200u32 {
            let name = format!("n{}.test", i % 9);
            let addrs: Vec<IpAddr> = (0..5)
                .map(|j| IpAddr::V4(Ipv4Addr::from(i * 7 + j)))
                .collect();
            s.learn(&name, &addrs, i % 13, t0 + secs(u64::from(i)));
            assert!(s.name_count() <= 4);
            assert!(s.addr_count() <= 12);
            assert!(s.entry_count() <= 12);
            assert!(s.names.iter().all(|e| e.held.len() <= 3));
        }
        s.expire(t0 + secs(10_000));
        assert!(s.is_empty() && s.holders.is_empty() && s.next_expiry().is_none());
    }

    /// Random learns and expiries against the invariants: the count of holders is the number
    /// of names holding each address, the next expiry is the earliest entry's, and what
    /// `learn` and `expire` report as added, removed and gone matches the store before and
    /// after.
    #[test]
    fn random_operations_keep_the_indexes_exact() {
        let t0 = Instant::now();
        let mut s = store(2, 3, 5);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        for step in 0..5_000u64 {
            let now = t0 + secs(step / 4);
            let before: BTreeSet<IpAddr> = s.addrs().collect();
            if next(5) == 0 {
                let gone: BTreeSet<IpAddr> = s.expire(now).into_iter().collect();
                let after: BTreeSet<IpAddr> = s.addrs().collect();
                assert_eq!(gone, &before - &after, "step {step}");
            } else {
                let name = format!("n{}.test", next(8));
                let addrs: Vec<IpAddr> = (0..1 + next(4)).map(|_| ip(next(12) as u8)).collect();
                let ttl = next(6) as u32;
                let l = s.learn(&name, &addrs, ttl, now);
                let after: BTreeSet<IpAddr> = s.addrs().collect();
                let added: BTreeSet<IpAddr> = l.added.iter().copied().collect();
                let removed: BTreeSet<IpAddr> = l.removed.iter().copied().collect();
                // An address may leave with an evicted name and come back with this one.
                assert_eq!(after, &(&before - &removed) | &added, "step {step}");
                assert!((&added & &before).is_subset(&removed), "step {step}");
                assert!((&removed & &after).is_subset(&added), "step {step}");
            }
            for (addr, n) in &s.holders {
                let holding = s
                    .names
                    .iter()
                    .filter(|e| e.held.iter().any(|h| h.addr == *addr));
                assert_eq!(holding.count() as u32, *n, "step {step}");
            }
            let in_entries: BTreeSet<IpAddr> = s
                .names
                .iter()
                .flat_map(|e| e.held.iter().map(|h| h.addr))
                .collect();
            assert_eq!(in_entries, s.addrs().collect(), "step {step}");
            assert_eq!(s.next_expiry(), s.earliest(), "step {step}");
            assert!(s.name_count() <= 5 && s.names.iter().all(|e| e.held.len() <= 3));
            assert!(
                s.names.windows(2).all(|w| w[0].name < w[1].name),
                "step {step}"
            );
            assert!(s.holders.windows(2).all(|w| w[0].0 < w[1].0), "step {step}");
        }
    }

    #[test]
    fn edge_cases() {
        let t0 = Instant::now();
        let mut s = Store::new(Limits {
            grace: secs(1),
            max_addrs_per_name: 0,
            max_names: 0,
        });
        assert_eq!(s.limits().max_addrs_per_name, 1);
        assert_eq!(s.learn("a.test", &[], 60, t0), Learned::default());
        assert!(s.is_empty());
        s.learn("a.test", &[ip(1)], u32::MAX, t0);
        assert_eq!(
            s.next_expiry(),
            Some(t0 + secs(u64::from(MAX_TTL)) + secs(1)),
            "TTL capped"
        );
        s.learn("b.test", &[ip(2)], 0, t0);
        assert_eq!(s.name_count(), 1);
        assert_eq!(s.expire(t0 + secs(1)), vec![ip(2)]);
        assert!(s.names_of(ip(7)).next().is_none());
    }
}
