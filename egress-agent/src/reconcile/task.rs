//! The reconciler as a task. It owns a [`Reconciler`] and feeds it, one thing at a time:
//!
//! - the Docker events of the receiver it is given (the watcher's);
//! - the resolver's domain updates, each burst taken together (at most [`MAX_DOMAIN_BATCH`]);
//! - policy-file replacements (SIGHUP), sent through its [`ReconcilerHandle`].
//!
//! Before the first event it registers both cgroup drivers' default parents. The handle tells
//! when the first full sync with Docker has been applied ([`ReconcilerHandle::synced`]: the
//! daemon logs `ready` then). The task ends when the Docker events end (the watcher stopped),
//! when [`ReconcilerHandle::stop`] is called, or when every handle is dropped.

use std::collections::BTreeMap;

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use super::{MapWriter, NameResolver, Reconciler};
use crate::{docker::watch::DockerEvent, resolver::DomainUpdate};
use egress_common::container::ContainerId;
use egress_policy::{policy::Policy, policy_file::PolicyFile};

/// Most domain updates taken together in one reconciliation.
pub const MAX_DOMAIN_BATCH: usize = 4096;

/// The reconciler task has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the reconciler task has stopped")]
pub struct ReconcilerGone;

enum Request {
    SetPolicyFile {
        file: Option<PolicyFile>,
        reply: oneshot::Sender<()>,
    },
    Policies {
        reply: oneshot::Sender<BTreeMap<ContainerId, Option<Policy>>>,
    },
    Stop,
}

/// A cheap, clonable handle on the reconciler task.
#[derive(Clone)]
pub struct ReconcilerHandle {
    tx: mpsc::Sender<Request>,
    synced: watch::Receiver<bool>,
}

impl ReconcilerHandle {
    /// Replaces the policy file (None: no file) and re-applies every container; returns once
    /// that is done.
    pub async fn set_policy_file(&self, file: Option<PolicyFile>) -> Result<(), ReconcilerGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::SetPolicyFile { file, reply }).await?;
        rx.await.map_err(|_| ReconcilerGone)
    }

    /// The containers followed and the policies computed for them (None: not policed).
    pub async fn policies(&self) -> Result<BTreeMap<ContainerId, Option<Policy>>, ReconcilerGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Policies { reply }).await?;
        rx.await.map_err(|_| ReconcilerGone)
    }

    /// Returns once the first full sync with Docker has been applied (at once if it has);
    /// `ReconcilerGone` if the task ended before.
    pub async fn synced(&self) -> Result<(), ReconcilerGone> {
        let mut rx = self.synced.clone();
        rx.wait_for(|done| *done)
            .await
            .map(|_| ())
            .map_err(|_| ReconcilerGone)
    }

    /// True once the first full sync has been applied.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Asks the task to end after what it is doing (the kernel state stays as written).
    pub async fn stop(&self) {
        // Already gone is as good as stopped.
        let _ = self.tx.send(Request::Stop).await;
    }

    async fn send(&self, request: Request) -> Result<(), ReconcilerGone> {
        self.tx.send(request).await.map_err(|_| ReconcilerGone)
    }
}

/// Starts the task that runs `reconciler` on the Docker events of `docker` and the domain
/// updates of `domains` (see the module docs).
pub fn spawn<W: MapWriter, N: NameResolver>(
    reconciler: Reconciler<W, N>,
    docker: mpsc::Receiver<DockerEvent>,
    domains: mpsc::UnboundedReceiver<DomainUpdate>,
) -> (ReconcilerHandle, JoinHandle<()>) {
    let (tx, requests) = mpsc::channel(16);
    let (synced_tx, synced) = watch::channel(false);
    let task = tokio::spawn(run(reconciler, docker, domains, requests, synced_tx));
    (ReconcilerHandle { tx, synced }, task)
}

async fn run<W: MapWriter, N: NameResolver>(
    mut reconciler: Reconciler<W, N>,
    mut docker: mpsc::Receiver<DockerEvent>,
    mut domains: mpsc::UnboundedReceiver<DomainUpdate>,
    mut requests: mpsc::Receiver<Request>,
    synced: watch::Sender<bool>,
) {
    reconciler.register_default_parents().await;
    loop {
        tokio::select! {
            ev = docker.recv() => {
                let Some(ev) = ev else { break };
                let full_sync = matches!(ev, DockerEvent::Sync { .. });
                reconciler.on_docker(ev).await;
                if full_sync {
                    synced.send_if_modified(|done| !std::mem::replace(done, true));
                }
            }
            Some(first) = domains.recv() => {
                reconciler.on_domains(take_burst(first, &mut domains)).await;
            }
            request = requests.recv() => match request {
                Some(Request::SetPolicyFile { file, reply }) => {
                    reconciler.set_policy_file(file).await;
                    let _ = reply.send(());
                }
                Some(Request::Policies { reply }) => {
                    let _ = reply.send(reconciler.policies());
                }
                Some(Request::Stop) | None => break,
            },
        }
    }
}

/// `first` and whatever else is queued already (a refresh comes in bursts), at most
/// [`MAX_DOMAIN_BATCH`].
fn take_burst(
    first: DomainUpdate,
    queued: &mut mpsc::UnboundedReceiver<DomainUpdate>,
) -> Vec<DomainUpdate> {
    let mut burst = vec![first];
    while burst.len() < MAX_DOMAIN_BATCH
        && let Ok(next) = queued.try_recv()
    {
        burst.push(next);
    }
    burst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(n: usize) -> DomainUpdate {
        DomainUpdate {
            domain: format!("d{n}.example"),
            ips: Default::default(),
        }
    }

    #[test]
    fn a_burst_is_what_is_queued_up_to_the_batch_limit() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for n in 1..=3 {
            tx.send(update(n)).unwrap();
        }
        let burst = take_burst(update(0), &mut rx);
        assert_eq!(burst, (0..=3).map(update).collect::<Vec<_>>());
        for n in 0..MAX_DOMAIN_BATCH + 5 {
            tx.send(update(n)).unwrap();
        }
        let first = rx.try_recv().unwrap();
        assert_eq!(take_burst(first, &mut rx).len(), MAX_DOMAIN_BATCH);
        assert_eq!(take_burst(rx.try_recv().unwrap(), &mut rx).len(), 5);
    }
}
