//! The resolver as the reconciler sees it: a reference on each allowed domain a container uses,
//! and the domain's IPs as far as they are known. The real one is the resolver service's
//! [`ResolverHandle`]; unit tests use a table (`reconcile::fake`), so they need no DNS.

use std::{collections::BTreeSet, future::Future, net::IpAddr};

use crate::resolver::{AddOutcome, ResolverError, ResolverHandle};

/// What the reconciler asks of the resolver (see [`ResolverHandle`] for the contract: domains are
/// reference counted, and every change of a domain's IPs arrives as a
/// [`crate::resolver::DomainUpdate`] on the channel the reconciler task reads).
pub trait NameResolver: Send + Sync + 'static {
    /// Takes a reference on `domain` at once; the future tells how its first answer went.
    fn add(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<AddOutcome, ResolverError>> + Send + 'static;

    /// Drops one reference on `domain`.
    fn remove(&self, domain: &str);

    /// The IPs of a referenced domain now (empty until its first answer); None if it has no
    /// reference.
    fn snapshot(&self, domain: &str) -> Option<BTreeSet<IpAddr>>;
}

impl NameResolver for ResolverHandle {
    fn add(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<AddOutcome, ResolverError>> + Send + 'static {
        ResolverHandle::add(self, domain)
    }

    fn remove(&self, domain: &str) {
        ResolverHandle::remove(self, domain)
    }

    fn snapshot(&self, domain: &str) -> Option<BTreeSet<IpAddr>> {
        ResolverHandle::snapshot(self, domain)
    }
}
