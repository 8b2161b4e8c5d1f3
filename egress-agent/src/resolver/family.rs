//! The two address families of a domain — its A and its AAAA records — and a pair of values,
//! one per family. A domain's families are looked up, scheduled and kept independently: one
//! failing never costs the other its answer.

use std::{
    fmt,
    net::IpAddr,
    ops::{Index, IndexMut},
};

use hickory_resolver::proto::rr::RecordType;

/// An address family of a domain, named after its record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// A records (IPv4).
    V4,
    /// AAAA records (IPv6).
    V6,
}

impl Family {
    /// Both families, A first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The record type asked for.
    pub fn record_type(self) -> RecordType {
        match self {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        }
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }

    /// The family of an address (an IPv4-mapped IPv6 address is an AAAA record's, so V6).
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "A",
            Family::V6 => "AAAA",
        })
    }
}

/// One value per family, indexed by [`Family`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerFamily<T> {
    pub v4: T,
    pub v6: T,
}

impl<T> PerFamily<T> {
    /// Both values made by `f`.
    pub fn from_fn(mut f: impl FnMut(Family) -> T) -> Self {
        Self {
            v4: f(Family::V4),
            v6: f(Family::V6),
        }
    }

    /// (family, value), A first.
    pub fn iter(&self) -> impl Iterator<Item = (Family, &T)> {
        [(Family::V4, &self.v4), (Family::V6, &self.v6)].into_iter()
    }

    /// (family, mutable value), A first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Family, &mut T)> {
        [(Family::V4, &mut self.v4), (Family::V6, &mut self.v6)].into_iter()
    }
}

impl<T> Index<Family> for PerFamily<T> {
    type Output = T;

    fn index(&self, family: Family) -> &T {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

impl<T> IndexMut<Family> for PerFamily<T> {
    fn index_mut(&mut self, family: Family) -> &mut T {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_name_their_record_types_and_addresses() {
        assert_eq!(Family::V4.record_type(), RecordType::A);
        assert_eq!(Family::V6.record_type(), RecordType::AAAA);
        assert_eq!(Family::V4.other(), Family::V6);
        assert_eq!(Family::V6.other(), Family::V4);
        assert_eq!(Family::V4.to_string(), "A");
        assert_eq!(Family::V6.to_string(), "AAAA");
        assert_eq!(Family::of(&"10.0.0.1".parse().unwrap()), Family::V4);
        assert_eq!(Family::of(&"::ffff:10.0.0.1".parse().unwrap()), Family::V6);
    }

    #[test]
    fn per_family_is_indexed_by_family() {
        let mut pair = PerFamily::from_fn(|f| f.to_string());
        assert_eq!(pair[Family::V4], "A");
        pair[Family::V6].push('!');
        assert_eq!(
            pair.iter()
                .map(|(f, v)| (f, v.as_str()))
                .collect::<Vec<_>>(),
            [(Family::V4, "A"), (Family::V6, "AAAA!")]
        );
    }
}
