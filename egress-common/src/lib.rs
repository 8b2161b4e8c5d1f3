//! Types shared by the eBPF programs (`egress-ebpf`) and the agent (`egress-agent`).
//!
//! Every map key, map value and event record is defined here once, `#[repr(C)]` with explicit
//! padding so that the kernel and user space agree byte for byte. Map names and sizes, and the
//! table of all maps, live in [`maps`]; the table of programs and their hooks in [`programs`];
//! the DNS redirect's addresses and records in [`dns`].
//! The layout version in [`LAYOUT_VERSION`] changes whenever a map does, so that an agent can
//! tell a compatible pinned state from an incompatible one.
//!
//! With the `user` feature (the agent's side, with `std`) each kernel type also carries its
//! user-side encoding beside it: `container::ContainerId` (and the user side of the container
//! recogniser), the policy model's rules as map keys (`rule::keys`), its policies as cgroup
//! entries (`CgroupPolicy::of`) and its mode as theirs (`policy::Mode`'s `From`s).
#![cfg_attr(not(feature = "user"), no_std)]

pub mod cgroup_path;
pub mod container;
pub mod dns;
pub mod event;
pub mod maps;
pub mod policy;
pub mod programs;
pub mod rule;
pub mod stats;

/// Version of the pinned map layout. Bump it on any change to a map's name, type, key, value or
/// size: an agent that finds pinned maps of another layout replaces them instead of reusing them.
pub const LAYOUT_VERSION: u64 = 5;

/// Address families as they appear in `bpf_sock_addr.user_family` and in events.
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// Marks a type as plain old data for aya's typed maps (user space only).
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, made of integers and byte arrays only, with
            // every padding byte spelled out as a field, so every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use user_pod;
