//! Each kernel test's own IPv4 addresses: test `X` uses `127.<X>.0.0/16` only (all of
//! 127.0.0.0/8 is local on Linux), so no two tests ever share an address or a listener. Add a
//! constant here for a new test; the unit test below keeps them distinct.

pub const TCP_V4: u8 = 100;
pub const TCP_V6: u8 = 101;
pub const V4_MAPPED: u8 = 102;
pub const UDP_V4: u8 = 103;
pub const UDP_V6: u8 = 104;
pub const CIDR_V4: u8 = 105;
pub const PORT_RULE: u8 = 106;
pub const CIDR_V6: u8 = 107;
pub const CIDR_V6_NETNS: u8 = 108;
pub const UNPOLICED: u8 = 109;
pub const REMOVE_POLICY: u8 = 110;
pub const TWO_CGROUPS: u8 = 111;
pub const REPLACE_POLICY: u8 = 112;
pub const AUDIT: u8 = 113;
pub const DENIAL_EVENTS: u8 = 114;
pub const MOVE_INTO_POLICED: u8 = 115;
pub const MOVE_OUT_OF_POLICED: u8 = 116;
pub const CREATED_OUTSIDE_ATTACH: u8 = 117;
pub const AGENT_RESTART: u8 = 118;
pub const AGENT_CLEANUP: u8 = 119;
pub const AGENT_INCOMPATIBLE: u8 = 120;
pub const LAYOUT_REUSE: u8 = 121;
pub const LAYOUT_META: u8 = 122;
pub const LAYOUT_POLICY_MAP: u8 = 123;
pub const LAYOUT_VERSION: u8 = 124;
pub const PORT_RULE_REPLACE: u8 = 125;
pub const DENIAL_LOG_BOUND: u8 = 152;
pub const LOOPBACK_OWN_NETNS: u8 = 153;
pub const UDP_SERVER_REPLY: u8 = 154;
pub const TCP_SERVER_REPLY: u8 = 155;
/// The resolver tests of one family failing (`tests/resolver_dns.rs`): their test DNS servers
/// and the addresses those answer.
pub const FAMILY_DNS: u8 = 126;
/// The resolver test against a real dnsmasq: its listen address and the addresses it answers.
pub const FAMILY_DNSMASQ: u8 = 127;
pub const MAPS_FLAGS_V4: u8 = 132;
pub const MAPS_FLAGS_V6: u8 = 133;
pub const MAPS_CGROUP_FULL: u8 = 134;
pub const MAPS_RULES_FULL: u8 = 135;
pub const MAPS_CONTAINERS_FULL: u8 = 136;
pub const MAPS_UNPOLICED_ROOM: u8 = 137;
pub const MAPS_LEFTOVERS: u8 = 138;
pub const MAPS_AGENT_CGROUP_FULL: u8 = 139;
pub const MAPS_KILL: u8 = 140;
pub const MAPS_LEFTOVERS_RESTART: u8 = 141;
pub const PATH_POLICY_REMADE: u8 = 142;
pub const PATH_POLICY_NESTED: u8 = 143;
pub const PATH_VERIFIER: u8 = 144;
/// `tests/kernel_dns_redirect.rs`: the addresses its cgroups ask on port 53.
pub const DNS_REDIRECT: u8 = 146;
/// `tests/kernel_backstop.rs`.
pub const BACKSTOP: u8 = 147;
pub const BACKSTOP_LATER: u8 = 148;
pub const BACKSTOP_ROUTE: u8 = 149;
pub const BACKSTOP_AUDIT: u8 = 150;
pub const BACKSTOP_PACKET: u8 = 151;

#[cfg(test)]
mod tests {
    #[test]
    fn slots_are_distinct() {
        let all = [
            super::TCP_V4,
            super::BACKSTOP,
            super::BACKSTOP_LATER,
            super::BACKSTOP_ROUTE,
            super::BACKSTOP_AUDIT,
            super::BACKSTOP_PACKET,
            super::TCP_V6,
            super::V4_MAPPED,
            super::UDP_V4,
            super::UDP_V6,
            super::CIDR_V4,
            super::PORT_RULE,
            super::CIDR_V6,
            super::CIDR_V6_NETNS,
            super::PORT_RULE_REPLACE,
            super::DENIAL_LOG_BOUND,
            super::LOOPBACK_OWN_NETNS,
            super::UDP_SERVER_REPLY,
            super::TCP_SERVER_REPLY,
            super::UNPOLICED,
            super::REMOVE_POLICY,
            super::TWO_CGROUPS,
            super::REPLACE_POLICY,
            super::AUDIT,
            super::DENIAL_EVENTS,
            super::MOVE_INTO_POLICED,
            super::MOVE_OUT_OF_POLICED,
            super::CREATED_OUTSIDE_ATTACH,
            super::AGENT_RESTART,
            super::AGENT_CLEANUP,
            super::AGENT_INCOMPATIBLE,
            super::LAYOUT_REUSE,
            super::LAYOUT_META,
            super::LAYOUT_POLICY_MAP,
            super::LAYOUT_VERSION,
            super::FAMILY_DNS,
            super::FAMILY_DNSMASQ,
            super::MAPS_FLAGS_V4,
            super::MAPS_FLAGS_V6,
            super::MAPS_CGROUP_FULL,
            super::MAPS_RULES_FULL,
            super::MAPS_CONTAINERS_FULL,
            super::MAPS_UNPOLICED_ROOM,
            super::MAPS_LEFTOVERS,
            super::MAPS_AGENT_CGROUP_FULL,
            super::MAPS_KILL,
            super::MAPS_LEFTOVERS_RESTART,
            super::PATH_POLICY_REMADE,
            super::PATH_POLICY_NESTED,
            super::PATH_VERIFIER,
            super::DNS_REDIRECT,
        ];
        let set: std::collections::BTreeSet<u8> = all.iter().copied().collect();
        assert_eq!(set.len(), all.len(), "two tests share a slot");
    }
}
