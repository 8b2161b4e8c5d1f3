//! The bench's DNS names, served by the harness's test DNS server ([`TestDns`], on loopback),
//! so that the agent never asks the host's resolver and no real name is ever looked up.
//!
//! Names (all under `bench.test`):
//! - `c<N>.bench.test` → `127.78.<N / 256>.<N % 256>`, TTL 300 (container policies); its AAAA
//!   query gets a no-data answer whose negative TTL (the zone's) is 300 too, so neither family
//!   is asked again within a run;
//! - `l<N>.learn.bench.test` → `127.81.<N / 256>.<N % 256>`, TTL 3600: the names the DNS part's
//!   containers look up (through the agent's proxy, which learns their addresses); an hour, so
//!   that what the first containers learned is still held when the phase checks it (starting
//!   1,000 containers takes 6–10 minutes on a busy host);
//! - `r<N>.refresh.bench.test` → `127.<79 + version>.<N / 256>.<N % 256>` and `::1`, TTL 5:
//!   both families are asked again every 5 s, and the refresh test bumps the version to change
//!   every A answer at once. (The AAAA record stands in for a no-data answer with a 5 s negative
//!   TTL, which the server cannot give one zone's names apart from the others'.)
//!
//! The addresses are loopback ones that nothing ever connects to: they only fill allow maps.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};
use egress_tests::dns::TestDns;
use hickory_proto::rr::RecordType;

pub const ZONE: &str = "bench.test";
const TTL_STATIC: u32 = 300;
const TTL_LEARN: u32 = 3600;
pub const TTL_REFRESH: u32 = 5;

/// `c<n>.bench.test`.
pub fn container_domain(n: usize) -> String {
    format!("c{n}.{ZONE}")
}

/// What `c<n>.bench.test` resolves to.
pub fn container_addr(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 78, (n >> 8) as u8, n as u8)
}

/// `l<n>.learn.bench.test`.
pub fn learn_domain(n: usize) -> String {
    format!("l{n}.learn.{ZONE}")
}

/// What `l<n>.learn.bench.test` resolves to.
pub fn learn_addr(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 81, (n >> 8) as u8, n as u8)
}

/// `r<n>.refresh.bench.test`.
pub fn refresh_domain(n: usize) -> String {
    format!("r{n}.refresh.{ZONE}")
}

/// What `r<n>.refresh.bench.test` resolves to (A) at `version`.
pub fn refresh_addr(n: usize, version: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 79 + version, (n >> 8) as u8, n as u8)
}

/// The bench's DNS server; stops on drop.
pub struct Zone {
    dns: TestDns,
    refresh_names: usize,
}

impl Zone {
    /// Starts the server on `ip` (UDP and TCP, a port the kernel picks) with the `refresh`
    /// names at version 0.
    pub fn start(ip: IpAddr, refresh: usize) -> Result<Self> {
        let dns = TestDns::try_start(ip).with_context(|| format!("DNS server on {ip}"))?;
        Ok(Self::serve(dns, refresh))
    }

    /// Starts the server on `addr` (e.g. port 53 of a loopback address of the bench's, which a
    /// container's DNS goes to), without refresh names.
    pub fn start_on(addr: SocketAddr) -> Result<Self> {
        let dns = TestDns::start_on(addr).with_context(|| format!("DNS server on {addr}"))?;
        Ok(Self::serve(dns, 0))
    }

    fn serve(dns: TestDns, refresh: usize) -> Self {
        dns.set_negative_ttl(TTL_STATIC);
        let zone = Self {
            dns,
            refresh_names: refresh,
        };
        zone.set_version(0);
        zone
    }

    pub fn addr(&self) -> SocketAddr {
        self.dns.addr()
    }

    /// `c<n>.bench.test`, answered from now on.
    pub fn container_domain(&self, n: usize) -> String {
        let name = container_domain(n);
        self.dns
            .set_a(&name, &[IpAddr::V4(container_addr(n))], TTL_STATIC);
        name
    }

    /// `l<n>.learn.bench.test`, answered from now on.
    pub fn learn_domain(&self, n: usize) -> String {
        let name = learn_domain(n);
        self.dns
            .set_a(&name, &[IpAddr::V4(learn_addr(n))], TTL_LEARN);
        name
    }

    /// Changes every `r<N>.refresh.bench.test` answer.
    pub fn set_version(&self, version: u8) {
        for n in 0..self.refresh_names {
            let ips = [
                IpAddr::V4(refresh_addr(n, version)),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
            self.dns.set_a(&refresh_domain(n), &ips, TTL_REFRESH);
        }
    }

    /// Queries (A and AAAA, the ones the agent asks) for the refresh names so far.
    pub fn refresh_queries(&self) -> usize {
        (0..self.refresh_names)
            .map(|n| {
                let name = refresh_domain(n);
                self.dns.queries_of_type(&name, RecordType::A)
                    + self.dns.queries_of_type(&name, RecordType::AAAA)
            })
            .sum()
    }

    /// Queries for any name so far (cheap enough to poll).
    pub fn total_queries(&self) -> usize {
        self.dns.total_queries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_loopback_addresses() {
        assert_eq!(container_domain(258), "c258.bench.test");
        assert_eq!(container_addr(258), Ipv4Addr::new(127, 78, 1, 2));
        assert_eq!(refresh_domain(7), "r7.refresh.bench.test");
        assert_eq!(refresh_addr(7, 1), Ipv4Addr::new(127, 80, 0, 7));
        assert!(refresh_addr(999, 3).is_loopback());
        assert_eq!(learn_domain(3), "l3.learn.bench.test");
        assert_eq!(learn_addr(20_001), Ipv4Addr::new(127, 81, 78, 33));
    }
}
