//! The grammar of one address entry, shared by `--policy` and (later) container labels:
//!
//! ```text
//! entry   = v4 [ "/" len ] [ ":" port ]
//!         | v6 [ "/" len ]                       ; no port without brackets
//!         | "[" v6 [ "/" len ] "]" [ ":" port ]
//! port    = 1..65535
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::{Rule, RuleError};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("empty entry")]
    Empty,
    #[error("`{entry}`: bad port `{port}` (expected 1-65535)")]
    BadPort { entry: String, port: String },
    #[error("`{entry}`: bad prefix length `{len}` (at most {max})")]
    BadPrefix { entry: String, len: String, max: u8 },
    #[error("`{entry}`: not an IPv4 or IPv6 address")]
    BadAddress { entry: String },
    #[error("`{entry}`: {source}")]
    Rule { entry: String, source: RuleError },
}

/// Parses an address entry. Returns `Ok(None)` if the entry does not look like an address at
/// all (it is a domain name, for the caller to handle), and an error if it looks like one but
/// is malformed.
pub fn parse_ip_entry(raw: &str) -> Result<Option<Rule>, EntryError> {
    let entry = raw.trim();
    if entry.is_empty() {
        return Err(EntryError::Empty);
    }
    let err_addr = || EntryError::BadAddress {
        entry: entry.to_owned(),
    };
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(err_addr)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(err_addr)?),
        };
        (inside, port)
    } else if entry.matches(':').count() >= 2 {
        // Bare IPv6: every colon belongs to the address.
        (entry, None)
    } else {
        match entry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (entry, None),
        }
    };
    let (addr, len) = match host.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (host, None),
    };
    let ip: IpAddr = if let Ok(v4) = addr.parse::<Ipv4Addr>() {
        v4.into()
    } else if let Ok(v6) = addr.parse::<Ipv6Addr>() {
        v6.into()
    } else if looks_like_address(addr) || entry.starts_with('[') {
        return Err(err_addr());
    } else {
        return Ok(None);
    };
    if ip.is_ipv6() && !entry.starts_with('[') && entry.contains(']') {
        return Err(err_addr());
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max && all_digits(l))
            .ok_or_else(|| EntryError::BadPrefix {
                entry: entry.to_owned(),
                len: l.to_owned(),
                max,
            })?,
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|n| *n != 0 && all_digits(p))
                .ok_or_else(|| EntryError::BadPort {
                    entry: entry.to_owned(),
                    port: p.to_owned(),
                })?,
        ),
    };
    let net = IpNet::new(ip, prefix).map_err(|_| EntryError::BadPrefix {
        entry: entry.to_owned(),
        len: prefix.to_string(),
        max,
    })?;
    Rule::new(net, port)
        .map(Some)
        .map_err(|source| EntryError::Rule {
            entry: entry.to_owned(),
            source,
        })
}

/// Parses a comma-separated list of address entries; a domain is an error here.
pub fn parse_ip_entries(list: &str) -> Result<Vec<Rule>, EntryError> {
    list.split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            parse_ip_entry(e)?.ok_or_else(|| EntryError::BadAddress {
                entry: e.trim().to_owned(),
            })
        })
        .collect()
}

/// Plain decimal digits (Rust's integer parsing also takes a leading `+`).
fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Digits, dots and colons only (or hex and colons): meant as an address, not a name.
fn looks_like_address(s: &str) -> bool {
    let all_v4ish = s.chars().all(|c| c.is_ascii_digit() || c == '.');
    let has_colon = s.contains(':');
    all_v4ish || has_colon
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        parse_ip_entry(s).unwrap().unwrap()
    }

    #[test]
    fn addresses_cidrs_and_ports() {
        assert_eq!(rule("10.1.2.3").port(), None);
        assert_eq!(rule("10.1.2.3:8080").port(), Some(8080));
        assert_eq!(rule("10.1.0.0/16:5432").net().prefix_len(), 16);
        assert_eq!(rule("[2001:db8::1]:443").port(), Some(443));
        assert_eq!(rule("2001:db8::/32").net().prefix_len(), 32);
        assert_eq!(rule("[2001:db8::/32]:53").port(), Some(53));
        assert_eq!(rule(" ::1 ").net().to_string(), "::1/128");
    }

    #[test]
    fn names_are_not_addresses() {
        assert_eq!(parse_ip_entry("api.example.com"), Ok(None));
        assert_eq!(parse_ip_entry("api.example.com:443"), Ok(None));
        assert_eq!(parse_ip_entry("*.example.com"), Ok(None));
    }

    #[test]
    fn malformed_entries_name_the_token() {
        assert!(matches!(
            parse_ip_entry("10.1.2.3:0"),
            Err(EntryError::BadPort { .. })
        ));
        assert!(matches!(
            parse_ip_entry("10.1.2.3:70000"),
            Err(EntryError::BadPort { .. })
        ));
        assert!(matches!(
            parse_ip_entry("10.1.2.0/33"),
            Err(EntryError::BadPrefix { .. })
        ));
        assert!(matches!(
            parse_ip_entry("10.1.2"),
            Err(EntryError::BadAddress { .. })
        ));
        assert!(matches!(
            parse_ip_entry("[2001:db8::1"),
            Err(EntryError::BadAddress { .. })
        ));
        assert!(matches!(
            parse_ip_entry("[10.0.0.1]x"),
            Err(EntryError::BadAddress { .. })
        ));
        assert!(matches!(
            parse_ip_entry("10.1.2.3:+80"),
            Err(EntryError::BadPort { .. })
        ));
        assert!(matches!(
            parse_ip_entry("10.1.2.0/+8"),
            Err(EntryError::BadPrefix { .. })
        ));
        let e = parse_ip_entry("10.1.2.3:http").unwrap_err();
        assert!(e.to_string().contains("10.1.2.3:http"), "{e}");
    }

    #[test]
    fn lists_reject_names() {
        assert_eq!(parse_ip_entries("10.0.0.1, ::1").unwrap().len(), 2);
        assert!(parse_ip_entries("10.0.0.1,example.com").is_err());
    }
}
