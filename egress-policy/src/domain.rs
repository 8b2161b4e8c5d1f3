//! Domain names: how every part of the agent spells one.
//!
//! [`fold`] is the one spelling of a name as a key: one final dot dropped, ASCII letters
//! lowercased, no empty name and no empty DNS label (`Example.COM.` is `example.com`). On top of
//! it, [`DomainName::parse`] checks the stricter grammar of the `egress.allow` label (RFC 1123
//! labels, see [`crate::labels`]), and [`key`] is how the resolver and the policy's desired
//! state key a name (it also takes `_service` labels and converts internationalised names to
//! their `xn--` form).

use std::{fmt, str::FromStr};

/// Longest domain name, without the final dot.
pub const MAX_NAME_LEN: usize = 253;
/// Longest DNS label.
pub const MAX_DNS_LABEL_LEN: usize = 63;

/// Why a string is not a domain name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

/// `s` as a key: one final dot dropped, ASCII letters lowercased. An empty name or an empty
/// DNS label (`a..b`, `.a`) is an error.
pub fn fold(s: &str) -> Result<String, DomainError> {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Err(DomainError("empty domain name".into()));
    }
    if name.split('.').any(str::is_empty) {
        return Err(DomainError(
            "empty DNS label (`..`, or a leading dot)".into(),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// The key of a domain, as the resolver and the desired state know it: its ASCII (IDNA) form in
/// lower case without the trailing dot ([`fold`], then IDNA). `Example.COM.` and `example.com`
/// are the same domain. Addresses, wildcards and names that DNS cannot carry are rejected.
pub fn key(domain: &str) -> Result<String, DomainError> {
    let folded = fold(domain.trim())?;
    if folded.parse::<std::net::IpAddr>().is_ok() {
        return Err(DomainError("an IP address, not a name".into()));
    }
    if folded.contains('*') {
        return Err(DomainError("wildcards are not supported".into()));
    }
    let name =
        hickory_proto::rr::Name::from_utf8(&folded).map_err(|e| DomainError(e.to_string()))?;
    let ascii = name.to_lowercase().to_ascii();
    let key = ascii.strip_suffix('.').unwrap_or(&ascii);
    if key.is_empty() {
        return Err(DomainError("empty".into()));
    }
    Ok(key.to_owned())
}

/// A validated domain name: lowercase, without a final dot, RFC 1123 labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// Validates and lowercases `s` (one final dot is dropped): [`fold`], then the label
    /// grammar.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let err = |m: String| Err(DomainError(m));
        let name = fold(s)?;
        if name.len() > MAX_NAME_LEN {
            return err(format!(
                "domain name is {} characters long (at most {MAX_NAME_LEN})",
                name.len()
            ));
        }
        for label in name.split('.') {
            if let Some(c) = label
                .chars()
                .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
            {
                return if c.is_ascii() {
                    err(format!(
                        "invalid character `{c}` (a domain has letters, digits, `-` and `.`)"
                    ))
                } else {
                    err(format!(
                        "invalid character `{c}` (write internationalised names in their \
                         `xn--` form)"
                    ))
                };
            }
            if label.len() > MAX_DNS_LABEL_LEN {
                return err(format!(
                    "DNS label `{label}` is {} characters long (at most {MAX_DNS_LABEL_LEN})",
                    label.len()
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return err(format!(
                    "DNS label `{label}` must not start or end with a hyphen"
                ));
            }
        }
        let last = name.rsplit('.').next().unwrap_or_default();
        if last.chars().all(|c| c.is_ascii_digit()) {
            return err(format!(
                "the last DNS label `{last}` is all digits (write an address as an IP)"
            ));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `self` is a strict subdomain of `suffix` at any depth (what `*.suffix` matches):
    /// `a.b.example.com` is under `example.com`; `example.com` is not.
    pub fn is_subdomain_of(&self, suffix: &DomainName) -> bool {
        self.0
            .strip_suffix(suffix.as_str())
            .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
    }
}

impl FromStr for DomainName {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DomainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_drops_one_dot_and_lowercases() {
        assert_eq!(fold("Example.COM.").unwrap(), "example.com");
        assert_eq!(fold("_svc.Test").unwrap(), "_svc.test");
        assert_eq!(fold("bücher.example").unwrap(), "bücher.example");
        for bad in ["", ".", "a..b", ".a", "a.."] {
            assert!(fold(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subdomains() {
        let suffix = DomainName::parse("example.com").unwrap();
        let name = |s: &str| DomainName::parse(s).unwrap();
        assert!(name("a.example.com").is_subdomain_of(&suffix));
        assert!(name("a.b.example.com").is_subdomain_of(&suffix));
        assert!(!name("example.com").is_subdomain_of(&suffix));
        assert!(!name("badexample.com").is_subdomain_of(&suffix));
        assert!(!name("example.com.evil").is_subdomain_of(&suffix));
    }
}
