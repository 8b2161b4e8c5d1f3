//! Allow-rule keys. A rule is (policy, destination, port); port 0 means "any port".
//!
//! The programs look a destination up with its real port first and then with port 0, in the
//! exact-address hash maps and then (only if the policy has CIDR rules) in the LPM tries.

#[cfg(feature = "user")]
pub mod keys;

/// Port value that matches every port.
pub const ANY_PORT: u16 = 0;

/// Key of [`crate::maps::ALLOW_V4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ip4RuleKey {
    pub policy_id: u32,
    /// Destination port in host byte order, or [`ANY_PORT`].
    pub port: u16,
    pub _pad: u16,
    /// Address in network byte order.
    pub addr: [u8; 4],
}

/// Key of [`crate::maps::ALLOW_V6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ip6RuleKey {
    pub policy_id: u32,
    /// Destination port in host byte order, or [`ANY_PORT`].
    pub port: u16,
    pub _pad: u16,
    /// Address in network byte order.
    pub addr: [u8; 16],
}

impl Ip4RuleKey {
    pub const fn new(policy_id: u32, addr: [u8; 4], port: u16) -> Self {
        Self {
            policy_id,
            port,
            _pad: 0,
            addr,
        }
    }
}

impl Ip6RuleKey {
    pub const fn new(policy_id: u32, addr: [u8; 16], port: u16) -> Self {
        Self {
            policy_id,
            port,
            _pad: 0,
            addr,
        }
    }
}

/// Bits of the LPM data that precede the address: policy id (32) and port (16). A CIDR of
/// length `n` is stored with prefix length `CIDR_PREFIX_BITS + n`.
pub const CIDR_PREFIX_BITS: u32 = 48;

/// Data part of an LPM trie key for [`crate::maps::CIDR_V4`]: everything big-endian so that the
/// trie's bitwise prefix match covers the policy id and port exactly and the address by prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr4Data {
    pub policy_id: [u8; 4],
    pub port: [u8; 2],
    pub addr: [u8; 4],
    pub _pad: [u8; 2],
}

/// Data part of an LPM trie key for [`crate::maps::CIDR_V6`]; see [`Cidr4Data`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr6Data {
    pub policy_id: [u8; 4],
    pub port: [u8; 2],
    pub addr: [u8; 16],
    pub _pad: [u8; 2],
}

impl Cidr4Data {
    pub const fn new(policy_id: u32, addr: [u8; 4], port: u16) -> Self {
        Self {
            policy_id: policy_id.to_be_bytes(),
            port: port.to_be_bytes(),
            addr,
            _pad: [0; 2],
        }
    }
}

impl Cidr6Data {
    pub const fn new(policy_id: u32, addr: [u8; 16], port: u16) -> Self {
        Self {
            policy_id: policy_id.to_be_bytes(),
            port: port.to_be_bytes(),
            addr,
            _pad: [0; 2],
        }
    }
}

/// Value of every allow map. The kernel only tests presence; the agent stores a tag saying
/// where the rule came from (see `egress-agent`'s policy model), which it uses to explain events.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleValue {
    pub tag: u32,
}

crate::user_pod!(Ip4RuleKey, Ip6RuleKey, Cidr4Data, Cidr6Data, RuleValue);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn key_sizes_have_no_hidden_padding() {
        assert_eq!(size_of::<Ip4RuleKey>(), 4 + 2 + 2 + 4);
        assert_eq!(size_of::<Ip6RuleKey>(), 4 + 2 + 2 + 16);
        assert_eq!(size_of::<Cidr4Data>(), 12);
        assert_eq!(size_of::<Cidr6Data>(), 24);
        assert_eq!(size_of::<RuleValue>(), 4);
    }

    #[test]
    fn cidr_data_is_big_endian() {
        let d = Cidr4Data::new(0x0102_0304, [10, 0, 0, 0], 443);
        assert_eq!(d.policy_id, [1, 2, 3, 4]);
        assert_eq!(d.port, [0x01, 0xbb]);
    }
}
