//! `egress-agent run`: load and attach, apply `--policy` cgroups, follow Docker and police
//! labelled containers, log denials, until told to stop.

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use egress_common::event::Verdict;
use tokio::{signal::unix::Signal, sync::broadcast::error::RecvError};
use tracing::{error, info, warn};

use crate::{
    cli::{DockerMode, RunArgs, Unclassified},
    container::ContainerId,
    denial_log::{Decision, RateLimiter},
    docker::{
        cgroup_path,
        watch::{self, DockerEvent},
    },
    enforcer::{Enforcer, EnforcerConfig, OpenReport},
    events::EgressEvent,
    labels::Capabilities,
    owner::{self, EnforcerHandle, WeakEnforcerHandle},
    policy::{EntryError, Mode, Policy, parse_ip_entries, parse_mode},
    policy_file::PolicyFile,
    reconcile::{ReconcileConfig, Reconciler, index::SharedIndex, resolvers},
    resolver::{DnsClient, RefreshConfig, ResolverService, ServiceConfig, parse_dns_server},
    sys::{cgroup, kernel_path::KernelPath, mounts},
};

/// Most domain updates taken together in one reconciliation.
const MAX_DOMAIN_BATCH: usize = 4096;

/// A `--policy` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub cgroup: PathBuf,
    pub policy: Policy,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("--policy `{spec}`: expected CGROUP[@MODE]=ENTRY[,ENTRY...]")]
    Shape { spec: String },
    #[error("--policy `{spec}`: {source}")]
    Mode {
        spec: String,
        source: crate::policy::UnknownMode,
    },
    #[error("--policy `{spec}`: {source}")]
    Entry { spec: String, source: EntryError },
}

/// Parses `CGROUP[@MODE]=ENTRY[,ENTRY...]`.
pub fn parse_policy_spec(spec: &str) -> Result<PolicySpec, SpecError> {
    let (left, entries) = spec.split_once('=').ok_or_else(|| SpecError::Shape {
        spec: spec.to_owned(),
    })?;
    let (cg, mode) = match left.rsplit_once('@') {
        Some((cg, m)) => (
            cg,
            parse_mode(m).map_err(|source| SpecError::Mode {
                spec: spec.to_owned(),
                source,
            })?,
        ),
        None => (left, Mode::Enforce),
    };
    if cg.trim().is_empty() {
        return Err(SpecError::Shape {
            spec: spec.to_owned(),
        });
    }
    let rules = parse_ip_entries(entries).map_err(|source| SpecError::Entry {
        spec: spec.to_owned(),
        source,
    })?;
    Ok(PolicySpec {
        cgroup: PathBuf::from(cg.trim()),
        policy: Policy::new(mode, rules),
    })
}

/// The directory a `--policy` names and whether it exists: as [`cgroup::resolve`] takes it, but
/// a cgroup that does not exist yet is taken below the cgroup v2 mount (policed once made).
fn policy_dir(mount: &Path, cg: &Path) -> anyhow::Result<(PathBuf, bool)> {
    match cgroup::resolve(cg) {
        Ok(dir) => Ok((dir, true)),
        Err(e) => {
            let dir = if cg.starts_with(mount) {
                cg.to_owned()
            } else {
                mount.join(cg.strip_prefix("/").unwrap_or(cg))
            };
            if dir.exists() {
                return Err(e.into());
            }
            Ok((dir, false))
        }
    }
}

/// Runs the daemon until `shutdown` completes; `hup` (SIGHUP) reloads the policy file.
pub async fn run(
    args: RunArgs,
    shutdown: impl Future<Output = ()>,
    mut hup: Signal,
) -> anyhow::Result<()> {
    let specs = args
        .policies
        .iter()
        .map(|s| parse_policy_spec(s))
        .collect::<Result<Vec<_>, _>>()?;
    let caps = Capabilities::default();
    let policy_file = match &args.policy_file {
        Some(p) => Some(PolicyFile::load(p, caps).context("--policy-file")?),
        None => None,
    };
    let dns_server = match &args.dns_server {
        Some(s) => Some(parse_dns_server(s).context("--dns-server")?),
        None => None,
    };
    let refresh = RefreshConfig {
        ttl_floor: Duration::from_secs(args.ttl_floor),
        ttl_ceiling: Duration::from_secs(args.ttl_ceiling),
        grace: Duration::from_secs(args.grace),
        ..RefreshConfig::default()
    };
    refresh
        .validate()
        .context("--ttl-floor/--ttl-ceiling/--grace")?;
    let cgroup_mount = mounts::cgroup2_mount()?;
    let attach_cgroup = args
        .attach_cgroup
        .clone()
        .unwrap_or_else(|| cgroup_mount.clone());
    let cfg = EnforcerConfig {
        pin_dir: args.pin.pin_dir.clone(),
        attach_cgroup,
    };
    let (enforcer, report) = Enforcer::open(&cfg).context("starting the enforcer")?;
    if let Some(why) = &report.replaced {
        warn!(reason = %why, "replaced an incompatible pinned state");
    }
    let (handle, task) = owner::spawn(enforcer);
    let docker_host = watch::docker_host();
    let use_docker = follows_docker(args.docker, &docker_host);
    // Without Docker, container cgroups are nobody's to classify: none is denied as
    // unclassified, and containers an earlier agent policed are let go.
    handle
        .set_unclassified_deny(use_docker && args.unclassified == Unclassified::Deny)
        .await?;
    if !use_docker {
        let (containers, unclassified) = handle
            .forget_containers()
            .await
            .context("dropping the container policies of an earlier run")?;
        if containers + unclassified > 0 {
            info!(
                containers,
                unclassified_cgroups = unclassified,
                "not following Docker: dropped the container policies an earlier run left pinned"
            );
        }
    }

    let index = SharedIndex::default();
    for spec in specs {
        // By path: the cgroup and every cgroup below it are policed now and whenever they are
        // made again (a restarted service), before any process runs in them.
        let (dir, exists) = policy_dir(&cgroup_mount, &spec.cgroup)
            .with_context(|| format!("--policy for cgroup {}", spec.cgroup.display()))?;
        let path = KernelPath::of_dir(&cgroup_mount, &dir)
            .with_context(|| format!("--policy for cgroup {}", spec.cgroup.display()))?;
        // A policy no program would judge is a configuration error, not a policy.
        if !dir.starts_with(&report.attach_cgroup) {
            anyhow::bail!(
                "--policy for cgroup {}: it is outside --attach-cgroup {}, so no program would judge its egress",
                dir.display(),
                report.attach_cgroup.display()
            );
        }
        let existing = handle
            .set_path_policy(path.clone(), dir.clone(), spec.policy.clone())
            .await
            .with_context(|| format!("applying the policy of cgroup {}", dir.display()))?;
        if !exists {
            warn!(cgroup = %dir.display(), path = %path,
                "--policy cgroup does not exist yet; it is policed from the moment it is made");
        }
        info!(cgroup = %dir.display(), path = %path, mode = crate::policy::mode_name(spec.policy.mode),
            rules = spec.policy.rules.len(), existing_cgroups = existing,
            "policy applied to the cgroup and every cgroup below it, also when they are made again");
    }

    let logger = tokio::spawn(log_events(
        handle.subscribe(),
        handle.downgrade(),
        index.clone(),
        Duration::from_secs(args.deny_log_interval),
    ));

    let mut shutdown = std::pin::pin!(shutdown);
    if use_docker {
        let client = DnsClient::new(dns_server).context("setting up the DNS client")?;
        let (resolver, mut updates) = ResolverService::spawn(
            client,
            ServiceConfig {
                refresh,
                ..ServiceConfig::default()
            },
        )
        .context("starting the resolver")?;
        let host_resolvers = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| resolvers::parse_resolv_conf(&t))
            .unwrap_or_default();
        let mut reconciler = Reconciler::new(
            ReconcileConfig {
                caps,
                cgroup_mount,
                host_resolvers,
                attach_cgroup: report.attach_cgroup.clone(),
            },
            handle.clone(),
            resolver,
            policy_file,
            index.clone(),
        );
        reconciler.register_default_parents().await;
        let docker = match args.docker {
            DockerMode::On => match wait_for_docker(&docker_host, &mut shutdown).await {
                Some(d) => d,
                None => return stop(handle, task, logger).await,
            },
            _ => watch::connect_to(&docker_host)
                .await
                .context("connecting to Docker")?,
        };
        let (tx, mut events) = tokio::sync::mpsc::channel(1024);
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(watch::run(docker, tx, async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        let mut ready = false;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => {
                        let first_sync = !ready && matches!(ev, DockerEvent::Sync { .. });
                        reconciler.on_docker(ev).await;
                        if first_sync {
                            ready = true;
                            log_ready(&cfg, &report, &handle).await;
                        }
                    }
                    None => break,
                },
                Some(update) = updates.recv() => {
                    // Whatever else is queued goes with it (a refresh comes in bursts).
                    let mut batch = vec![update];
                    while batch.len() < MAX_DOMAIN_BATCH {
                        match updates.try_recv() {
                            Ok(u) => batch.push(u),
                            Err(_) => break,
                        }
                    }
                    reconciler.on_domains(batch).await;
                }
                _ = hup.recv() => match &args.policy_file {
                    Some(p) => match PolicyFile::load(p, caps) {
                        Ok(f) => {
                            info!(path = %p.display(), "policy file reloaded");
                            reconciler.set_policy_file(Some(f)).await;
                        }
                        Err(e) => error!(path = %p.display(), "policy file refused, the previous one stays in force: {e}"),
                    },
                    None => info!("SIGHUP: no --policy-file to reload"),
                },
                _ = &mut shutdown => break,
            }
        }
        let _ = stop_tx.send(true);
        let _ = watcher.await;
    } else {
        info!(
            "not following Docker; only --policy cgroups are policed, Docker containers are neither policed nor denied"
        );
        // No dockerd to classify containers: no cgroup is an unclassified container.
        match handle.clear_container_parents().await {
            Ok(0) => {}
            Ok(n) => info!(
                parents = n,
                map = egress_common::maps::CONTAINER_PARENTS,
                "forgot the Docker cgroup parents of an earlier run: look-alike cgroups are not denied as unclassified"
            ),
            Err(e) => error!(
                map = egress_common::maps::CONTAINER_PARENTS,
                "forgetting the Docker cgroup parents: {e}"
            ),
        }
        log_ready(&cfg, &report, &handle).await;
        loop {
            tokio::select! {
                _ = hup.recv() => info!("SIGHUP: not following Docker, there is no container policy to reload"),
                _ = &mut shutdown => break,
            }
        }
    }
    stop(handle, task, logger).await
}

/// Stops the owner task and the logger; enforcement stays pinned.
async fn stop(
    handle: EnforcerHandle,
    task: tokio::task::JoinHandle<()>,
    logger: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    info!(
        "stopping; programs stay attached and maps pinned (enforcement continues). `egress-agent cleanup` removes them"
    );
    drop(handle);
    if let Err(e) = task.await {
        error!("enforcer task: {e}");
    }
    let _ = logger.await;
    Ok(())
}

/// Whether the agent follows Docker in `mode`, logged with the reason for `auto`.
fn follows_docker(mode: DockerMode, host: &str) -> bool {
    match mode {
        DockerMode::Off => {
            info!("--docker off: not following Docker");
            false
        }
        DockerMode::On => true,
        DockerMode::Auto => match watch::unix_socket_of(host) {
            Some(sock) if !sock.exists() => {
                info!(
                    docker_host = host,
                    "--docker auto: no Docker socket at {}; not following Docker (as --docker off)",
                    sock.display()
                );
                false
            }
            _ => {
                info!(
                    docker_host = host,
                    "--docker auto: following Docker (as --docker on)"
                );
                true
            }
        },
    }
}

/// `--docker on`: waits until the daemon's socket exists and a client can be made, retrying with
/// backoff and saying so; None if `shutdown` came first.
async fn wait_for_docker(
    host: &str,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<bollard::Docker> {
    let mut delay = Duration::from_millis(250);
    let mut attempts = 0u32;
    loop {
        let missing = watch::unix_socket_of(host).filter(|p| !p.exists());
        let error = match missing {
            Some(sock) => format!("no socket at {}", sock.display()),
            None => match watch::connect_to(host).await {
                Ok(d) => {
                    if attempts > 0 {
                        info!(docker_host = host, attempts, "--docker on: Docker is there");
                    }
                    return Some(d);
                }
                Err(e) => e.to_string(),
            },
        };
        attempts += 1;
        // Loud at first, then about once a minute.
        if attempts == 1 || attempts.is_multiple_of(6) {
            warn!(
                docker_host = host,
                attempts,
                retry_in = ?delay,
                "--docker on: waiting for Docker ({error})"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.as_mut() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn log_ready(cfg: &EnforcerConfig, report: &OpenReport, handle: &EnforcerHandle) {
    // Policies are in place: the programs of a replaced layout can go.
    if let Err(e) = handle.release_previous().await {
        error!("releasing the replaced layout's programs: {e}");
    }
    let cgroups = handle.policies().await.map(|p| p.len()).unwrap_or(0);
    let containers = handle.containers().await.map(|c| c.len()).unwrap_or(0);
    info!(
        pin_dir = %cfg.pin_dir.display(),
        attach_cgroup = %report.attach_cgroup.display(),
        reused_pinned_state = report.reused,
        policed_cgroups = cgroups,
        known_containers = containers,
        "ready"
    );
}

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
    addr: std::net::IpAddr,
    port: u16,
    protocol: u8,
    verdict: Verdict,
}

/// How often the logger looks for keys whose interval ended.
fn flush_period(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// Logs denials and audit hits, naming the container, once per (container, destination) per
/// `interval`; repeats are summed up in one line when the interval ends. Memory is bounded
/// (see [`RateLimiter`]).
async fn log_events(
    mut events: tokio::sync::broadcast::Receiver<EgressEvent>,
    handle: WeakEnforcerHandle,
    index: SharedIndex,
    interval: Duration,
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
                warn!(
                    dropped = n,
                    "event log fell behind; events dropped (counters still have them)"
                );
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let mut container = index.container_of(ev.cgroup_id);
        if container.is_none() {
            // A cgroup the reconciler has not seen yet (the process may be gone already):
            // its policy id names the container; else the process's cgroup path does.
            container = container_of_policy(&handle, ev.policy_id)
                .await
                .or_else(|| container_of_pid(ev.pid));
            if let Some(id) = container {
                index.remember_cgroup(ev.cgroup_id, id);
            }
        }
        let key = DenialKey {
            container,
            cgroup_id: ev.cgroup_id,
            addr: ev.addr,
            port: ev.port,
            protocol: ev.protocol,
            verdict: ev.verdict,
        };
        let now = std::time::Instant::now();
        for expired in limiter.expire(now) {
            report_repeats(&index, &expired.key, expired.suppressed, interval);
        }
        match limiter.check(&key, now) {
            Decision::Log => {}
            Decision::Suppress | Decision::Overflow => continue,
        }
        let meta = container.and_then(|c| index.meta(&c)).unwrap_or_default();
        let domains = index.domains_of(&ev.addr).join(",");
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
        protocol = %crate::events::protocol_name(key.protocol),
        destination = %key.addr,
        port = key.port,
        verdict,
        repeats,
        interval_secs = interval.as_secs(),
        "egress repeated within the denial log interval"
    );
}

/// The container whose policy has id `policy_id`.
async fn container_of_policy(handle: &WeakEnforcerHandle, policy_id: u32) -> Option<ContainerId> {
    if policy_id == egress_common::policy::NO_RULES_POLICY_ID {
        return None;
    }
    handle
        .containers()
        .await
        .ok()?
        .into_iter()
        .find(|(_, a)| a.as_ref().is_some_and(|a| a.policy_id == policy_id))
        .map(|(id, _)| id)
}

/// The container a process belongs to, from its cgroup v2 path.
fn container_of_pid(pid: u32) -> Option<ContainerId> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    ContainerId::of_cgroup_path(&cgroup_path::parse_proc_cgroup(&text)?)
}

/// The SIGHUP stream, installed at once (SIGHUP's default action would end the agent).
pub fn hangups() -> std::io::Result<Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, so a
/// signal that arrives while the agent starts up is not lost (nor fatal).
pub fn signals() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s = parse_policy_spec("test/a@audit=127.0.0.2,10.0.0.0/8:53").unwrap();
        assert_eq!(s.cgroup, PathBuf::from("test/a"));
        assert_eq!(s.policy.mode, Mode::Audit);
        assert_eq!(s.policy.rules.len(), 2);
        let s = parse_policy_spec("/sys/fs/cgroup/x=").unwrap();
        assert_eq!(s.policy, Policy::deny_all());
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!(matches!(
            parse_policy_spec("nocgroup"),
            Err(SpecError::Shape { .. })
        ));
        assert!(matches!(
            parse_policy_spec("=10.0.0.1"),
            Err(SpecError::Shape { .. })
        ));
        let e = parse_policy_spec("a@block=10.0.0.1").unwrap_err();
        assert!(e.to_string().contains("block"), "{e}");
        let e = parse_policy_spec("a=10.0.0.1,10.0.0.300").unwrap_err();
        assert!(e.to_string().contains("10.0.0.300"), "{e}");
    }
}
