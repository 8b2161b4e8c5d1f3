//! DNS resolution of allowed domains.
//!
//! A container may be allowed to reach domains; the kernel only knows IPs. This module keeps,
//! for every domain in use, the set of IPs to allow:
//!
//! - each domain is resolved for A and AAAA, following CNAMEs (the IPs at the end of the chain
//!   belong to the name asked for) — [`DnsClient`];
//! - its two [`Family`]s are looked up, kept and retried independently, as a libc resolver
//!   does: REFUSED, SERVFAIL, a timeout or a network error of AAAA keeps A's answer (and the
//!   other way round); NXDOMAIN and "no records" are answers (empty); a family that never
//!   answered contributes nothing; the domain's set is the union of its families' — [`schedule`];
//! - each family is looked up again when its answer's TTL runs out, clamped to a floor and a
//!   ceiling; IPs that drop out of an answer stay for a grace period, so that answers cached by
//!   applications and open connections keep working; a failed lookup keeps that family's last
//!   good IPs and is retried sooner, with exponential backoff bounded by the ceiling;
//! - a domain used by many containers is resolved once — [`ResolverService`].
//!
//! # How a reconciler uses it
//!
//! ```no_run
//! # async fn demo() -> Result<(), egress_agent::resolver::ResolverError> {
//! use egress_agent::resolver::{DnsClient, ResolverService, ServiceConfig};
//!
//! // `None`: the host's /etc/resolv.conf; `Some(addr)`: only that server (`--dns-server`).
//! let client = DnsClient::new(None)?;
//! let (resolver, mut updates) = ResolverService::spawn(client, ServiceConfig::default())?;
//!
//! // A container that may reach `api.example.com` is about to start: take a reference on the
//! // domain and wait (bounded by `ServiceConfig::first_answer_timeout`) for its first answer,
//! // so that its policy is complete before it runs.
//! let added = resolver.add("api.example.com").await?;
//! // ... write `added.ips` into the container's allow map (keyed by `added.domain`).
//!
//! // Later, every change of a domain's set arrives here, as the full new set.
//! while let Some(update) = updates.recv().await {
//!     // ... for every container using `update.domain`, replace its IPs by `update.ips`.
//! }
//!
//! // When the container goes away (once per `add`):
//! resolver.remove("api.example.com");
//! # Ok(()) }
//! ```
//!
//! The contract:
//!
//! - Domains are keyed by [`normalize_domain`] (lower case, no trailing dot); `add` returns the
//!   key and every [`DomainUpdate`] uses it.
//! - `add`/`remove` are reference counted: five `add`s of one domain resolve it once, and it is
//!   dropped (no more lookups, no more updates) after the fifth `remove`. The reference is taken
//!   when `add` is called, before its future is polled, so dropping the future does not undo it.
//! - A [`DomainUpdate`] carries the domain's whole *effective* set (for each family: last answer
//!   ∪ IPs in grace) and is sent whenever that set changes, and once on the first answer of
//!   either family even if it is empty.
//! - `add` waits until each family has answered or failed once (or the first-answer timeout).
//!   Applying the latest update (or [`ResolverHandle::snapshot`]) is always correct; the set in
//!   an [`AddOutcome`] may be newer or older than updates still queued, which then converge.
//! - The update channel is unbounded so that the service never waits for the reconciler (which
//!   may itself be waiting on `add`); it holds at most one message per change.
//! - The service stops when every [`ResolverHandle`] is dropped.

mod dns;
mod family;
pub mod schedule;
mod service;

use hickory_resolver::net::NetError;

pub use dns::{Answer, DnsClient, DnsOptions, parse_dns_server};
pub use family::{Family, PerFamily};
pub use schedule::{Change, DomainState, FamilyState, RefreshConfig};
pub use service::{
    AddOutcome, DomainUpdate, FirstAnswer, ResolverHandle, ResolverService, ServiceConfig, Upstream,
};

/// Errors of the resolver.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolverError {
    #[error("`{domain}` is not a domain name: {reason}")]
    InvalidDomain { domain: String, reason: String },
    #[error("`{0}` is not a DNS server address (expected ADDR or ADDR:PORT, IPv6 as [ADDR]:PORT)")]
    InvalidServer(String),
    #[error("invalid resolver settings: {0}")]
    InvalidConfig(String),
    #[error("cannot read the system DNS configuration: {0}")]
    SystemConfig(#[source] NetError),
    #[error("resolving `{domain}` ({family}): {source}")]
    Lookup {
        domain: String,
        family: Family,
        #[source]
        source: NetError,
    },
    #[error(
        "resolving `{domain}` ({family}): the upstream server returned a referral, not an answer"
    )]
    Referral { domain: String, family: Family },
    #[error("resolving `{domain}` ({family}): no answer within {timeout:?}")]
    Timeout {
        domain: String,
        family: Family,
        timeout: std::time::Duration,
    },
    #[error("the resolver task has stopped")]
    Stopped,
}

/// The key of a domain ([`egress_policy::domain::key`]), its error naming the domain.
pub fn normalize_domain(domain: &str) -> Result<String, ResolverError> {
    egress_policy::domain::key(domain).map_err(|e| ResolverError::InvalidDomain {
        domain: domain.to_owned(),
        reason: e.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalized() {
        assert_eq!(normalize_domain("Example.COM.").unwrap(), "example.com");
        assert_eq!(
            normalize_domain(" api.example.com ").unwrap(),
            "api.example.com"
        );
        assert_eq!(normalize_domain("localhost").unwrap(), "localhost");
        assert_eq!(normalize_domain("_svc.test").unwrap(), "_svc.test");
        assert_eq!(
            normalize_domain("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn non_domains_are_rejected() {
        for bad in [
            "",
            ".",
            "  ",
            "10.0.0.1",
            "::1",
            "*.example.com",
            "a..b",
            ".example.com",
            &"a".repeat(64),
            &format!("{}.com", ["abcdefghij"; 30].join(".")),
        ] {
            assert!(
                matches!(
                    normalize_domain(bad),
                    Err(ResolverError::InvalidDomain { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }
}
