//! egress-agent: the privileged agent of the egress enforcer.
//!
//! - [`enforcer`] loads the eBPF programs, pins and attaches them, and writes policies;
//! - [`owner`] runs the one task that owns the enforcer (nothing else touches the maps);
//! - [`policy`] is the user-side policy model and the address-entry grammar;
//! - [`events`] decodes what the programs report; [`status`] reads the pinned state;
//! - [`cli`] and [`cmd`] are the command line; [`sys`] wraps kernel interfaces.

pub mod cli;
pub mod cmd;
pub mod container;
pub mod denial_log;
pub mod docker;
pub mod enforcer;
pub mod events;
pub mod image_ref;
mod kernel_log;
pub mod labels;
pub mod logging;
pub mod owner;
pub mod paths;
pub mod policy;
pub mod policy_file;
pub mod reconcile;
pub mod resolver;
pub mod status;
pub mod sys;
