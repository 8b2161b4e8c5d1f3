//! The DNS proxy: the only DNS a policed container has.
//!
//! The programs redirect every UDP and TCP packet a policed container sends to port 53, to any
//! address, to this proxy (`egress_common::dns`), which listens inside the container's own
//! network namespace on `127.255.53.1:<port>` (and `[::1]:<port>` where the namespace has
//! it). The answer appears to come from the address the application asked. The proxy answers
//! questions for names the policy does not allow itself, carries allowed ones on to the
//! container's resolvers, and writes the addresses of their answers into the container's allow
//! set before releasing them.
//!
//! - [`service`]: which containers are proxied, where their namespaces are, their listeners;
//! - [`proxied`]: one container, and the answer to one question;
//! - [`serve`]: the listener loops; [`upstream`]: the resolver side;
//! - [`peers`]: the server a redirected client asked;
//! - [`discover`], [`netns`], [`sockets`]: finding a container's namespace and making sockets
//!   in it;
//! - [`counters`]: what it counts.

pub mod counters;
pub mod discover;
pub mod netns;
pub mod peers;
pub mod proxied;
pub mod serve;
pub mod service;
pub mod sockets;
pub mod upstream;

use std::time::Duration;

pub use self::service::{DnsService, DnsTarget};
pub use egress_policy::dns::DnsMode;

/// Most TCP connections one container may hold open to the proxy.
pub const MAX_TCP_CONNS: usize = 32;

/// What the proxy answers for a name the policy does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DenyRcode {
    /// The name does not exist (resolvers go on with their search list).
    #[value(name = "nxdomain")]
    NxDomain,
    /// The server refuses (musl stops its search list on it).
    Refused,
}

/// The proxy's settings (`--dns-*`).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// What `egress.dns` is for a container without the label.
    pub default_mode: DnsMode,
    pub deny: DenyRcode,
    /// Longest an answer is held while its addresses are written.
    pub hold: Duration,
    /// Longest the container's resolvers get to answer (then SERVFAIL).
    pub upstream_timeout: Duration,
    /// How long a learned address outlives the TTL of the answer that carried it.
    pub grace: Duration,
    /// Most addresses learned per name (the oldest go first).
    pub max_ips_per_name: usize,
    /// Most names learned per container (the oldest go first).
    pub max_names: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            default_mode: DnsMode::Learn,
            deny: DenyRcode::NxDomain,
            hold: Duration::from_millis(100),
            upstream_timeout: Duration::from_secs(2),
            grace: Duration::from_secs(30),
            max_ips_per_name: 32,
            max_names: 1024,
        }
    }
}
