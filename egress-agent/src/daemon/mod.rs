//! The daemon, `egress-agent run`: [`run`] loads and attaches the programs, applies the
//! `--policy` cgroups, follows Docker and polices labelled containers, logs denials, and reloads
//! the policy file on SIGHUP ([`DaemonHandle::reload`]), until told to stop.
//!
//! - [`docker`]: whether to follow Docker, and the Docker-follow loop;
//! - [`policies`]: the `--policy` cgroups;
//! - [`handle`]: what can be asked of the running daemon (reload);
//! - [`ready`]: the `ready` line;
//! - [`signals`]: SIGINT/SIGTERM and SIGHUP.

pub mod docker;
pub mod handle;
pub mod policies;
pub mod ready;
pub mod signals;

use std::future::Future;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use self::handle::{DaemonHandle, ReloadError, Reloaded};
use self::ready::Ready;
use crate::{
    config::Config,
    docker::watch,
    enforcer::{Enforcer, EnforcerConfig},
    host,
    observe::Observer,
    owner::{self, EnforcerHandle},
    reconcile::index::SharedIndex,
    sys::{memory, mounts},
};

/// Runs the daemon with `config` until `shutdown` completes; enforcement stays pinned after it
/// returns. SIGHUP reloads the policy file from the moment this is called.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let hup = signals::hangups().context("installing the SIGHUP handler")?;
    host::set(config.host.clone()).context("--host-root")?;
    let cgroup_mount = mounts::cgroup2_mount()?;
    let enforcer_config = EnforcerConfig {
        pin_dir: config.pin_dir.clone(),
        attach_cgroup: config
            .attach_cgroup
            .clone()
            .unwrap_or_else(|| cgroup_mount.clone()),
    };
    let (enforcer, report) = Enforcer::open(&enforcer_config).context("starting the enforcer")?;
    if let Some(why) = &report.replaced {
        warn!(reason = %why, "replaced an incompatible pinned state");
    }
    let (handle, task) = owner::spawn(enforcer);
    // The programs are loaded: their BTF's few MiB are free now.
    let trimmer = memory::spawn_trimmer();
    let docker_host = watch::docker_host();
    let use_docker = docker::follows(config.docker, &docker_host);
    docker::prepare(&handle, use_docker, config.unclassified).await?;

    let index = SharedIndex::default();
    policies::apply(
        &handle,
        &cgroup_mount,
        &report.attach_cgroup,
        &config.policies,
    )
    .await?;
    let observer = Observer::spawn(
        &handle,
        index.clone(),
        config.host.clone(),
        config.deny_log_interval,
    );
    let ready = Ready {
        pin_dir: config.pin_dir.clone(),
        report,
    };
    let (daemon, files) = DaemonHandle::new(
        config.policy_file.as_ref().map(|f| f.path.clone()),
        config.caps,
        use_docker,
    );
    let reloads = tokio::spawn(signals::reload_on_hangup(hup, daemon));

    let mut shutdown = std::pin::pin!(shutdown);
    match files {
        Some(files) => {
            docker::follow(
                &config,
                &docker_host,
                cgroup_mount,
                &handle,
                index,
                &ready,
                files,
                &mut shutdown,
            )
            .await?
        }
        None => docker::without_docker(&handle, &ready, &mut shutdown).await,
    }
    reloads.abort();
    trimmer.abort();
    stop(handle, task, observer).await;
    Ok(())
}

/// Stops the owner task and the observer; enforcement stays pinned.
async fn stop(handle: EnforcerHandle, task: JoinHandle<()>, observer: Observer) {
    info!(
        "stopping; programs stay attached and maps pinned (enforcement continues). `egress-agent cleanup` removes them"
    );
    drop(handle);
    if let Err(e) = task.await {
        error!("enforcer task: {e}");
    }
    observer.stopped().await;
}
