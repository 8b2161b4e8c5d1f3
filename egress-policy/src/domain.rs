//! Domain names: how every part of the agent spells one.
//!
//! [`fold`] is the one spelling of a name as a key: one final dot dropped, ASCII letters
//! lowercased, no empty name and no empty DNS label (`Example.COM.` is `example.com`). On top of
//! it, [`DomainName::parse`] checks the stricter grammar of the `egress.allow` label (RFC 1123
//! labels, see [`crate::labels`]), and [`key`] is how the resolver and the policy's desired
//! state key a name (it also takes `_service` labels and converts internationalised names to
//! their `xn--` form). [`Pattern`] is a name or a wildcard of an allow entry (`api.example.com`,
//! `*.example.com`, `**.example.com`), matched against such keys.

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

/// The name part of an allow entry: one name, or a wildcard over the names below a suffix.
/// Every string it holds is a [`key`] (lowercase, no final dot, `xn--` form).
///
/// - `Exact(k)` (`api.example.com`) matches `k` only.
/// - `OneLabel(s)` (`*.example.com`) matches exactly one label more than `s`:
///   `a.example.com`, not `a.b.example.com`.
/// - `AnyDepth(s)` (`**.example.com`) matches any number of labels more than `s`:
///   `a.example.com` and `a.b.example.com`.
///
/// Neither wildcard matches `s` itself (allow `example.com` too to get it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    Exact(String),
    OneLabel(String),
    AnyDepth(String),
}

/// What a wildcard is, for the messages of [`Pattern::parse`].
const WILDCARD_SHAPE: &str = "a wildcard is `*.` (exactly one more label) or `**.` (any depth) \
     followed by a domain, e.g. `*.example.com`";

impl Pattern {
    /// Parses the name part of an allow entry (no port): a domain in the label grammar
    /// ([`DomainName::parse`]), or `*.` / `**.` and such a domain. `*` and `**` are only allowed
    /// as the whole first label; the error names the offending label.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let err = |m: String| Err(DomainError(m));
        let (first, rest) = match s.split_once('.') {
            Some((f, r)) => (f, Some(r)),
            None => (s, None),
        };
        let wildcard = match first {
            "*" => Some(Self::OneLabel as fn(String) -> Self),
            "**" => Some(Self::AnyDepth as fn(String) -> Self),
            f if f.contains('*') => {
                return err(format!("`{f}` is not a wildcard label: {WILDCARD_SHAPE}"));
            }
            _ => None,
        };
        let Some(make) = wildcard else {
            if let Some(label) = s.split('.').find(|l| l.contains('*')) {
                return err(format!(
                    "`{label}`: `*` is only allowed as the whole first label ({WILDCARD_SHAPE})"
                ));
            }
            return Ok(Self::Exact(name_key(s)?));
        };
        let suffix = match rest {
            Some(r) if !r.is_empty() => r,
            _ => {
                return err(format!(
                    "a wildcard needs a domain after it: {WILDCARD_SHAPE}"
                ));
            }
        };
        if let Some(label) = suffix.split('.').find(|l| l.contains('*')) {
            return err(format!(
                "`{label}`: `*` is only allowed as the whole first label ({WILDCARD_SHAPE})"
            ));
        }
        let suffix = name_key(suffix)?;
        if suffix.len() > MAX_NAME_LEN - 2 {
            return err(format!(
                "a wildcard's domain can be at most {} characters long (a matching name has one \
                 more label)",
                MAX_NAME_LEN - 2
            ));
        }
        Ok(make(suffix))
    }

    /// True if the name `name_key` (a [`key`]) is one this pattern allows.
    pub fn matches(&self, name_key: &str) -> bool {
        match self {
            Self::Exact(k) => name_key == k,
            Self::OneLabel(s) => head_below(name_key, s).is_some_and(|h| !h.contains('.')),
            Self::AnyDepth(s) => head_below(name_key, s).is_some(),
        }
    }

    /// True for `*.` and `**.` patterns.
    pub fn is_wildcard(&self) -> bool {
        !matches!(self, Self::Exact(_))
    }

    /// The exact name, or the wildcard's suffix.
    pub fn name(&self) -> &str {
        match self {
            Self::Exact(k) | Self::OneLabel(k) | Self::AnyDepth(k) => k,
        }
    }
}

/// The labels `name` has in front of `suffix` (without the dot), if it is strictly below it.
fn head_below<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    name.strip_suffix(suffix)?
        .strip_suffix('.')
        .filter(|head| !head.is_empty())
}

/// A name of the label grammar as its [`key`].
fn name_key(s: &str) -> Result<String, DomainError> {
    let name = DomainName::parse(s)?;
    key(name.as_str()).map_err(|e| {
        DomainError(format!(
            "not a name DNS can carry (an `xn--` label that does not decode?): {}",
            e.0
        ))
    })
}

impl fmt::Display for Pattern {
    /// The pattern in the label grammar (it parses back to the same pattern).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(k) => f.write_str(k),
            Self::OneLabel(s) => write!(f, "*.{s}"),
            Self::AnyDepth(s) => write!(f, "**.{s}"),
        }
    }
}

impl FromStr for Pattern {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
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

    fn pattern(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn an_exact_name_matches_itself_only() {
        let p = pattern("Api.Example.COM.");
        assert_eq!(p, Pattern::Exact("api.example.com".into()));
        assert!(p.matches("api.example.com"));
        assert!(!p.matches("a.api.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.is_wildcard());
    }

    #[test]
    fn one_star_matches_exactly_one_more_label() {
        let p = pattern("*.example.com");
        assert_eq!(p, Pattern::OneLabel("example.com".into()));
        assert!(p.matches("a.example.com"));
        assert!(p.matches("xn--bcher-kva.example.com"));
        assert!(!p.matches("a.b.example.com"), "two labels more");
        assert!(!p.matches("example.com"), "not the apex");
        assert!(!p.matches("badexample.com"));
        assert!(!p.matches("example.com.evil"));
        assert!(!p.matches(".example.com"));
        assert!(p.is_wildcard());
    }

    #[test]
    fn two_stars_match_any_depth() {
        let p = pattern("**.Example.com.");
        assert_eq!(p, Pattern::AnyDepth("example.com".into()));
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.c.example.com"));
        assert!(!p.matches("example.com"), "not the apex");
        assert!(!p.matches("badexample.com"));
        assert!(!p.matches("example.com.evil"));
        assert_eq!(p.name(), "example.com");
    }

    #[test]
    fn display_gives_the_label_spelling_back() {
        for s in ["api.example.com", "*.example.com", "**.example.com", "db"] {
            assert_eq!(pattern(s).to_string(), s);
            assert_eq!(pattern(&pattern(s).to_string()), pattern(s));
        }
    }

    #[test]
    fn stars_anywhere_else_are_errors_naming_the_label() {
        for (s, label) in [
            ("***.x", "`***`"),
            ("*x.y", "`*x`"),
            ("x*.y", "`x*`"),
            ("a.*.com", "`*`"),
            ("*.*.x", "`*`"),
            ("**.a.**.x", "`**`"),
            ("*.com*", "`com*`"),
        ] {
            let e = Pattern::parse(s).unwrap_err().0;
            assert!(e.starts_with(label), "{s}: {e}");
        }
        for s in ["*", "**", "*.", "**."] {
            let e = Pattern::parse(s).unwrap_err().0;
            assert!(e.contains("needs a domain after it"), "{s}: {e}");
        }
        assert!(Pattern::parse("*.-a.com").unwrap_err().0.contains("`-a`"));
        let e = Pattern::parse("*.xn--a.example").unwrap_err().0;
        assert!(e.contains("does not decode"), "{e}");
    }
}
