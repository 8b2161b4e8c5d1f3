//! One proxied container: its policy, its resolvers, what it learned, and the answer to one
//! question ([`Proxied::answer`]).
//!
//! A question for a name the policy does not allow is answered by the proxy itself (NXDOMAIN,
//! or REFUSED with `--dns-deny refused`), never forwarded, logged and counted; in audit mode it
//! is forwarded and logged as audited. An allowed question goes to the container's resolvers;
//! the addresses of the answer are written into the container's allow set (learn mode, and
//! names matched only by wildcards) before the answer is released. If that takes longer than
//! `--dns-hold`, or no resolver answers within `--dns-upstream-timeout`, the container gets
//! SERVFAIL: it asks again, it never gets an address it may not reach.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use egress_dns::{
    EncodeError, Transport,
    learned::{Limits, Store},
    query::ClientQuery,
};
use egress_policy::{dns::DnsPolicy, policy::Mode, policy::Rule};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, error, info, warn};

use super::{
    DenyRcode, DnsConfig,
    counters::{Counters, bump},
    peers::Peers,
    upstream::Upstream,
};
use crate::{enforcer::Owner, owner::EnforcerHandle, reconcile::index::LearnedNames};

/// Most refused-question lines logged per container per [`LOG_WINDOW`]; the rest are counted
/// and summed up in one line.
const LOG_BURST: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

struct LogLimit {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

/// Whether the store changed since the allow set was last written (a write failed or timed
/// out). Its lock makes writes of the allow set one at a time.
struct Writes {
    dirty: bool,
}

pub struct Proxied {
    pub owner: Owner,
    /// The container's name, for logs.
    pub name: String,
    policy: RwLock<Arc<DnsPolicy>>,
    servers: watch::Receiver<Option<Vec<SocketAddr>>>,
    peers: Arc<Peers>,
    upstream: Upstream,
    /// What the container learned: the one copy (the denial log reads it too).
    store: Mutex<Store>,
    writes: tokio::sync::Mutex<Writes>,
    log_limit: Mutex<LogLimit>,
    /// Questions in flight (UDP) or connections open (TCP).
    pub in_flight: Arc<Semaphore>,
    pub tcp_conns: Arc<Semaphore>,
    cfg: Arc<DnsConfig>,
    counters: Arc<Counters>,
    enforcer: EnforcerHandle,
}

impl Proxied {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        owner: Owner,
        name: String,
        policy: Arc<DnsPolicy>,
        servers: watch::Receiver<Option<Vec<SocketAddr>>>,
        peers: Arc<Peers>,
        upstream: Upstream,
        cfg: Arc<DnsConfig>,
        counters: Arc<Counters>,
        enforcer: EnforcerHandle,
    ) -> Self {
        Self {
            owner,
            name,
            policy: RwLock::new(policy),
            servers,
            peers,
            upstream,
            store: Mutex::new(Store::new(Limits {
                grace: cfg.grace,
                max_addrs_per_name: cfg.max_ips_per_name,
                max_names: cfg.max_names,
            })),
            writes: tokio::sync::Mutex::new(Writes { dirty: false }),
            log_limit: Mutex::new(LogLimit {
                window: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
            in_flight: Arc::new(Semaphore::new(super::upstream::MAX_IN_FLIGHT)),
            tcp_conns: Arc::new(Semaphore::new(super::MAX_TCP_CONNS)),
            cfg,
            counters,
            enforcer,
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn policy(&self) -> Arc<DnsPolicy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the policy and rewrites what was learned under it (names it no longer allows
    /// lose their addresses).
    pub async fn set_policy(&self, policy: Arc<DnsPolicy>) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
        let mut writes = self.writes.lock().await;
        if let Err(e) = self.write_learned(&mut writes).await {
            error!(container = %self.name, "rewriting learned addresses after a policy change: {e}");
        }
    }

    /// The answer to the message `bytes` (None: drop it).
    pub async fn answer(
        &self,
        bytes: &[u8],
        client: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        bump(&self.counters.questions);
        let query = match egress_dns::query::parse(bytes) {
            Ok(q) => q,
            Err(e) => {
                bump(&self.counters.malformed);
                debug!(container = %self.name, "malformed DNS message: {e}");
                return self.sent(egress_dns::reply::rejection(&e)).flatten();
            }
        };
        let policy = self.policy();
        let allowed = policy.allows(&query.key).is_some();
        if !allowed {
            if policy.mode() == Mode::Enforce {
                bump(&self.counters.refused);
                self.log_refused(&query, false);
                return self.sent(match self.cfg.deny {
                    DenyRcode::NxDomain => egress_dns::reply::nxdomain(&query),
                    DenyRcode::Refused => egress_dns::reply::refused(&query),
                });
            }
            bump(&self.counters.audited);
            self.log_refused(&query, true);
        }
        let deadline = tokio::time::Instant::now() + self.cfg.upstream_timeout;
        // The server the application asked; else the container's resolvers.
        let asked = self.peers.origin(client.ip()).map(|s| vec![s]);
        let servers = match asked {
            Some(s) => Some(s),
            None => self.servers_by(deadline).await,
        };
        let Some(servers) = servers else {
            bump(&self.counters.failed);
            warn!(container = %self.name, name = %query.key,
                "no resolver known for the container yet: SERVFAIL");
            return self.sent(egress_dns::reply::servfail(&query));
        };
        let build = |id| egress_dns::upstream::query(&query, id).map_err(std::io::Error::other);
        let forwarded = self
            .upstream
            .exchange(transport, &servers, build, deadline)
            .await;
        let answer = forwarded.map_err(|e| e.to_string()).and_then(|(raw, id)| {
            egress_dns::answer::check(&raw, &query, id).map_err(|e| format!("unusable answer: {e}"))
        });
        let mut answer = match answer {
            Ok(a) => a,
            Err(e) => {
                bump(&self.counters.failed);
                info!(container = %self.name, name = %query.key, "DNS upstream failed, SERVFAIL: {e}");
                return self.sent(egress_dns::reply::servfail(&query));
            }
        };
        if allowed && policy.learns(&query.key) && !answer.addrs.is_empty() {
            let hold = self.cfg.hold;
            let ttl = answer.min_ttl.unwrap_or(0);
            match tokio::time::timeout(hold, self.learn(&query.key, &answer.addrs, ttl)).await {
                Ok(Ok(not_held)) => {
                    // Past the per-name cap: the container is not told what it may not reach.
                    if !not_held.is_empty() {
                        answer.retain_addrs(|ip| !not_held.contains(&ip));
                    }
                }
                Ok(Err(e)) => {
                    bump(&self.counters.learn_failed);
                    error!(container = %self.name, name = %query.key,
                        "writing the answer's addresses failed, SERVFAIL: {e}");
                    return self.sent(egress_dns::reply::servfail(&query));
                }
                Err(_) => {
                    bump(&self.counters.held_too_long);
                    warn!(container = %self.name, name = %query.key, hold_ms = hold.as_millis() as u64,
                        "the answer's addresses were not written within --dns-hold, SERVFAIL (the container asks again)");
                    return self.sent(egress_dns::reply::servfail(&query));
                }
            }
        }
        let out = self.sent(answer.to_client(transport));
        if out.is_some() {
            bump(&self.counters.answered);
        }
        out
    }

    /// A message the proxy made, or None (logged) if hickory could not encode it.
    fn sent<T>(&self, made: Result<T, EncodeError>) -> Option<T> {
        made.map_err(|e| error!(container = %self.name, "{e}")).ok()
    }

    /// The container's resolvers, waiting for them (a container being made) until `deadline`.
    async fn servers_by(&self, deadline: tokio::time::Instant) -> Option<Vec<SocketAddr>> {
        let mut rx = self.servers.clone();
        let known = tokio::time::timeout_at(deadline, rx.wait_for(|s| s.is_some())).await;
        match known {
            Ok(Ok(s)) => s.clone(),
            _ => None,
        }
    }

    /// Learns `addrs` for `name` and writes the allow set; returns the addresses the store did
    /// not take (past the per-name cap).
    async fn learn(&self, name: &str, addrs: &[IpAddr], ttl: u32) -> Result<Vec<IpAddr>, String> {
        let mut writes = self.writes.lock().await;
        let (known, outcome) = {
            let mut store = self.store();
            // An answer the name holds every address of already only refreshes their expiry:
            // the allow set stays as written (the common case: a name asked again).
            let known = store.name_holds_all(name, addrs);
            (known, store.learn(name, addrs, ttl, Instant::now()))
        };
        let refreshed_only =
            known && !writes.dirty && outcome.removed.is_empty() && outcome.evicted == 0;
        if outcome.evicted > 0 {
            self.counters
                .evicted
                .fetch_add(outcome.evicted as u64, std::sync::atomic::Ordering::Relaxed);
            warn!(container = %self.name, name, evicted = outcome.evicted,
                cap = self.cfg.max_ips_per_name,
                "more addresses for one name than --dns-max-ips-per-name: the oldest are forgotten");
        }
        if !refreshed_only {
            self.write_learned(&mut writes).await?;
        }
        Ok(outcome.not_held)
    }

    /// Forgets what expired (and closes idle upstream connections); rewrites the allow set if
    /// that changed it.
    pub async fn expire(&self, now: Instant) {
        self.upstream
            .close_idle(tokio::time::Instant::from_std(now));
        let mut writes = self.writes.lock().await;
        if self.store().expire(now).is_empty() {
            return;
        }
        if let Err(e) = self.write_learned(&mut writes).await {
            error!(container = %self.name, "removing expired learned addresses: {e}");
        }
    }

    /// Writes the allow set from the store (the enforcer writes only what changed).
    async fn write_learned(&self, writes: &mut Writes) -> Result<(), String> {
        let policy = self.policy();
        let rules: BTreeSet<Rule> = self
            .store()
            .entries()
            .flat_map(|(name, addrs)| policy.rules_for(name, addrs))
            .collect();
        writes.dirty = true;
        let written = self
            .enforcer
            .set_learned_rules(self.owner, rules)
            .await
            .map_err(|e| e.to_string())?;
        if !written {
            return Err("the enforcer does not police the container (yet)".into());
        }
        writes.dirty = false;
        Ok(())
    }

    fn log_refused(&self, q: &ClientQuery, audited: bool) {
        let mut l = self.log_limit.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(l.window) >= LOG_WINDOW {
            if l.suppressed > 0 {
                warn!(container = %self.name, suppressed = l.suppressed,
                    "DNS questions refused but not logged in the last window");
            }
            *l = LogLimit {
                window: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if l.logged >= LOG_BURST {
            l.suppressed += 1;
            return;
        }
        l.logged += 1;
        if audited {
            warn!(container = %self.name, name = %q.key, qtype = %q.qtype(),
                "audit: DNS question for a name the policy does not allow (forwarded)");
        } else {
            warn!(container = %self.name, name = %q.key, qtype = %q.qtype(),
                "DNS question refused: the name is not allowed");
        }
    }
}

impl LearnedNames for Proxied {
    fn names_of(&self, ip: IpAddr) -> Vec<String> {
        self.store().names_of(ip).map(str::to_owned).collect()
    }
}
