//! The in-process enforcer of the connect, proxy and nftables benchmarks, with its own pin
//! directory and cgroups (the harness's, named for this process):
//!
//! ```text
//! <cgroup2>/egress-test-bench-<pid>/       the enforcer is attached here
//!     measured/                            policed: the measured policy (allows the sinks)
//!     unpoliced/                           under the programs, no policy
//!     p0001 ... p0999/                     other policed cgroups (10 entries each)
//! <cgroup2>/egress-test-bench-free-<pid>/
//!     client/                              no program at all: the physical limit
//!     control/                             the same, to measure the noise of a comparison
//! /sys/fs/bpf/egress-test-bench-<pid>/     maps and links
//! ```
//!
//! Everything is removed on drop, in order: the enforcer, its pins (links detached), the
//! cgroups.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
};

use anyhow::{Context, Result};
use egress_agent::{
    enforcer::{Enforcer, EnforcerConfig},
    sys::bpf::{CgroupAttachType, attached_programs},
};
use egress_policy::policy::{Mode, Policy, Rule};
use egress_tests::{
    cgroup::{Cgroup, CgroupTree},
    pins::PinDir,
};

/// Entries in each policy of the other policed cgroups.
pub const FILLER_ENTRIES: usize = 10;

/// An address that is never contacted, only stored as an allow entry: `127.100.0.0/15`
/// (loopback, so even a mistake would stay on this machine). Distinct for `i < 131072`.
pub fn filler_rule(i: usize) -> Rule {
    let i = i as u32;
    let ip = Ipv4Addr::new(127, 100 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
    Rule::addr(IpAddr::V4(ip), Some(443)).expect("port 443 is valid")
}

/// A policy of `entries` rules: `allowed` first, then fillers.
pub fn policy_with(allowed: &[SocketAddr], entries: usize) -> Policy {
    let mut rules: Vec<Rule> = allowed
        .iter()
        .map(|a| Rule::addr(a.ip(), Some(a.port())).expect("a real port"))
        .collect();
    let fill = entries.saturating_sub(rules.len());
    rules.extend((0..fill).map(filler_rule));
    Policy::new(Mode::Enforce, rules)
}

pub struct EnforcerLab {
    enforcer: Option<Enforcer>,
    pins: PinDir,
    pub measured: Cgroup,
    pub unpoliced: Cgroup,
    pub free: Cgroup,
    pub control: Cgroup,
    pub fillers: Vec<Cgroup>,
    /// How many of `fillers` are policed now.
    fillers_policed: usize,
    filler_policy: Policy,
    /// The measured cgroup's current policy (by entry count, to skip rewrites).
    measured_key: Option<(Vec<SocketAddr>, usize)>,
    // Dropped after the pins (field order): the cgroups go last.
    attach_tree: CgroupTree,
    free_tree: CgroupTree,
    extra: Vec<CgroupTree>,
}

impl EnforcerLab {
    /// Makes the cgroups (with `fillers` other cgroups to police later) and opens the enforcer.
    pub fn open(fillers: usize) -> Result<Self> {
        let attach_tree = CgroupTree::create("bench");
        let measured = attach_tree.child("measured");
        let unpoliced = attach_tree.child("unpoliced");
        let filler_cgroups = (1..=fillers)
            .map(|i| attach_tree.child(&format!("p{i:04}")))
            .collect();
        let free_tree = CgroupTree::create("bench-free");
        let free = free_tree.child("client");
        let control = free_tree.child("control");
        let pins = PinDir::new("bench");
        let cfg = EnforcerConfig {
            pin_dir: pins.path.clone(),
            attach_cgroup: attach_tree.root.path.clone(),
        };
        let (enforcer, _report) = Enforcer::open(&cfg).with_context(|| {
            format!(
                "opening the enforcer (pin dir {}, attach cgroup {})",
                cfg.pin_dir.display(),
                cfg.attach_cgroup.display()
            )
        })?;
        Ok(Self {
            enforcer: Some(enforcer),
            pins,
            measured,
            unpoliced,
            free,
            control,
            fillers: filler_cgroups,
            fillers_policed: 0,
            filler_policy: Policy::new(Mode::Enforce, (0..FILLER_ENTRIES).map(filler_rule)),
            measured_key: None,
            attach_tree,
            free_tree,
            extra: Vec::new(),
        })
    }

    fn enforcer(&mut self) -> &mut Enforcer {
        self.enforcer.as_mut().expect("open until drop")
    }

    /// Polices the measured cgroup with `entries` rules that include `allowed`.
    pub fn set_measured(&mut self, allowed: &[SocketAddr], entries: usize) -> Result<()> {
        let key = (allowed.to_vec(), entries);
        if self.measured_key.as_ref() == Some(&key) {
            return Ok(());
        }
        let policy = policy_with(allowed, entries);
        let id = self.measured.id;
        self.enforcer()
            .set_policy(id, &policy)
            .context("policing the measured cgroup")?;
        self.measured_key = Some(key);
        Ok(())
    }

    /// Polices the first `n` filler cgroups (10 entries each) and no others.
    pub fn set_fillers(&mut self, n: usize) -> Result<()> {
        let n = n.min(self.fillers.len());
        while self.fillers_policed < n {
            let id = self.fillers[self.fillers_policed].id;
            let p = self.filler_policy.clone();
            self.enforcer()
                .set_policy(id, &p)
                .context("policing a filler cgroup")?;
            self.fillers_policed += 1;
        }
        while self.fillers_policed > n {
            let id = self.fillers[self.fillers_policed - 1].id;
            self.enforcer()
                .remove_policy(id)
                .context("unpolicing a filler cgroup")?;
            self.fillers_policed -= 1;
        }
        Ok(())
    }

    /// Where the enforcer is attached.
    pub fn attach(&self) -> &Cgroup {
        &self.attach_tree.root
    }

    /// The id of our program attached for `hook` at the attach cgroup.
    pub fn prog_id(&self, hook: CgroupAttachType) -> Result<u32> {
        attached_program(&self.attach().path, hook)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pins.path
    }

    /// Programs of others attached at the cgroups above the bench's measured cgroups (the
    /// cgroup v2 root, the bench's parents): they run for every side of a comparison, so they
    /// shift the "no program" baseline. As `connect4 prog 42 at /sys/fs/cgroup`.
    pub fn foreign_programs(&self) -> Vec<String> {
        let mut dirs: Vec<&Path> = Vec::new();
        for c in [&self.free.path, &self.attach().path] {
            for a in c.ancestors().skip(1) {
                if !egress_agent::sys::mounts::is_cgroup2(a) {
                    break;
                }
                if !dirs.contains(&a) {
                    dirs.push(a);
                }
            }
        }
        let mut out = Vec::new();
        for d in dirs {
            let Ok(f) = File::open(d) else { continue };
            for t in CgroupAttachType::ALL {
                for id in attached_programs(&f, t).unwrap_or_default() {
                    out.push(format!("{} prog {id} at {}", t.name(), d.display()));
                }
            }
        }
        out
    }

    /// Makes another cgroup next to the "no program" ones (outside the enforcer's subtree),
    /// removed with the lab.
    pub fn free_cgroup(&self, name: &str) -> Cgroup {
        self.free_tree.child(name)
    }

    /// Makes another cgroup subtree of the harness's, `<cgroup2>/egress-test-<name>-<pid>`
    /// (outside the enforcer's), removed with the lab.
    pub fn extra_tree(&mut self, name: &str) -> &CgroupTree {
        self.extra.push(CgroupTree::create(name));
        self.extra.last().expect("just pushed")
    }
}

/// The id of the program attached directly to `cgroup` for `hook`.
pub fn attached_program(cgroup: &Path, hook: CgroupAttachType) -> Result<u32> {
    let f = File::open(cgroup)?;
    attached_programs(&f, hook)
        .with_context(|| format!("BPF_PROG_QUERY {} at {}", hook.name(), cgroup.display()))?
        .first()
        .copied()
        .with_context(|| format!("no {} program at {}", hook.name(), cgroup.display()))
}

impl Drop for EnforcerLab {
    fn drop(&mut self) {
        // Order: the enforcer, then (field order) the pins, then the cgroups.
        self.enforcer.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_are_distinct_loopback_addresses() {
        let mut seen = std::collections::BTreeSet::new();
        for i in [0, 1, 255, 256, 65_535, 65_536, 99_999] {
            let r = filler_rule(i);
            assert!(seen.insert(r));
            match r.net().addr() {
                IpAddr::V4(a) => assert!(a.is_loopback(), "{a}"),
                IpAddr::V6(a) => panic!("{a}"),
            }
        }
        assert_eq!(filler_rule(65_537).to_string(), "127.101.0.1:443");
    }

    #[test]
    fn policies_hold_the_allowed_destination_and_the_count() {
        let dst: SocketAddr = "127.77.0.1:5000".parse().unwrap();
        let p = policy_with(&[dst], 1000);
        assert_eq!(p.rules.len(), 1000);
        assert!(p.rules.iter().any(|r| r.to_string() == "127.77.0.1:5000"));
    }
}
