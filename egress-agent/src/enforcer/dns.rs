//! The DNS redirect of each owner (`EG_DNS_REDIR`): which proxy port its port-53 traffic goes
//! to. The enforcer remembers it per [`Owner`] and keeps the map entry under the owner's
//! current policy id: written before any cgroup entry points at a new id, deleted with the
//! policy. An owner whose redirect is not in the map has its DNS denied
//! (`dns_proxy_not_ready`).

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, MapError};
use egress_common::dns::DnsRedirect;
use tracing::warn;

use super::{EnforcerError, Owner, Result, error::is_not_found};

/// The redirects the enforcer keeps, by owner, and those found pinned whose owner is not
/// known yet (a `--policy` path's, until its policy is set again), by policy id.
#[derive(Default)]
pub struct Redirects {
    by_owner: BTreeMap<Owner, DnsRedirect>,
    unclaimed: BTreeMap<u32, DnsRedirect>,
}

impl Redirects {
    /// The owner's redirect, if it has one.
    pub fn get(&self, owner: &Owner) -> Option<DnsRedirect> {
        self.by_owner.get(owner).copied()
    }

    /// Every owner's redirect.
    pub fn all(&self) -> Vec<(Owner, DnsRedirect)> {
        self.by_owner.iter().map(|(o, r)| (*o, *r)).collect()
    }

    pub fn set(&mut self, owner: Owner, redirect: Option<DnsRedirect>) {
        match redirect {
            Some(r) => self.by_owner.insert(owner, r),
            None => self.by_owner.remove(&owner),
        };
    }

    /// Gives `owner` the pinned redirect of `policy_id` that nobody claimed yet.
    pub fn claim(&mut self, owner: Owner, policy_id: u32) {
        if let Some(r) = self.unclaimed.remove(&policy_id) {
            self.by_owner.entry(owner).or_insert(r);
        }
    }

    /// Rebuilds the table from the pinned map: `owner_of` names the owner of a policy id
    /// (`Err(true)`: a policy whose owner is not known by id yet, kept unclaimed; `Err(false)`:
    /// nobody's, its entry is deleted).
    pub fn recover(
        map: &mut HashMap<MapData, u32, DnsRedirect>,
        owner_of: impl Fn(u32) -> Result<Owner, bool>,
    ) -> Self {
        let mut out = Self::default();
        let found: Vec<(u32, DnsRedirect)> = map.iter().flatten().collect();
        for (id, r) in found {
            match owner_of(id) {
                Ok(owner) => {
                    out.by_owner.insert(owner, r);
                }
                Err(true) => {
                    out.unclaimed.insert(id, r);
                }
                Err(false) => {
                    if let Err(e) = remove(map, id) {
                        warn!(
                            policy_id = id,
                            "removing the DNS redirect of a policy nobody owns: {e}"
                        );
                    }
                }
            }
        }
        out
    }
}

/// Writes `redirect` under `policy_id`.
pub fn write(
    map: &mut HashMap<MapData, u32, DnsRedirect>,
    owner: Owner,
    policy_id: u32,
    redirect: DnsRedirect,
) -> Result<()> {
    map.insert(policy_id, redirect, 0)
        .map_err(|source| EnforcerError::DnsRedirect {
            owner: owner.to_string(),
            policy_id,
            source,
        })
}

/// Deletes the redirect of `policy_id`; one that is not there is fine.
pub fn remove(
    map: &mut HashMap<MapData, u32, DnsRedirect>,
    policy_id: u32,
) -> Result<(), MapError> {
    match map.remove(&policy_id) {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}
