//! Test harness shared by the privileged tests.
//!
//! The kernel tests (`tests/kernel_*.rs`) run as root against the real kernel, serially
//! (`cargo test -p egress-tests -- --test-threads=1`). Each builds a [`lab::Lab`]: its own
//! cgroup v2 subtree ([`cgroup`]), bpffs pin directory ([`bpf`]) and loopback addresses
//! ([`slots`], [`net`]), removed again when the test ends, even on panic. Processes under test
//! are [`probe`] processes started inside a cgroup; [`agent`] runs the `egress-agent` binary.

pub mod agent;
pub mod bins;
pub mod bpf;
pub mod cgroup;
pub mod command;
pub mod daemon;
pub mod dns;
pub mod dnsmasq;
pub mod e2e;
pub mod interrupt;
pub mod lab;
pub mod net;
pub mod netns;
pub mod placement;
pub mod probe;
pub mod slots;
pub mod sweep;
pub mod tools;
pub mod udp_drain;
