//! egress-agent: the privileged agent of the egress enforcer.
//!
//! - [`enforcer`] loads the eBPF programs, pins and attaches them, and writes policies;
//! - [`owner`] runs the one task that owns the enforcer (nothing else touches the maps);
//! - [`policy`], [`labels`], [`policy_file`], [`image_ref`] are `egress_policy`'s and
//!   [`container`] is `egress_common`'s (re-exported under their old paths);
//! - [`events`] decodes what the programs report; [`status`] reads the pinned state;
//! - [`cli`] and [`cmd`] are the command line; [`sys`] wraps kernel interfaces.

pub mod cli;
pub mod cmd;
pub mod denial_log;
pub mod docker;
pub mod enforcer;
pub mod events;
mod kernel_log;
pub mod logging;
pub mod owner;
pub mod paths;
pub mod reconcile;
pub mod resolver;
pub mod status;
pub mod sys;

pub use egress_common::container;
pub use egress_policy::{image_ref, labels, policy, policy_file};
