//! The one privileged test harness, used by the tests of this crate and by the benchmark.
//!
//! The kernel tests (`tests/kernel_*.rs`) run as root against the real kernel, serially
//! (`cargo test -p egress-tests -- --test-threads=1`). Each builds a [`lab::Lab`]: its own
//! cgroup v2 subtree ([`cgroup`]), bpffs pin directory ([`pins`]) and loopback addresses
//! ([`slots`], [`net`]), removed again when the test ends, even on panic. Processes under test
//! are [`probe`] processes started inside a cgroup; [`agent`] runs the `egress-agent` binary.
//! The end-to-end tests (`tests/e2e_*.rs`) build an [`e2e::Lab`] on a real dockerd
//! ([`docker`]) with a test DNS server ([`dns`]).
//!
//! Pieces: [`bins`] finds the binaries, [`bpf`] the kernel's view and raw map writes,
//! [`dns_client`] the probe's DNS subcommands, [`netns`] network namespaces, [`dnsmasq`] a real dnsmasq, [`command`] commands run with a
//! deadline, [`daemon`] helper servers stopped on drop, [`process`] other processes (dockerd)
//! and reaping, [`tools`] host tools, [`interrupt`] Ctrl-C for long runs, [`wait`] the poll
//! loop. The `egress-lab` binary (`src/bin/egress-lab.rs`) brings
//! the shared dockerd up and down for `cargo xtask test --with-docker`.

use std::{
    sync::{Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

pub mod agent;
pub mod bins;
pub mod bpf;
pub mod bypass;
pub mod capture;
pub mod cgroup;
pub mod command;
pub mod daemon;
pub mod dns;
pub mod dns_client;
pub mod dnsmasq;
pub mod docker;
pub mod e2e;
pub mod interrupt;
pub mod lab;
pub mod net;
pub mod netns;
pub mod pins;
pub mod placement;
pub mod probe;
pub mod process;
pub mod slots;
pub mod sweep;
pub mod tools;
pub mod udp_drain;
pub mod wait;

/// Locks `m`, also after a panic of another holder (the tests' data stays usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Nanoseconds since the epoch, for names no other run uses.
pub(crate) fn nanos_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}
