//! The resolver service: one task that owns the [`DomainState`] of every domain in use, runs
//! the lookups of each of its families (concurrently, as child tasks) when due, and publishes
//! changes of their effective sets. A family's failure is logged, backed off and retried for
//! that family alone; the other family's answer stays in the domain's set.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use hickory_resolver::net::NetError;
use tokio::{
    sync::{mpsc, oneshot},
    task::{AbortHandle, Id, JoinSet},
};
use tracing::{debug, info, warn};

use super::{
    Answer, DomainState, Family, PerFamily, RefreshConfig, ResolverError, normalize_domain,
};

/// Where the service gets answers from: [`DnsClient`](super::DnsClient), or a fake in tests.
pub trait Upstream: Send + Sync + 'static {
    /// Looks up the records of one family (A or AAAA) of a (normalized) domain.
    fn lookup(
        &self,
        domain: String,
        family: Family,
    ) -> BoxFuture<'static, Result<Answer, ResolverError>>;
}

/// Settings of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceConfig {
    /// TTL floor and ceiling, grace period and failure backoff.
    pub refresh: RefreshConfig,
    /// How long [`ResolverHandle::add`] waits for the first answer of a new domain before
    /// returning [`FirstAnswer::Pending`]. Default 5 s.
    pub first_answer_timeout: Duration,
    /// A lookup (of one family) that has not finished after this long counts as failed (the
    /// DNS client has its own, shorter timeouts; this is the backstop). Default 15 s.
    pub lookup_timeout: Duration,
    /// Lookups running at once, each of one family of one domain (a domain's A and AAAA are
    /// two); more due lookups wait for a slot, those of domains without any answer yet before
    /// refreshes. Bounds the bursts sent to the DNS server and the agent's memory (each lookup
    /// holds its own sockets and buffers; 1,000 domains at once grew the agent by 25 MiB, which
    /// the allocator kept). Default 64 (32 domains' A and AAAA).
    pub max_lookups_in_flight: usize,
}

impl ServiceConfig {
    /// Default of [`ServiceConfig::first_answer_timeout`].
    pub const DEFAULT_FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default of [`ServiceConfig::lookup_timeout`].
    pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
    /// Default of [`ServiceConfig::max_lookups_in_flight`].
    pub const DEFAULT_MAX_LOOKUPS_IN_FLIGHT: usize = 64;

    fn validate(&self) -> Result<(), ResolverError> {
        self.refresh.validate()?;
        if self.lookup_timeout.is_zero() {
            return Err(ResolverError::InvalidConfig(
                "the lookup timeout must be positive".into(),
            ));
        }
        if self.max_lookups_in_flight == 0 {
            return Err(ResolverError::InvalidConfig(
                "at least one lookup must be allowed to run".into(),
            ));
        }
        Ok(())
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            refresh: RefreshConfig::default(),
            first_answer_timeout: Self::DEFAULT_FIRST_ANSWER_TIMEOUT,
            lookup_timeout: Self::DEFAULT_LOOKUP_TIMEOUT,
            max_lookups_in_flight: Self::DEFAULT_MAX_LOOKUPS_IN_FLIGHT,
        }
    }
}

/// The effective set of a domain changed (or the domain got its first answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainUpdate {
    /// The normalized domain (see [`normalize_domain`]).
    pub domain: String,
    /// Its whole effective set: the last answer and the IPs still in grace.
    pub ips: BTreeSet<IpAddr>,
}

/// What [`ResolverHandle::add`] knows about the domain when it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstAnswer {
    /// At least one family has been answered (maybe with no IPs); `ips` is the effective set.
    /// A family that failed is being retried and its IPs come as a [`DomainUpdate`].
    Resolved,
    /// No answer yet: the lookups of both families failed so far (the last error of each) and
    /// are being retried.
    Failed(String),
    /// No outcome within the first-answer timeout (or the domain was removed meanwhile); the
    /// IPs will come as a [`DomainUpdate`].
    Pending,
}

/// The result of [`ResolverHandle::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddOutcome {
    /// The normalized domain, the key of its [`DomainUpdate`]s.
    pub domain: String,
    /// Its effective set when `add` returned.
    pub ips: BTreeSet<IpAddr>,
    pub status: FirstAnswer,
}

enum Command {
    Add {
        domain: String,
        reply: oneshot::Sender<AddOutcome>,
    },
    Remove {
        domain: String,
    },
}

type Snapshots = Arc<Mutex<HashMap<String, BTreeSet<IpAddr>>>>;

fn lock(snapshots: &Snapshots) -> MutexGuard<'_, HashMap<String, BTreeSet<IpAddr>>> {
    snapshots.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cheap, clonable handle on the service. The service stops when the last one is dropped.
#[derive(Clone)]
pub struct ResolverHandle {
    tx: mpsc::UnboundedSender<Command>,
    snapshots: Snapshots,
    first_answer_timeout: Duration,
}

impl std::fmt::Debug for ResolverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolverHandle").finish_non_exhaustive()
    }
}

impl ResolverHandle {
    /// Takes a reference on `domain` — at once, when called: dropping the returned future does
    /// not undo it — and resolves it if it is new. The future returns the domain's effective
    /// set as soon as each family has answered or failed once, or after the first-answer
    /// timeout, whichever comes first (at once for a domain whose families have).
    /// Errors: the name is not a domain, or the service stopped.
    pub fn add(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<AddOutcome, ResolverError>> + Send + 'static + use<> {
        let sent = normalize_domain(domain).and_then(|domain| {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Command::Add {
                    domain: domain.clone(),
                    reply,
                })
                .map_err(|_| ResolverError::Stopped)?;
            Ok((domain, rx))
        });
        let timeout = self.first_answer_timeout;
        let snapshots = self.snapshots.clone();
        let tx = self.tx.clone();
        async move {
            let (domain, rx) = sent?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(_)) if tx.is_closed() => Err(ResolverError::Stopped),
                Ok(Err(_)) | Err(_) => {
                    let ips = lock(&snapshots).get(&domain).cloned().unwrap_or_default();
                    Ok(AddOutcome {
                        domain,
                        ips,
                        status: FirstAnswer::Pending,
                    })
                }
            }
        }
    }

    /// Drops one reference on `domain`; after the last one the domain is no longer resolved
    /// and no more updates are sent for it. Removing a domain that has no reference (or is not
    /// a domain) does nothing.
    pub fn remove(&self, domain: &str) {
        if let Ok(domain) = normalize_domain(domain) {
            // A stopped service has nothing left to remove.
            let _ = self.tx.send(Command::Remove { domain });
        }
    }

    /// The current effective set of a domain that has references (empty until its first
    /// answer), or `None` if it has none.
    pub fn snapshot(&self, domain: &str) -> Option<BTreeSet<IpAddr>> {
        let domain = normalize_domain(domain).ok()?;
        lock(&self.snapshots).get(&domain).cloned()
    }

    /// The domains that have references, sorted.
    pub fn domains(&self) -> Vec<String> {
        let mut all: Vec<_> = lock(&self.snapshots).keys().cloned().collect();
        all.sort();
        all
    }

    /// The service task is still running.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// The resolver service (see the [module docs](super)).
pub struct ResolverService;

impl ResolverService {
    /// Spawns the service task on the current tokio runtime. Returns the handle to add and
    /// remove domains and the receiver of [`DomainUpdate`]s (which may be dropped if only
    /// snapshots are wanted).
    pub fn spawn<U: Upstream>(
        upstream: U,
        config: ServiceConfig,
    ) -> Result<(ResolverHandle, mpsc::UnboundedReceiver<DomainUpdate>), ResolverError> {
        config.validate()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (updates_tx, updates_rx) = mpsc::unbounded_channel();
        let snapshots = Snapshots::default();
        let task = Task {
            upstream: Arc::new(upstream),
            config,
            domains: HashMap::new(),
            next_generation: 0,
            lookups: JoinSet::new(),
            running: HashMap::new(),
            updates: updates_tx,
            snapshots: snapshots.clone(),
        };
        tokio::spawn(task.run(rx));
        let handle = ResolverHandle {
            tx,
            snapshots,
            first_answer_timeout: config.first_answer_timeout,
        };
        Ok((handle, updates_rx))
    }
}

struct Domain {
    refs: usize,
    state: DomainState,
    /// Tells apart lookups of an earlier life of the same domain (removed, then added again).
    generation: u64,
    /// The running lookup of each family, aborted if the domain is dropped.
    lookups: PerFamily<Option<AbortHandle>>,
    /// `add`s waiting until every family has an outcome.
    waiters: Vec<oneshot::Sender<AddOutcome>>,
    /// The last error of each family that has not been answered yet.
    first_errors: BTreeMap<Family, String>,
}

impl Domain {
    /// What a waiting `add` is told (once the domain [is settled](DomainState::is_settled)).
    fn outcome(&self, domain: &str) -> AddOutcome {
        let status = if self.state.has_answer() {
            FirstAnswer::Resolved
        } else {
            let errors: Vec<&str> = self.first_errors.values().map(String::as_str).collect();
            FirstAnswer::Failed(errors.join("; "))
        };
        AddOutcome {
            domain: domain.to_owned(),
            ips: self.state.effective(),
            status,
        }
    }
}

type LookupResult = Result<Answer, ResolverError>;

/// Which lookup a running task is.
struct Running {
    domain: String,
    generation: u64,
    family: Family,
}

struct Task<U> {
    upstream: Arc<U>,
    config: ServiceConfig,
    domains: HashMap<String, Domain>,
    next_generation: u64,
    lookups: JoinSet<LookupResult>,
    /// Running lookup task → which lookup it is.
    running: HashMap<Id, Running>,
    updates: mpsc::UnboundedSender<DomainUpdate>,
    snapshots: Snapshots,
}

impl<U: Upstream> Task<U> {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            // With every lookup slot taken, a due refresh cannot start: wait for a lookup to
            // finish (or a later deadline) instead of waking up at once, again and again.
            let full = self.lookups.len() >= self.config.max_lookups_in_flight;
            let now = Instant::now();
            let deadline = self
                .domains
                .values()
                .filter_map(|d| d.state.next_deadline())
                .filter(|t| !full || *t > now)
                .min();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(joined) = self.lookups.join_next_with_id(), if !self.lookups.is_empty() => {
                    match joined {
                        Ok((id, result)) => self.lookup_done(id, result),
                        Err(e) => self.lookup_died(e),
                    }
                }
                () = sleep_until(deadline), if deadline.is_some() => {}
            }
            self.tick(Instant::now());
        }
        self.lookups.shutdown().await;
        lock(&self.snapshots).clear();
        debug!("resolver service stopped");
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Add { domain, reply } => self.add(domain, reply),
            Command::Remove { domain } => self.remove(&domain),
        }
    }

    fn add(&mut self, domain: String, reply: oneshot::Sender<AddOutcome>) {
        if let Some(d) = self.domains.get_mut(&domain) {
            d.refs += 1;
            debug!(%domain, refs = d.refs, "domain referenced again");
            if d.state.is_settled() {
                // Answered, or failing and waiting to retry: no point in waiting for a retry.
                let _ = reply.send(d.outcome(&domain));
            } else {
                d.waiters.push(reply);
            }
            return;
        }
        debug!(%domain, "resolving new domain");
        self.next_generation += 1;
        lock(&self.snapshots).insert(domain.clone(), BTreeSet::new());
        self.domains.insert(
            domain,
            Domain {
                refs: 1,
                state: DomainState::new(self.config.refresh, Instant::now()),
                generation: self.next_generation,
                lookups: PerFamily::default(),
                waiters: vec![reply],
                first_errors: BTreeMap::new(),
            },
        );
        // The lookup starts in the tick that follows.
    }

    fn remove(&mut self, domain: &str) {
        let Some(d) = self.domains.get_mut(domain) else {
            debug!(%domain, "remove of a domain without references ignored");
            return;
        };
        d.refs -= 1;
        if d.refs > 0 {
            debug!(%domain, refs = d.refs, "domain reference dropped");
            return;
        }
        for (_, lookup) in d.lookups.iter_mut() {
            if let Some(lookup) = lookup.take() {
                lookup.abort();
            }
        }
        self.domains.remove(domain);
        lock(&self.snapshots).remove(domain);
        debug!(%domain, "domain no longer used; stopped resolving it");
    }

    /// Expires grace periods and starts the lookups that are due.
    fn tick(&mut self, now: Instant) {
        // One pass: grace periods that end, and the families due for a lookup.
        let mut due: Vec<(bool, Instant, String, Family)> = Vec::new();
        for (name, d) in &mut self.domains {
            let change = d.state.expire(now);
            if !change.is_empty() {
                info!(domain = %name, removed = ?change.removed, "grace period over");
                publish(&self.updates, &self.snapshots, name, &d.state);
            }
            let answered = d.state.has_answer();
            for (family, at) in d.state.due(now) {
                due.push((answered, at, name.clone(), family));
            }
        }
        // Free slots go to domains without any answer yet (a container waits for them), then
        // to the refreshes that have waited longest, so that none starves when more are due
        // than can run.
        let free = self
            .config
            .max_lookups_in_flight
            .saturating_sub(self.lookups.len());
        if free < due.len() {
            due.sort_unstable();
        }
        let start: Vec<(String, Family)> = due
            .into_iter()
            .take(free)
            .map(|(_, _, name, family)| (name, family))
            .collect();
        for (name, family) in start {
            if let Some(d) = self.domains.get_mut(&name) {
                d.state.begin_lookup(family);
                let upstream = self.upstream.clone();
                let (domain, timeout) = (name.clone(), self.config.lookup_timeout);
                let handle = self.lookups.spawn(async move {
                    let lookup = upstream.lookup(domain.clone(), family);
                    match tokio::time::timeout(timeout, lookup).await {
                        Ok(result) => result,
                        Err(_) => Err(ResolverError::Timeout {
                            domain,
                            family,
                            timeout,
                        }),
                    }
                });
                self.running.insert(
                    handle.id(),
                    Running {
                        domain: name,
                        generation: d.generation,
                        family,
                    },
                );
                d.lookups[family] = Some(handle);
            }
        }
    }

    fn lookup_done(&mut self, id: Id, result: LookupResult) {
        if let Some(running) = self.running.remove(&id) {
            self.apply(running, result);
        }
    }

    /// A lookup task panicked (or was aborted because its domain was dropped).
    fn lookup_died(&mut self, error: tokio::task::JoinError) {
        let Some(running) = self.running.remove(&error.id()) else {
            return;
        };
        if error.is_cancelled() {
            return;
        }
        let reason = ResolverError::Lookup {
            domain: running.domain.clone(),
            family: running.family,
            source: NetError::Msg(format!("lookup task failed: {error}")),
        };
        self.apply(running, Err(reason));
    }

    fn apply(&mut self, running: Running, result: LookupResult) {
        let Running {
            domain: name,
            generation,
            family,
        } = running;
        let Some(d) = self
            .domains
            .get_mut(&name)
            .filter(|d| d.generation == generation)
        else {
            return; // The domain was dropped meanwhile.
        };
        d.lookups[family] = None;
        let now = Instant::now();
        match result {
            Ok(answer) => {
                let first = !d.state.has_answer();
                let first_of_family = !d.state.family(family).has_answer();
                let recovered = d.state.family(family).consecutive_failures() > 0;
                let ttl = answer.ttl;
                let change = d.state.on_answer(family, now, answer.ips, ttl);
                d.first_errors.remove(&family);
                let fs = d.state.family(family);
                if recovered {
                    info!(domain = %name, %family, ips = ?fs.current(), "lookups succeed again");
                }
                if first_of_family {
                    info!(domain = %name, %family, ips = ?fs.current(), ?ttl, "resolved");
                } else if !change.is_empty() {
                    info!(
                        domain = %name, %family, added = ?change.added, removed = ?change.removed,
                        in_grace = ?fs.in_grace().keys().collect::<Vec<_>>(),
                        "addresses changed"
                    );
                } else {
                    debug!(domain = %name, %family, ?ttl, "unchanged");
                }
                if first || !change.is_empty() {
                    publish(&self.updates, &self.snapshots, &name, &d.state);
                }
            }
            Err(error) => {
                let change = d.state.on_failure(family, now);
                let fs = d.state.family(family);
                let retry_in = fs.refresh_at().saturating_duration_since(now);
                // What is kept: this family's last good IPs (none if it never answered), and
                // the domain's whole set, the other family's answer included.
                warn!(
                    domain = %name, %family, %error, failures = fs.consecutive_failures(),
                    ?retry_in, kept = ?fs.effective(), effective = ?d.state.effective(),
                    "lookup failed; keeping this family's last good addresses"
                );
                if !change.is_empty() {
                    publish(&self.updates, &self.snapshots, &name, &d.state);
                }
                if !fs.has_answer() {
                    d.first_errors.insert(family, error.to_string());
                }
            }
        }
        if d.state.is_settled() && !d.waiters.is_empty() {
            let outcome = d.outcome(&name);
            for waiter in d.waiters.drain(..) {
                let _ = waiter.send(outcome.clone());
            }
        }
    }
}

fn publish(
    updates: &mpsc::UnboundedSender<DomainUpdate>,
    snapshots: &Snapshots,
    domain: &str,
    state: &DomainState,
) {
    let ips = state.effective();
    lock(snapshots).insert(domain.to_owned(), ips.clone());
    // Nobody listening is fine: snapshots still work.
    let _ = updates.send(DomainUpdate {
        domain: domain.to_owned(),
        ips,
    });
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[derive(Default)]
    struct FakeInner {
        answers: HashMap<(String, Family), LookupResult>,
        calls: HashMap<(String, Family), usize>,
        delay: HashMap<Family, Duration>,
        /// Lookups running now, and the most seen at once.
        running: usize,
        most_running: usize,
    }

    /// An upstream that answers from a table, per family, and counts lookups.
    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<FakeInner>>);

    impl Fake {
        /// Both families of `domain` answer: the IPv4 addresses of `ips` for A, the IPv6
        /// ones for AAAA (none: an empty answer).
        fn set(&self, domain: &str, ips: &[&str], ttl_ms: u64) {
            for family in Family::ALL {
                self.set_family(domain, family, ips, ttl_ms);
            }
        }

        /// One family of `domain` answers with its addresses among `ips`.
        fn set_family(&self, domain: &str, family: Family, ips: &[&str], ttl_ms: u64) {
            let answer = Answer {
                ips: ips
                    .iter()
                    .map(|s| s.parse().unwrap())
                    .filter(|ip| Family::of(ip) == family)
                    .collect(),
                ttl: Duration::from_millis(ttl_ms),
            };
            let mut inner = self.0.lock().unwrap();
            inner.answers.insert((domain.into(), family), Ok(answer));
        }

        /// Both families of `domain` fail.
        fn fail(&self, domain: &str) {
            for family in Family::ALL {
                self.fail_family(domain, family);
            }
        }

        /// One family of `domain` fails (as a REFUSED would).
        fn fail_family(&self, domain: &str, family: Family) {
            let error = ResolverError::Lookup {
                domain: domain.into(),
                family,
                source: NetError::Message("REFUSED (fake)"),
            };
            let mut inner = self.0.lock().unwrap();
            inner.answers.insert((domain.into(), family), Err(error));
        }

        /// Every lookup takes this long.
        fn delay(&self, delay: Duration) {
            for family in Family::ALL {
                self.delay_family(family, delay);
            }
        }

        /// Lookups of one family take this long.
        fn delay_family(&self, family: Family, delay: Duration) {
            self.0.lock().unwrap().delay.insert(family, delay);
        }

        fn most_running(&self) -> usize {
            self.0.lock().unwrap().most_running
        }

        /// Lookups of `domain`, both families.
        fn calls(&self, domain: &str) -> usize {
            Family::ALL
                .into_iter()
                .map(|family| self.calls_of(domain, family))
                .sum()
        }

        /// Lookups of one family of `domain`.
        fn calls_of(&self, domain: &str, family: Family) -> usize {
            let inner = self.0.lock().unwrap();
            inner
                .calls
                .get(&(domain.to_owned(), family))
                .copied()
                .unwrap_or(0)
        }
    }

    impl Upstream for Fake {
        fn lookup(&self, domain: String, family: Family) -> BoxFuture<'static, LookupResult> {
            let (result, delay) = {
                let mut inner = self.0.lock().unwrap();
                let key = (domain, family);
                *inner.calls.entry(key.clone()).or_default() += 1;
                inner.running += 1;
                inner.most_running = inner.most_running.max(inner.running);
                let result =
                    inner
                        .answers
                        .get(&key)
                        .cloned()
                        .unwrap_or(Err(ResolverError::Lookup {
                            domain: key.0,
                            family,
                            source: NetError::Message("no such fake"),
                        }));
                let delay = inner.delay.get(&family).copied().unwrap_or_default();
                (result, delay)
            };
            let inner = self.0.clone();
            async move {
                tokio::time::sleep(delay).await;
                inner.lock().unwrap().running -= 1;
                result
            }
            .boxed()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn config() -> ServiceConfig {
        ServiceConfig {
            refresh: RefreshConfig {
                ttl_floor: ms(100),
                ttl_ceiling: ms(10_000),
                grace: ms(400),
                failure_retry_min: ms(50),
                failure_retry_max: ms(200),
            },
            first_answer_timeout: ms(2_000),
            lookup_timeout: ms(2_000),
            max_lookups_in_flight: 32,
        }
    }

    fn spawn(fake: &Fake) -> (ResolverHandle, mpsc::UnboundedReceiver<DomainUpdate>) {
        ResolverService::spawn(fake.clone(), config()).unwrap()
    }

    async fn next_update(rx: &mut mpsc::UnboundedReceiver<DomainUpdate>) -> DomainUpdate {
        tokio::time::timeout(ms(3_000), rx.recv())
            .await
            .expect("no update within 3 s")
            .expect("service stopped")
    }

    #[tokio::test]
    async fn first_answer_is_returned_by_add_and_published() {
        let fake = Fake::default();
        fake.set("www.test", &["10.0.0.1", "2001:db8::1"], 60_000);
        let (resolver, mut updates) = spawn(&fake);
        let added = resolver.add("WWW.test.").await.unwrap();
        assert_eq!(added.domain, "www.test");
        assert_eq!(added.status, FirstAnswer::Resolved);
        assert_eq!(added.ips, ips(&["10.0.0.1", "2001:db8::1"]));
        // Each family's first answer is published as it comes.
        let mut update = next_update(&mut updates).await;
        assert_eq!(update.domain, "www.test");
        if update.ips != added.ips {
            assert!(update.ips.is_subset(&added.ips), "{update:?}");
            update = next_update(&mut updates).await;
        }
        assert_eq!(update.ips, added.ips);
        assert_eq!(resolver.snapshot("www.test"), Some(added.ips));
        assert_eq!(resolver.domains(), ["www.test"]);
    }

    #[tokio::test]
    async fn a_domain_added_many_times_is_resolved_once_until_the_last_remove() {
        let fake = Fake::default();
        fake.set("shared.test", &["10.0.0.1"], 100); // refreshed every 100 ms (floor)
        let (resolver, _updates) = spawn(&fake);
        let adds: Vec<_> = (0..5).map(|_| resolver.add("shared.test")).collect();
        for outcome in futures_util::future::join_all(adds).await {
            assert_eq!(outcome.unwrap().ips, ips(&["10.0.0.1"]));
        }
        assert_eq!(
            fake.calls("shared.test"),
            2,
            "five adds, one lookup (A and AAAA)"
        );
        // Refreshes happen once per TTL, not once per reference.
        tokio::time::sleep(ms(450)).await;
        let calls = fake.calls_of("shared.test", Family::V4);
        assert!(
            (3..=6).contains(&calls),
            "{calls} lookups in ~450 ms at a 100 ms TTL"
        );
        for _ in 0..4 {
            resolver.remove("shared.test");
        }
        tokio::time::sleep(ms(50)).await;
        assert!(
            resolver.snapshot("shared.test").is_some(),
            "one reference left"
        );
        resolver.remove("Shared.Test.");
        tokio::time::sleep(ms(50)).await;
        assert_eq!(resolver.snapshot("shared.test"), None);
        assert!(resolver.domains().is_empty());
        let after = fake.calls("shared.test");
        tokio::time::sleep(ms(300)).await;
        assert_eq!(
            fake.calls("shared.test"),
            after,
            "no lookups after the last remove"
        );
        // An extra remove is harmless.
        resolver.remove("shared.test");
    }

    #[tokio::test]
    async fn changes_are_published_and_old_ips_leave_after_grace() {
        let fake = Fake::default();
        fake.set("move.test", &["10.0.0.1"], 100);
        let (resolver, mut updates) = spawn(&fake);
        resolver.add("move.test").await.unwrap();
        assert_eq!(next_update(&mut updates).await.ips, ips(&["10.0.0.1"]));
        fake.set("move.test", &["10.0.0.2"], 100);
        let started = Instant::now();
        let update = next_update(&mut updates).await;
        assert_eq!(
            update.ips,
            ips(&["10.0.0.1", "10.0.0.2"]),
            "old IP in grace"
        );
        let update = next_update(&mut updates).await;
        assert_eq!(update.ips, ips(&["10.0.0.2"]));
        let took = started.elapsed();
        assert!(took >= ms(400), "grace of 400 ms respected, took {took:?}");
    }

    #[tokio::test]
    async fn empty_answer_is_published_first_and_then_ips_go_after_grace() {
        let fake = Fake::default();
        fake.set("gone.test", &[], 100);
        let (resolver, mut updates) = spawn(&fake);
        let added = resolver.add("gone.test").await.unwrap();
        assert_eq!(added.status, FirstAnswer::Resolved);
        assert!(added.ips.is_empty());
        assert!(
            next_update(&mut updates).await.ips.is_empty(),
            "first answer, even empty"
        );

        fake.set("later.test", &["10.0.0.7"], 100);
        resolver.add("later.test").await.unwrap();
        assert_eq!(next_update(&mut updates).await.ips, ips(&["10.0.0.7"]));
        fake.set("later.test", &[], 100);
        let update = next_update(&mut updates).await;
        assert_eq!(update.domain, "later.test");
        assert!(update.ips.is_empty(), "removed after the grace period");
    }

    #[tokio::test]
    async fn failures_keep_the_last_good_ips() {
        let fake = Fake::default();
        fake.set("flaky.test", &["10.0.0.1"], 100);
        let (resolver, mut updates) = spawn(&fake);
        resolver.add("flaky.test").await.unwrap();
        next_update(&mut updates).await;
        fake.fail("flaky.test");
        let before = fake.calls("flaky.test");
        // Well past the grace period: nothing may change while lookups fail.
        tokio::time::sleep(ms(900)).await;
        assert!(fake.calls("flaky.test") > before + 2, "retried");
        assert_eq!(resolver.snapshot("flaky.test"), Some(ips(&["10.0.0.1"])));
        assert!(updates.try_recv().is_err(), "no update while failing");
        // Recovery with a new address publishes it.
        fake.set("flaky.test", &["10.0.0.2"], 100);
        let update = next_update(&mut updates).await;
        assert_eq!(update.ips, ips(&["10.0.0.1", "10.0.0.2"]));
    }

    #[tokio::test]
    async fn a_refused_aaaa_keeps_the_a_answer() {
        let fake = Fake::default();
        fake.set_family("v4only.test", Family::V4, &["10.0.0.1", "10.0.0.2"], 60_000);
        fake.fail_family("v4only.test", Family::V6);
        let (resolver, mut updates) = spawn(&fake);
        let added = resolver.add("v4only.test").await.unwrap();
        assert_eq!(added.status, FirstAnswer::Resolved, "{added:?}");
        assert_eq!(added.ips, ips(&["10.0.0.1", "10.0.0.2"]));
        let update = next_update(&mut updates).await;
        assert_eq!(update.ips, ips(&["10.0.0.1", "10.0.0.2"]), "A published");
        // AAAA keeps failing: retried, and the A answer stays well past the grace period.
        tokio::time::sleep(ms(900)).await;
        assert!(fake.calls_of("v4only.test", Family::V6) > 3, "AAAA retried");
        assert_eq!(
            resolver.snapshot("v4only.test"),
            Some(ips(&["10.0.0.1", "10.0.0.2"]))
        );
        assert!(updates.try_recv().is_err(), "nothing changed: {updates:?}");
        // A second container's add gets the A answer at once.
        let again = resolver.add("v4only.test").await.unwrap();
        assert_eq!(again.status, FirstAnswer::Resolved);
        assert_eq!(again.ips, ips(&["10.0.0.1", "10.0.0.2"]));
    }

    #[tokio::test]
    async fn a_family_failing_later_keeps_its_ips_while_the_other_changes() {
        let fake = Fake::default();
        fake.set("dual.test", &["10.0.0.1", "fd00::1"], 100);
        let (resolver, mut updates) = spawn(&fake);
        let added = resolver.add("dual.test").await.unwrap();
        assert_eq!(added.ips, ips(&["10.0.0.1", "fd00::1"]));
        while next_update(&mut updates).await.ips != added.ips {}

        // AAAA starts failing while A moves to a new address.
        fake.fail_family("dual.test", Family::V6);
        fake.set_family("dual.test", Family::V4, &["10.0.0.2"], 100);
        let update = next_update(&mut updates).await;
        assert_eq!(
            update.ips,
            ips(&["10.0.0.1", "10.0.0.2", "fd00::1"]),
            "A's change published, its old IP in grace, AAAA's last good kept"
        );
        let update = next_update(&mut updates).await;
        assert_eq!(
            update.ips,
            ips(&["10.0.0.2", "fd00::1"]),
            "A's old IP gone after the grace period; AAAA's kept while it fails"
        );
        // Long past the grace period, AAAA's last good address is still there.
        tokio::time::sleep(ms(800)).await;
        assert_eq!(
            resolver.snapshot("dual.test"),
            Some(ips(&["10.0.0.2", "fd00::1"]))
        );
        // AAAA recovers with a new address: its old one goes through grace like any other.
        fake.set_family("dual.test", Family::V6, &["fd00::2"], 100);
        let update = next_update(&mut updates).await;
        assert_eq!(update.ips, ips(&["10.0.0.2", "fd00::1", "fd00::2"]));
        let update = next_update(&mut updates).await;
        assert_eq!(update.ips, ips(&["10.0.0.2", "fd00::2"]));
    }

    #[tokio::test]
    async fn retries_and_backoff_are_per_family() {
        let fake = Fake::default();
        // A is answered once for a minute; AAAA fails.
        fake.set_family("retry.test", Family::V4, &["10.0.0.1"], 60_000);
        fake.fail_family("retry.test", Family::V6);
        let (resolver, mut updates) = spawn(&fake);
        resolver.add("retry.test").await.unwrap();
        next_update(&mut updates).await;
        tokio::time::sleep(ms(950)).await;
        // Backoff 50, 100, 200, 200, ... ms: lookups at about 0, 50, 150, 350, 550, 750 and
        // 950 ms. Without backoff (the 100 ms floor) it would be 10, without retries 1.
        let v6 = fake.calls_of("retry.test", Family::V6);
        assert!((5..=8).contains(&v6), "{v6} AAAA lookups in ~950 ms");
        assert_eq!(
            fake.calls_of("retry.test", Family::V4),
            1,
            "A is not asked again while only AAAA fails"
        );
        // AAAA recovers: published, and then refreshed by its own TTL, not retried.
        fake.set_family("retry.test", Family::V6, &["fd00::1"], 60_000);
        let update = next_update(&mut updates).await;
        assert_eq!(update.ips, ips(&["10.0.0.1", "fd00::1"]));
        let v6 = fake.calls_of("retry.test", Family::V6);
        tokio::time::sleep(ms(400)).await;
        assert_eq!(
            fake.calls_of("retry.test", Family::V6),
            v6,
            "no more retries"
        );
        assert_eq!(fake.calls_of("retry.test", Family::V4), 1);
    }

    #[tokio::test]
    async fn add_waits_for_both_families_and_a_hanging_one_only_delays_it() {
        let fake = Fake::default();
        fake.set("slow6.test", &["10.0.0.1", "fd00::1"], 60_000);
        fake.delay_family(Family::V6, ms(300));
        let (resolver, _updates) = spawn(&fake);
        let started = Instant::now();
        let added = resolver.add("slow6.test").await.unwrap();
        assert!(started.elapsed() >= ms(300), "AAAA waited for");
        assert_eq!(added.ips, ips(&["10.0.0.1", "fd00::1"]));

        // AAAA never answers (the server drops the question): the lookup times out, A's
        // answer is what `add` returns.
        fake.set("hang6.test", &["10.0.0.2", "fd00::2"], 60_000);
        fake.delay_family(Family::V6, ms(10_000));
        let config = ServiceConfig {
            lookup_timeout: ms(150),
            ..config()
        };
        let (resolver, mut updates) = ResolverService::spawn(fake.clone(), config).unwrap();
        let started = Instant::now();
        let added = resolver.add("hang6.test").await.unwrap();
        assert!(
            started.elapsed() < ms(1_000),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(added.status, FirstAnswer::Resolved, "{added:?}");
        assert_eq!(added.ips, ips(&["10.0.0.2"]));
        assert_eq!(next_update(&mut updates).await.ips, ips(&["10.0.0.2"]));
    }

    #[tokio::test]
    async fn lookups_wait_for_a_slot_and_new_domains_go_before_refreshes() {
        let fake = Fake::default();
        // 15 domains (30 lookups: A and AAAA) refreshed every 100 ms (the TTL floor) by
        // lookups of 40 ms, 3 at a time: more are due than can run, all the time.
        let names: Vec<String> = (0..15).map(|i| format!("d{i}.test")).collect();
        for name in &names {
            fake.set(name, &["10.0.1.1"], 1);
        }
        fake.set("late.test", &["10.0.1.2"], 60_000);
        fake.delay(ms(40));
        let config = ServiceConfig {
            max_lookups_in_flight: 3,
            first_answer_timeout: ms(5_000),
            ..config()
        };
        let (resolver, _updates) = ResolverService::spawn(fake.clone(), config).unwrap();
        let adds: Vec<_> = names.iter().map(|n| resolver.add(n)).collect();
        for added in futures_util::future::join_all(adds).await {
            assert_eq!(added.unwrap().status, FirstAnswer::Resolved);
        }
        assert_eq!(fake.most_running(), 3, "never more than three at once");
        tokio::time::sleep(ms(300)).await;
        // A new domain goes before every due refresh: it waits for one slot at most.
        let started = Instant::now();
        let late = resolver.add("late.test").await.unwrap();
        assert_eq!(late.status, FirstAnswer::Resolved);
        assert!(
            started.elapsed() < ms(150),
            "the new domain waited {:?}",
            started.elapsed()
        );
        // The longest-waiting refresh goes first, so none starves.
        let before: Vec<usize> = names.iter().map(|n| fake.calls(n)).collect();
        tokio::time::sleep(ms(1_000)).await;
        for (name, b) in names.iter().zip(before) {
            assert!(
                fake.calls(name) > b,
                "{name} was refreshed {} times in 1 s",
                fake.calls(name) - b
            );
        }
        assert_eq!(fake.most_running(), 3, "the cap holds during refreshes");
    }

    #[tokio::test]
    async fn a_config_without_lookup_slots_is_refused() {
        let config = ServiceConfig {
            max_lookups_in_flight: 0,
            ..config()
        };
        assert!(ResolverService::spawn(Fake::default(), config).is_err());
    }

    #[tokio::test]
    async fn failing_new_domain_reports_the_failure() {
        let fake = Fake::default();
        fake.fail("bad.test");
        let (resolver, mut updates) = spawn(&fake);
        let added = resolver.add("bad.test").await.unwrap();
        assert!(
            matches!(&added.status, FirstAnswer::Failed(e)
                if e.contains("(A): REFUSED") && e.contains("(AAAA): REFUSED")),
            "both families' errors: {added:?}"
        );
        assert!(added.ips.is_empty());
        // A second add while it keeps failing answers at once.
        let started = Instant::now();
        let again = resolver.add("bad.test").await.unwrap();
        assert!(matches!(
            again.status,
            FirstAnswer::Failed(_) | FirstAnswer::Resolved
        ));
        assert!(started.elapsed() < ms(1_000));
        // When it recovers, the first answer is published.
        fake.set("bad.test", &["10.0.0.3"], 1_000);
        assert_eq!(next_update(&mut updates).await.ips, ips(&["10.0.0.3"]));
    }

    #[tokio::test]
    async fn slow_first_answer_returns_pending_then_arrives_as_update() {
        let fake = Fake::default();
        fake.set("slow.test", &["10.0.0.4"], 60_000);
        fake.delay(ms(500));
        let config = ServiceConfig {
            first_answer_timeout: ms(100),
            ..config()
        };
        let (resolver, mut updates) = ResolverService::spawn(fake.clone(), config).unwrap();
        let added = resolver.add("slow.test").await.unwrap();
        assert_eq!(added.status, FirstAnswer::Pending);
        assert!(added.ips.is_empty());
        assert_eq!(next_update(&mut updates).await.ips, ips(&["10.0.0.4"]));
    }

    #[tokio::test]
    async fn lookups_that_hang_time_out_as_failures() {
        let fake = Fake::default();
        fake.set("hang.test", &["10.0.0.5"], 60_000);
        fake.delay(ms(10_000));
        let config = ServiceConfig {
            lookup_timeout: ms(100),
            ..config()
        };
        let (resolver, _updates) = ResolverService::spawn(fake.clone(), config).unwrap();
        let added = resolver.add("hang.test").await.unwrap();
        assert!(
            matches!(&added.status, FirstAnswer::Failed(e) if e.contains("no answer within")),
            "{added:?}"
        );
    }

    #[tokio::test]
    async fn removed_then_added_again_ignores_the_old_lookup() {
        let fake = Fake::default();
        fake.set("again.test", &["10.0.0.1"], 60_000);
        fake.delay(ms(200));
        let (resolver, mut updates) = spawn(&fake);
        drop(resolver.add("again.test")); // the reference is taken even if not awaited
        tokio::time::sleep(ms(50)).await;
        assert_eq!(resolver.domains(), ["again.test"]);
        resolver.remove("again.test");
        fake.set("again.test", &["10.0.0.2"], 60_000);
        let added = resolver.add("again.test").await.unwrap();
        assert_eq!(added.ips, ips(&["10.0.0.2"]));
        assert_eq!(next_update(&mut updates).await.ips, ips(&["10.0.0.2"]));
        tokio::time::sleep(ms(300)).await;
        assert!(
            updates.try_recv().is_err(),
            "nothing from the aborted lookup"
        );
    }

    #[tokio::test]
    async fn invalid_domains_and_bad_settings_are_rejected() {
        let fake = Fake::default();
        let (resolver, _updates) = spawn(&fake);
        assert!(matches!(
            resolver.add("10.0.0.1").await,
            Err(ResolverError::InvalidDomain { .. })
        ));
        resolver.remove("*.nope"); // ignored
        assert!(resolver.domains().is_empty());
        let bad = ServiceConfig {
            refresh: RefreshConfig {
                ttl_floor: Duration::ZERO,
                ..RefreshConfig::default()
            },
            ..ServiceConfig::default()
        };
        assert!(ResolverService::spawn(fake, bad).is_err());
    }

    #[tokio::test]
    async fn the_service_stops_with_its_last_handle() {
        let fake = Fake::default();
        fake.set("x.test", &["10.0.0.1"], 60_000);
        let (resolver, mut updates) = spawn(&fake);
        let other = resolver.clone();
        resolver.add("x.test").await.unwrap();
        next_update(&mut updates).await;
        drop(resolver);
        assert!(other.is_running());
        drop(other);
        let end = tokio::time::timeout(ms(2_000), updates.recv()).await;
        assert_eq!(end, Ok(None), "updates end when the service stops");
    }
}
