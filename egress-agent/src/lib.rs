//! egress-agent: the privileged agent of the egress enforcer.
//!
//! - [`enforcer`] loads the eBPF programs, pins and attaches them, and writes policies;
//! - [`owner`] runs the one task that owns the enforcer (nothing else touches the maps);
//! - [`policy`] is the user-side policy model and the address-entry grammar;
//! - [`observe`] is what the agent observes: decoded events, the denial log, the counters;
//!   [`status`] reads the pinned state;
//! - [`config`] is the validated configuration of `run`, [`daemon`] runs it;
//! - [`host`] knows where the host's files are (`--host-root`);
//! - [`cli`] and [`cmd`] are the command line; [`sys`] wraps kernel interfaces.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod container;
pub mod daemon;
pub mod docker;
pub mod enforcer;
pub mod host;
pub mod image_ref;
pub mod labels;
pub mod logging;
pub mod observe;
pub mod owner;
pub mod paths;
pub mod policy;
pub mod policy_file;
pub mod reconcile;
pub mod resolver;
pub mod status;
pub mod sys;

// The observer's modules at their old paths, for code not moved over yet.
pub(crate) use observe::kernel_log;
pub use observe::{denials as denial_log, events};
