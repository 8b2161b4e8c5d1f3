//! The one task that owns the [`Enforcer`]: it applies commands sent through an
//! [`EnforcerHandle`] and drains the event ring buffer, so nothing else ever touches the maps.
//! Commands come through two queues: small incremental writes
//! ([`EnforcerHandle::add_container_rules`], [`EnforcerHandle::set_dns_redirect`]) go ahead of everything else (bulk syncs, queries),
//! so that an answer the DNS proxy lets through never waits behind a resync.
//! Denials and audit hits go to subscribers; the `cgroup_mkdir` tracepoint's notices go to the
//! enforcer itself ([`Enforcer::on_notice`]). While something waits for a retry (see
//! [`Enforcer::retry_pending`]) it retries every [`RETRY_INTERVAL`].

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{error, warn};

use std::{collections::BTreeSet, path::PathBuf};

use crate::{
    enforcer::{Applied, Enforcer, EnforcerError, Owner, Stats},
    observe::events::{EgressEvent, Record},
    sys::{cgroup::CgroupId, kernel_path::KernelPath},
};
use egress_common::{container::ContainerId, dns::DnsRedirect};
use egress_policy::policy::{Policy, Rule};

/// How many decoded events may wait for slow subscribers before the oldest are dropped (and
/// counted).
const EVENT_BACKLOG: usize = 2048;
/// Commands that may wait in the bulk queue (senders wait beyond that).
const BULK_BACKLOG: usize = 256;
/// Incremental writes that may wait in their queue, ahead of the bulk one.
const URGENT_BACKLOG: usize = 64;
/// How often failed deletes and registrations are retried, and processes that joined a
/// failed cgroup killed, while there are any.
pub const RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

enum Command {
    Set {
        cgroup: CgroupId,
        policy: Policy,
        reply: oneshot::Sender<Result<(), EnforcerError>>,
    },
    Remove {
        cgroup: CgroupId,
        reply: oneshot::Sender<Result<bool, EnforcerError>>,
    },
    Policies {
        reply: oneshot::Sender<Vec<(CgroupId, Applied)>>,
    },
    SetPathPolicy {
        path: KernelPath,
        dir: PathBuf,
        policy: Policy,
        reply: oneshot::Sender<Result<usize, EnforcerError>>,
    },
    ContainerParent {
        path: KernelPath,
        bits: u32,
        add: bool,
        reply: oneshot::Sender<Result<bool, EnforcerError>>,
    },
    ClearContainerParents {
        reply: oneshot::Sender<Result<usize, EnforcerError>>,
    },
    SetContainer {
        container: ContainerId,
        policy: Option<Policy>,
        cgroups: Vec<CgroupId>,
        reply: oneshot::Sender<Result<(), EnforcerError>>,
    },
    RemoveContainer {
        container: ContainerId,
        cgroups: Vec<CgroupId>,
        reply: oneshot::Sender<Result<bool, EnforcerError>>,
    },
    Containers {
        reply: oneshot::Sender<Vec<(ContainerId, Option<Applied>)>>,
    },
    ReleasePrevious {
        reply: oneshot::Sender<Result<usize, EnforcerError>>,
    },
    ForgetContainers {
        reply: oneshot::Sender<Result<(usize, usize), EnforcerError>>,
    },
    SetUnclassifiedDeny {
        deny: bool,
        reply: oneshot::Sender<Result<(), EnforcerError>>,
    },
    Stats {
        reply: oneshot::Sender<Result<Stats, EnforcerError>>,
    },
    /// Sent through the urgent queue only.
    AddContainerRules {
        container: ContainerId,
        rules: Vec<Rule>,
        reply: oneshot::Sender<Result<bool, EnforcerError>>,
    },
    /// Sent through the urgent queue only.
    SetLearnedRules {
        owner: Owner,
        rules: BTreeSet<Rule>,
        reply: oneshot::Sender<Result<bool, EnforcerError>>,
    },
    /// Sent through the urgent queue only.
    SetDnsRedirect {
        owner: Owner,
        redirect: Option<DnsRedirect>,
        reply: oneshot::Sender<Result<(), EnforcerError>>,
    },
    DnsRedirects {
        reply: oneshot::Sender<Vec<(Owner, DnsRedirect)>>,
    },
    /// The observer attributes an event to a container by its policy id.
    ContainerOfPolicy {
        policy_id: u32,
        reply: oneshot::Sender<Option<ContainerId>>,
    },
}

/// The owner's two queues: incremental writes (`urgent`) and everything else (`bulk`).
struct Queues<T> {
    urgent: mpsc::Receiver<T>,
    bulk: mpsc::Receiver<T>,
}

impl<T> Queues<T> {
    /// The next command: an urgent one whenever one waits, else the oldest bulk one; None once
    /// every sender is gone.
    async fn next(&mut self) -> Option<T> {
        tokio::select! {
            biased;
            Some(cmd) = self.urgent.recv() => Some(cmd),
            cmd = self.bulk.recv() => cmd,
        }
    }
}

/// The owner task stopped (it only stops when every handle is dropped or it panicked).
#[derive(Debug, thiserror::Error)]
#[error("the enforcer task has stopped")]
pub struct OwnerGone;

/// Errors of a command sent to the owner.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Gone(#[from] OwnerGone),
    #[error(transparent)]
    Enforcer(#[from] EnforcerError),
}

/// A handle that does not keep the owner task alive (for readers that live as long as the
/// event stream, such as the denial logger).
#[derive(Clone)]
pub struct WeakEnforcerHandle {
    tx: mpsc::WeakSender<Command>,
}

impl WeakEnforcerHandle {
    /// The container that owns `policy_id` (see [`Enforcer::container_of_policy`]); `OwnerGone`
    /// once the owner has stopped.
    pub async fn container_of_policy(
        &self,
        policy_id: u32,
    ) -> Result<Option<ContainerId>, OwnerGone> {
        let tx = self.tx.upgrade().ok_or(OwnerGone)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command::ContainerOfPolicy { policy_id, reply })
            .await
            .map_err(|_| OwnerGone)?;
        drop(tx);
        rx.await.map_err(|_| OwnerGone)
    }
}

/// A cheap, clonable handle on the owner task.
#[derive(Clone)]
pub struct EnforcerHandle {
    tx: mpsc::Sender<Command>,
    urgent: mpsc::Sender<Command>,
    events: broadcast::Sender<EgressEvent>,
}

impl EnforcerHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, OwnerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| OwnerGone)?;
        rx.await.map_err(|_| OwnerGone)
    }

    /// Like `ask`, through the urgent queue.
    async fn ask_urgent<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, OwnerGone> {
        let (reply, rx) = oneshot::channel();
        self.urgent.send(make(reply)).await.map_err(|_| OwnerGone)?;
        rx.await.map_err(|_| OwnerGone)
    }

    /// Sets or replaces the policy of a cgroup.
    pub async fn set_policy(&self, cgroup: CgroupId, policy: Policy) -> Result<(), CommandError> {
        Ok(self
            .ask(|reply| Command::Set {
                cgroup,
                policy,
                reply,
            })
            .await??)
    }

    /// Removes the policy of a cgroup; false if it had none.
    pub async fn remove_policy(&self, cgroup: CgroupId) -> Result<bool, CommandError> {
        Ok(self
            .ask(|reply| Command::Remove { cgroup, reply })
            .await??)
    }

    /// The policies in force.
    pub async fn policies(&self) -> Result<Vec<(CgroupId, Applied)>, OwnerGone> {
        self.ask(|reply| Command::Policies { reply }).await
    }

    /// Polices a cgroup path and everything below it (see [`Enforcer::set_path_policy`]);
    /// returns how many existing cgroups got the policy.
    pub async fn set_path_policy(
        &self,
        path: KernelPath,
        dir: PathBuf,
        policy: Policy,
    ) -> Result<usize, CommandError> {
        Ok(self
            .ask(|reply| Command::SetPathPolicy {
                path,
                dir,
                policy,
                reply,
            })
            .await??)
    }

    /// Adds `bits` to (`add`) or takes them off a cgroup parent of this dockerd (see
    /// [`Enforcer::add_container_parent`], [`Enforcer::remove_container_parent`]); true if
    /// anything changed.
    pub async fn change_container_parent(
        &self,
        path: KernelPath,
        bits: u32,
        add: bool,
    ) -> Result<bool, CommandError> {
        Ok(self
            .ask(|reply| Command::ContainerParent {
                path,
                bits,
                add,
                reply,
            })
            .await??)
    }

    /// Forgets every cgroup parent (see [`Enforcer::clear_container_parents`]).
    pub async fn clear_container_parents(&self) -> Result<usize, CommandError> {
        Ok(self
            .ask(|reply| Command::ClearContainerParents { reply })
            .await??)
    }

    /// Registers a container (see [`Enforcer::set_container`]).
    pub async fn set_container(
        &self,
        container: ContainerId,
        policy: Option<Policy>,
        cgroups: Vec<CgroupId>,
    ) -> Result<(), CommandError> {
        Ok(self
            .ask(|reply| Command::SetContainer {
                container,
                policy,
                cgroups,
                reply,
            })
            .await??)
    }

    /// Forgets a container (see [`Enforcer::remove_container`]); false if it was not known.
    pub async fn remove_container(
        &self,
        container: ContainerId,
        cgroups: Vec<CgroupId>,
    ) -> Result<bool, CommandError> {
        Ok(self
            .ask(|reply| Command::RemoveContainer {
                container,
                cgroups,
                reply,
            })
            .await??)
    }

    /// Known containers and their policies.
    pub async fn containers(&self) -> Result<Vec<(ContainerId, Option<Applied>)>, OwnerGone> {
        self.ask(|reply| Command::Containers { reply }).await
    }

    /// Adds `rules` to a policed container's policy now, ahead of every command queued in the
    /// bulk queue (see [`Enforcer::add_container_rules`]); false if the container is not
    /// policed or is failed closed.
    pub async fn add_container_rules(
        &self,
        container: ContainerId,
        rules: Vec<Rule>,
    ) -> Result<bool, CommandError> {
        Ok(self
            .ask_urgent(|reply| Command::AddContainerRules {
                container,
                rules,
                reply,
            })
            .await??)
    }

    /// Replaces what the DNS proxy learned for `owner` (a policed container) with `rules`, now,
    /// ahead of every command queued in the bulk queue (see [`Enforcer::set_learned_rules`]);
    /// false if the owner is no policed container.
    pub async fn set_learned_rules(
        &self,
        owner: Owner,
        rules: BTreeSet<Rule>,
    ) -> Result<bool, CommandError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::SetLearnedRules {
            owner,
            rules,
            reply,
        };
        self.urgent.send(cmd).await.map_err(|_| OwnerGone)?;
        Ok(rx.await.map_err(|_| OwnerGone)??)
    }

    /// Sets or removes the DNS redirect of `owner` now, ahead of every command queued in the
    /// bulk queue (see [`Enforcer::set_dns_redirect`]).
    pub async fn set_dns_redirect(
        &self,
        owner: Owner,
        redirect: Option<DnsRedirect>,
    ) -> Result<(), CommandError> {
        Ok(self
            .ask_urgent(|reply| Command::SetDnsRedirect {
                owner,
                redirect,
                reply,
            })
            .await??)
    }

    /// Every owner's DNS redirect, also those a restarted agent found pinned (see
    /// [`Enforcer::dns_redirects`]).
    pub async fn dns_redirects(&self) -> Result<Vec<(Owner, DnsRedirect)>, OwnerGone> {
        self.ask(|reply| Command::DnsRedirects { reply }).await
    }

    /// What cgroups of containers unknown to the agent get (see
    /// [`Enforcer::set_unclassified_deny`]).
    pub async fn set_unclassified_deny(&self, deny: bool) -> Result<(), CommandError> {
        Ok(self
            .ask(|reply| Command::SetUnclassifiedDeny { deny, reply })
            .await??)
    }

    /// See [`Enforcer::forget_containers`].
    pub async fn forget_containers(&self) -> Result<(usize, usize), CommandError> {
        Ok(self
            .ask(|reply| Command::ForgetContainers { reply })
            .await??)
    }

    /// See [`Enforcer::release_previous`].
    pub async fn release_previous(&self) -> Result<usize, CommandError> {
        Ok(self
            .ask(|reply| Command::ReleasePrevious { reply })
            .await??)
    }

    /// The kernel counters.
    pub async fn stats(&self) -> Result<Stats, CommandError> {
        Ok(self.ask(|reply| Command::Stats { reply }).await??)
    }

    /// A handle that does not keep the owner alive.
    pub fn downgrade(&self) -> WeakEnforcerHandle {
        WeakEnforcerHandle {
            tx: self.tx.downgrade(),
        }
    }

    /// Subscribes to decoded events (denials and audit hits).
    pub fn subscribe(&self) -> broadcast::Receiver<EgressEvent> {
        self.events.subscribe()
    }
}

/// Starts the owner task. It runs until every handle is dropped.
pub fn spawn(mut enforcer: Enforcer) -> (EnforcerHandle, JoinHandle<()>) {
    let (tx, bulk) = mpsc::channel::<Command>(BULK_BACKLOG);
    let (urgent_tx, urgent) = mpsc::channel::<Command>(URGENT_BACKLOG);
    let mut queues = Queues { urgent, bulk };
    let (events_tx, _) = broadcast::channel(EVENT_BACKLOG);
    // SAFETY: the RingBuf owns its descriptor for as long as the AsyncFd lives.
    let ring = enforcer
        .take_events()
        .and_then(|r| match unsafe { AsyncFd::register(r) } {
            Ok(fd) => Some(fd),
            Err(e) => {
                error!("cannot poll the event ring buffer, events will not be reported: {e}");
                None
            }
        });
    let handle = EnforcerHandle {
        tx,
        urgent: urgent_tx,
        events: events_tx.clone(),
    };
    let task = tokio::spawn(async move {
        let mut ring = ring;
        let mut retry = tokio::time::interval(RETRY_INTERVAL);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = queues.next() => match cmd {
                    Some(cmd) => {
                        // Notices first: a command may depend on what they tell.
                        if let Some(ring) = ring.as_mut() {
                            drain(ring, &events_tx, &mut enforcer);
                        }
                        apply(&mut enforcer, cmd)
                    }
                    None => break,
                },
                Some(()) = readable(&mut ring) => {
                    if let Some(ring) = ring.as_mut() {
                        drain(ring, &events_tx, &mut enforcer);
                    }
                }
                _ = retry.tick(), if enforcer.has_pending() => enforcer.retry_pending(),
            }
        }
        // Last words: whatever is still in the ring buffer.
        if let Some(ring) = ring.as_mut() {
            drain(ring, &events_tx, &mut enforcer);
        }
    });
    (handle, task)
}

fn apply(enforcer: &mut Enforcer, cmd: Command) {
    match cmd {
        Command::Set {
            cgroup,
            policy,
            reply,
        } => {
            let _ = reply.send(enforcer.set_policy(cgroup, &policy));
        }
        Command::Remove { cgroup, reply } => {
            let _ = reply.send(enforcer.remove_policy(cgroup));
        }
        Command::Policies { reply } => {
            let _ = reply.send(
                enforcer
                    .policies()
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect(),
            );
        }
        Command::SetPathPolicy {
            path,
            dir,
            policy,
            reply,
        } => {
            let _ = reply.send(enforcer.set_path_policy(&path, &dir, &policy));
        }
        Command::ContainerParent {
            path,
            bits,
            add,
            reply,
        } => {
            let _ = reply.send(if add {
                enforcer.add_container_parent(&path, bits)
            } else {
                enforcer.remove_container_parent(&path, bits)
            });
        }
        Command::ClearContainerParents { reply } => {
            let _ = reply.send(enforcer.clear_container_parents());
        }
        Command::SetContainer {
            container,
            policy,
            cgroups,
            reply,
        } => {
            let _ = reply.send(enforcer.set_container(&container, policy.as_ref(), &cgroups));
        }
        Command::RemoveContainer {
            container,
            cgroups,
            reply,
        } => {
            let _ = reply.send(enforcer.remove_container(&container, &cgroups));
        }
        Command::Containers { reply } => {
            let _ = reply.send(enforcer.containers().into_iter().collect());
        }
        Command::ReleasePrevious { reply } => {
            let _ = reply.send(enforcer.release_previous());
        }
        Command::ForgetContainers { reply } => {
            let _ = reply.send(enforcer.forget_containers());
        }
        Command::SetUnclassifiedDeny { deny, reply } => {
            let _ = reply.send(enforcer.set_unclassified_deny(deny));
        }
        Command::Stats { reply } => {
            let _ = reply.send(enforcer.stats());
        }
        Command::AddContainerRules {
            container,
            rules,
            reply,
        } => {
            let _ = reply.send(enforcer.add_container_rules(&container, &rules));
        }
        Command::SetLearnedRules {
            owner,
            rules,
            reply,
        } => {
            let _ = reply.send(enforcer.set_learned_rules(owner, rules));
        }
        Command::SetDnsRedirect {
            owner,
            redirect,
            reply,
        } => {
            let _ = reply.send(enforcer.set_dns_redirect(owner, redirect));
        }
        Command::DnsRedirects { reply } => {
            let _ = reply.send(enforcer.dns_redirects());
        }
        Command::ContainerOfPolicy { policy_id, reply } => {
            let _ = reply.send(enforcer.container_of_policy(policy_id));
        }
    }
}

/// Waits until the ring buffer has data; pending forever if there is none.
async fn readable(ring: &mut Option<AsyncFd<RingBuf<MapData>>>) -> Option<()> {
    match ring.as_mut() {
        Some(fd) => match fd.readable_mut().await {
            Ok(mut guard) => {
                guard.clear_ready();
                Some(())
            }
            Err(e) => {
                warn!("event ring buffer poll failed: {e}");
                None
            }
        },
        None => std::future::pending().await,
    }
}

fn drain(
    ring: &mut AsyncFd<RingBuf<MapData>>,
    tx: &broadcast::Sender<EgressEvent>,
    enforcer: &mut Enforcer,
) {
    let rb = ring.get_mut();
    let mut notices = Vec::new();
    while let Some(item) = rb.next() {
        match Record::decode(&item) {
            // No subscriber is not an error: the counters still have it.
            Some(Record::Egress(ev)) => {
                let _ = tx.send(ev);
            }
            Some(Record::Notice(n)) => notices.push(n),
            None => warn!(len = item.len(), "undecodable event record"),
        }
    }
    for n in &notices {
        enforcer.on_notice(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(bulk: usize) -> (mpsc::Sender<u32>, mpsc::Sender<u32>, Queues<u32>) {
        let (urgent_tx, urgent) = mpsc::channel(URGENT_BACKLOG);
        let (bulk_tx, bulk) = mpsc::channel(bulk);
        (urgent_tx, bulk_tx, Queues { urgent, bulk })
    }

    #[tokio::test]
    async fn an_incremental_write_goes_ahead_of_a_full_bulk_queue() {
        let (urgent, bulk, mut q) = queues(4);
        for n in 0..4 {
            bulk.try_send(n).unwrap();
        }
        assert!(bulk.try_send(99).is_err(), "the bulk queue is full");
        urgent.try_send(100).unwrap();
        assert_eq!(q.next().await, Some(100), "the urgent one first");
        assert_eq!(q.next().await, Some(0));
        // One that arrives while bulk ones wait still goes next.
        urgent.try_send(101).unwrap();
        urgent.try_send(102).unwrap();
        assert_eq!(q.next().await, Some(101));
        assert_eq!(q.next().await, Some(102));
        assert_eq!(q.next().await, Some(1), "bulk ones keep their order");
    }

    #[tokio::test]
    async fn bulk_commands_run_while_no_incremental_write_waits_and_the_queues_end_together() {
        let (urgent, bulk, mut q) = queues(4);
        bulk.try_send(1).unwrap();
        assert_eq!(q.next().await, Some(1));
        urgent.try_send(2).unwrap();
        drop((urgent, bulk));
        assert_eq!(q.next().await, Some(2), "queued ones are still applied");
        assert_eq!(q.next().await, None);
    }
}
