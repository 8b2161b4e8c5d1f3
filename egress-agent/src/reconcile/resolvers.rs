//! The DNS servers a container sends its queries to. A policed container may always reach
//! them on port 53 — without that it could not resolve the names it is allowed to reach.
//!
//! - `--dns` servers (HostConfig.Dns) when given;
//! - Docker's embedded resolver 127.0.0.11 on user-defined networks (it forwards to the
//!   `--dns` servers or the host's, from dockerd, which is not policed);
//! - before Docker lets the agent inspect a new container (it holds the container's lock
//!   until it has started), both the embedded server and the host's servers;
//! - otherwise the host's /etc/resolv.conf servers (Docker copies them; on the default bridge
//!   it drops loopback ones, which a bridged container could not reach anyway).

use std::net::{IpAddr, Ipv4Addr};

/// Docker's embedded DNS server on user-defined networks.
pub const EMBEDDED_DNS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));

/// True for a network mode that is a user-defined network (embedded DNS).
pub fn is_user_defined_network(mode: &str) -> bool {
    !matches!(mode, "" | "default" | "bridge" | "host" | "none") && !mode.starts_with("container:")
}

/// Nameservers of a resolv.conf text.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.split('%').next()?.parse().ok())
        })
        .collect()
}

/// The resolvers of a container with `dns` (HostConfig.Dns), on `network_mode` and networks
/// `networks`, on a host whose resolv.conf lists `host`.
pub fn container_resolvers(
    dns: &[IpAddr],
    network_mode: &str,
    networks: &[String],
    host: &[IpAddr],
) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = dns.to_vec();
    // An empty mode means "not inspected yet" (Docker holds a new container's lock until it
    // has started): assume the embedded server may be used rather than deny the first query.
    let user_defined = network_mode.is_empty()
        || is_user_defined_network(network_mode)
        || networks.iter().any(|n| is_user_defined_network(n));
    if user_defined {
        out.push(EMBEDDED_DNS);
    }
    if dns.is_empty() {
        let host_net = network_mode == "host";
        out.extend(host.iter().filter(|ip| host_net || !ip.is_loopback()));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_resolv_conf() {
        let t = "# x\nnameserver 10.0.0.2\nsearch a\nnameserver fe80::1%eth0\nnameserver bad\n";
        assert_eq!(parse_resolv_conf(t), vec![ip("10.0.0.2"), ip("fe80::1")]);
    }

    #[test]
    fn explicit_dns_on_a_user_network_adds_the_embedded_server() {
        let r = container_resolvers(
            &[ip("10.9.0.1")],
            "mynet",
            &["mynet".into()],
            &[ip("10.0.0.2")],
        );
        assert_eq!(r, vec![ip("10.9.0.1"), EMBEDDED_DNS]);
    }

    #[test]
    fn default_bridge_uses_non_loopback_host_servers() {
        let r = container_resolvers(
            &[],
            "default",
            &["bridge".into()],
            &[ip("127.0.0.53"), ip("10.0.0.2")],
        );
        assert_eq!(r, vec![ip("10.0.0.2")]);
    }

    #[test]
    fn host_network_keeps_loopback_servers() {
        let r = container_resolvers(&[], "host", &[], &[ip("127.0.0.53")]);
        assert_eq!(r, vec![ip("127.0.0.53")]);
    }

    #[test]
    fn a_container_not_inspected_yet_may_use_the_embedded_server_and_the_hosts() {
        let r = container_resolvers(&[], "", &[], &[ip("10.0.0.2")]);
        assert_eq!(r, vec![ip("10.0.0.2"), EMBEDDED_DNS]);
    }

    #[test]
    fn network_modes() {
        assert!(is_user_defined_network("egress-test"));
        assert!(!is_user_defined_network("bridge"));
        assert!(!is_user_defined_network("container:abc"));
    }
}
