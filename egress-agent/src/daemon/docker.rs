//! Following Docker, or not: whether to ([`follows`]), what that means for containers an
//! earlier run left pinned ([`prepare`]), the Docker-follow loop ([`follow`]) and the
//! Docker-less wait ([`without_docker`]).

use std::{future::Future, path::PathBuf, pin::Pin, time::Duration};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::ready::Ready;
use crate::{
    cli::{DockerMode, Unclassified},
    config::Config,
    dns::DnsService,
    docker::watch,
    host,
    owner::EnforcerHandle,
    reconcile::{self, ReconcileConfig, Reconciler, index::SharedIndex, resolvers},
    resolver::{DnsClient, ResolverService, ServiceConfig},
};
use egress_policy::policy_file::PolicyFile;

/// Whether the agent follows Docker in `mode`, logged with the reason for `auto`.
pub fn follows(mode: DockerMode, host: &str) -> bool {
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

/// Sets what unclassified container cgroups get. Without Docker, container cgroups are nobody's
/// to classify: none is denied as unclassified, and containers an earlier agent policed are let
/// go.
pub async fn prepare(
    handle: &EnforcerHandle,
    use_docker: bool,
    unclassified: Unclassified,
) -> anyhow::Result<()> {
    handle
        .set_unclassified_deny(use_docker && unclassified == Unclassified::Deny)
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
    Ok(())
}

/// Follows Docker until `shutdown` completes or the watcher ends: the reconciler task
/// ([`reconcile::spawn`]) takes the Docker events and the domain updates, policy files reloaded
/// (see `DaemonHandle::reload`) replace its policy file; `ready` is logged after the first sync.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    config: &Config,
    docker_host: &str,
    cgroup_mount: PathBuf,
    handle: &EnforcerHandle,
    index: SharedIndex,
    ready: &Ready,
    mut files: mpsc::Receiver<PolicyFile>,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    let client = DnsClient::new(config.dns_server).context("setting up the DNS client")?;
    let (resolver, updates) = ResolverService::spawn(
        client,
        ServiceConfig {
            refresh: config.refresh,
            ..ServiceConfig::default()
        },
    )
    .context("starting the resolver")?;
    let host_resolvers = std::fs::read_to_string(host::get().resolv_conf())
        .map(|t| resolvers::parse_resolv_conf(&t))
        .unwrap_or_default();
    let dns = DnsService::start(
        config.dns.clone(),
        handle.clone(),
        &config.pin_dir,
        index.clone(),
    )
    .await
    .context("starting the DNS proxy")?;
    let reconciler = Reconciler::new(
        ReconcileConfig {
            caps: config.caps,
            cgroup_mount,
            host_resolvers,
            attach_cgroup: ready.report.attach_cgroup.clone(),
            dns_default: config.dns.default_mode,
        },
        handle.clone(),
        resolver,
        config.policy_file.as_ref().map(|f| f.loaded.clone()),
        index,
    )
    .with_dns(dns);
    // The task starts first: it registers the default cgroup parents while Docker is awaited.
    // Dropping `tx` (no Docker after all) ends it.
    let (tx, events) = mpsc::channel(1024);
    let (reconciler, mut task) = reconcile::spawn(reconciler, events, updates);
    let docker = match config.docker {
        DockerMode::On => match wait_for_docker(docker_host, shutdown).await {
            Some(d) => d,
            None => {
                drop(tx);
                let _ = task.await;
                return Ok(());
            }
        },
        _ => watch::connect_to(docker_host)
            .await
            .context("connecting to Docker")?,
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch::run(docker, tx, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let mut announced = false;
    let mut ended = false;
    loop {
        tokio::select! {
            synced = reconciler.synced(), if !announced => {
                // Gone before its first sync: the task's end is taken below.
                announced = true;
                if synced.is_ok() {
                    ready.announce(handle).await;
                }
            }
            Some(file) = files.recv() => {
                let _ = reconciler.set_policy_file(Some(file)).await;
            }
            done = &mut task => {
                // The watcher stopped (its events ended) or the task panicked.
                if let Err(e) = done {
                    error!("reconciler task: {e}");
                }
                ended = true;
                break;
            }
            _ = shutdown.as_mut() => break,
        }
    }
    if !ended {
        reconciler.stop().await;
        if let Err(e) = task.await {
            error!("reconciler task: {e}");
        }
    }
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    Ok(())
}

/// Not following Docker: forgets this dockerd's cgroup parents (no cgroup is an unclassified
/// container), logs `ready` and waits for `shutdown`.
pub async fn without_docker(
    handle: &EnforcerHandle,
    ready: &Ready,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) {
    info!(
        "not following Docker; only --policy cgroups are policed, Docker containers are neither policed nor denied"
    );
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
    ready.announce(handle).await;
    shutdown.as_mut().await;
}

/// `--docker on`: waits until the daemon's socket exists and a client can be made, retrying with
/// backoff and saying so; None if `shutdown` came first.
async fn wait_for_docker(
    host: &str,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
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
