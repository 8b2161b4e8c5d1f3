//! egress-agent: the privileged agent of the egress enforcer.
//!
//! - [`config`] is the validated configuration of `run`, [`daemon`] runs it;
//! - [`enforcer`] loads the eBPF programs, pins and attaches them, and writes policies;
//! - [`owner`] runs the one task that owns the enforcer (nothing else touches the maps);
//! - [`reconcile`] keeps the kernel's policies in line with Docker's containers, their labels,
//!   the policy file and DNS; [`resolver`] resolves the allowed names; [`docker`] follows
//!   dockerd;
//! - [`dns`] is the DNS proxy that answers policed containers' DNS and learns their allowed
//!   addresses from the answers;
//! - [`observe`] is what the agent observes: decoded events, the denial log, the counters;
//!   [`status`] reads the pinned state;
//! - [`host`] knows where the host's files are (`--host-root`);
//! - [`cli`] and [`cmd`] are the command line; [`sys`] wraps kernel interfaces.
//!
//! The policy model (labels, policy file, domain names) is the crate `egress_policy`; the
//! kernel's types and their encodings are `egress_common`.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod docker;
pub mod enforcer;
pub mod host;
pub mod logging;
pub mod observe;
pub mod owner;
pub mod paths;
pub mod reconcile;
pub mod resolver;
pub mod status;
pub mod sys;
