//! What the agent observes of the kernel, in one place:
//!
//! - [`events`] decodes the programs' ring-buffer records (denials, audit hits, the
//!   `cgroup_mkdir` tracepoint's notices);
//! - [`attribute`] tells which container an event belongs to, through indexes (no scan);
//! - [`denials`] bounds the denial log (once per container and destination per interval), and
//!   the logger task ([`Observer`]) writes its lines;
//! - [`kernel_log`] forwards the programs' own aya-log records;
//! - [`counters`] are the kernel's counters and the denial log's own.
//!
//! The owner task drains the ring buffer and hands denials and audit hits to subscribers; the
//! [`Observer`] is the one the daemon starts.

pub mod attribute;
pub mod counters;
pub mod denials;
pub mod events;
pub(crate) mod kernel_log;
mod logger;

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;

use self::{attribute::Attribution, counters::LogCounters};
use crate::{host::Host, owner::EnforcerHandle, reconcile::index::SharedIndex};

/// The denial logger, running.
pub struct Observer {
    task: JoinHandle<()>,
    counters: Arc<LogCounters>,
}

impl Observer {
    /// Starts logging the denials and audit hits of `handle`'s owner, naming containers from
    /// `index` (which the reconciler keeps) and the owner's policy ids; a denial is logged once
    /// per (container, destination) per `interval` (zero: every one). It runs until the owner
    /// stops, and does not keep the owner alive.
    pub fn spawn(
        handle: &EnforcerHandle,
        index: SharedIndex,
        host: Host,
        interval: Duration,
    ) -> Self {
        let counters = Arc::new(LogCounters::default());
        let attribution = Attribution::new(index.clone(), handle.downgrade(), host);
        let task = tokio::spawn(logger::run(
            handle.subscribe(),
            attribution,
            index,
            interval,
            counters.clone(),
        ));
        Self { task, counters }
    }

    /// What the denial log did so far.
    pub fn log_counters(&self) -> &LogCounters {
        &self.counters
    }

    /// Waits until the logger has written what it got (after the owner stopped).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}
