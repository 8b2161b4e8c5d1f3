//! The DNS servers a container's questions go to (through the DNS proxy: a policed container
//! reaches no DNS server itself), as Docker configured them.

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

/// The resolvers the DNS proxy carries a container's allowed questions to, from inside its
/// network namespace: the container's `dns` (HostConfig.Dns) on `network_mode` and networks
/// `networks`, on a host whose resolv.conf lists `host`. These are the servers Docker gave the
/// container's resolv.conf:
/// - Docker's embedded resolver 127.0.0.11 alone on user-defined networks (it forwards to the
///   `--dns` servers or the host's, and knows the network's container and service names);
/// - else the `--dns` servers when given;
/// - else the host's servers (on the default bridge without loopback ones, which a bridged
///   container could not reach).
pub fn upstreams(
    dns: &[IpAddr],
    network_mode: &str,
    networks: &[String],
    host: &[IpAddr],
) -> Vec<IpAddr> {
    let user_defined = is_user_defined_network(network_mode)
        || networks.iter().any(|n| is_user_defined_network(n));
    if user_defined {
        return vec![EMBEDDED_DNS];
    }
    if !dns.is_empty() {
        return dedup(dns.to_vec());
    }
    let host_net = network_mode == "host";
    dedup(
        host.iter()
            .copied()
            .filter(|ip| host_net || !ip.is_loopback())
            .collect(),
    )
}

/// `ips` in their order, each once.
fn dedup(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(ips.len());
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
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
    fn a_user_defined_network_asks_the_embedded_server_only() {
        let r = upstreams(
            &[ip("10.9.0.1")],
            "mynet",
            &["mynet".into()],
            &[ip("10.0.0.2")],
        );
        assert_eq!(r, vec![EMBEDDED_DNS]);
    }

    #[test]
    fn the_default_bridge_asks_dns_servers_in_order_or_the_non_loopback_host_servers() {
        let r = upstreams(
            &[ip("10.9.0.2"), ip("10.9.0.1")],
            "default",
            &["bridge".into()],
            &[],
        );
        assert_eq!(r, vec![ip("10.9.0.2"), ip("10.9.0.1")]);
        let r = upstreams(
            &[],
            "default",
            &["bridge".into()],
            &[ip("127.0.0.53"), ip("10.0.0.2")],
        );
        assert_eq!(r, vec![ip("10.0.0.2")]);
    }

    #[test]
    fn host_network_keeps_loopback_servers() {
        let r = upstreams(&[], "host", &[], &[ip("127.0.0.53")]);
        assert_eq!(r, vec![ip("127.0.0.53")]);
    }

    #[test]
    fn network_modes() {
        assert!(is_user_defined_network("egress-test"));
        assert!(!is_user_defined_network("bridge"));
        assert!(!is_user_defined_network("container:abc"));
    }
}
