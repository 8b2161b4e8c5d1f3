//! Part 3: the enforcer against an nftables filter with the same allowlist as a set (the
//! iptables/ipset approach of label-driven peers), matched on the client's cgroup: TCP
//! connects per second. Each filter lives in a network namespace the bench makes (so the
//! host's firewall is never touched), with its own loopback listener; the namespaces and their
//! rules go away at the end.
//!
//! Configurations (same client, same listener code, each in its own namespace):
//! - no filter: the client in a cgroup without any program, in a namespace without rules;
//! - enforcer: the client in the policed cgroup, in that same namespace;
//! - nft set: `socket cgroupv2 level 2 "<client cgroup>" jump policed`, and in `policed` one
//!   lookup of `ip daddr . tcp dport` in a set of N elements per packet;
//! - nft ct + set: the same with `ct state established,related accept` first (what such
//!   rulesets usually do; it turns on connection tracking in that namespace).

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use egress_tests::{
    command::run_ok, interrupt, net::TcpSink, netns::NetNs, placement::Placement, tools,
};

use crate::{
    client::{ClientReport, Op},
    connect::{Load, SideSpec, run_client},
    lab::{EnforcerLab, filler_rule},
    note,
    report::{Section, Target},
    stats::{self, Ratio},
};

#[derive(Debug, Clone)]
pub struct Opts {
    pub rounds: usize,
    pub load: Load,
    pub entries: Vec<usize>,
}

pub fn check_tools() -> Result<()> {
    tools::require("nft", "nftables", "the nftables comparison")?;
    tools::require(
        "ip",
        "iproute2",
        "the nftables comparison (network namespaces)",
    )?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Control,
    Enforcer,
    NftSet,
    NftCt,
}

struct Setup {
    kind: Kind,
    entries: usize,
    /// Index into `spaces`.
    space: usize,
}

impl Setup {
    fn label(&self) -> String {
        let n = stats::int(self.entries as f64);
        match self.kind {
            Kind::Control => "control: no filter vs. no filter".into(),
            Kind::Enforcer => format!("enforcer, {n} entries"),
            Kind::NftSet => format!("nftables cgroupv2 match + set of {n}"),
            Kind::NftCt => format!("nftables ct established + cgroupv2 match + set of {n}"),
        }
    }
}

/// A namespace with its listener and a second listener that is not allowed (dropped first).
struct Space {
    sink: TcpSink,
    probe: TcpSink,
    ns: NetNs,
}

impl Space {
    /// A namespace with its two listeners (made inside it).
    fn new(name: &str) -> Self {
        let ns = NetNs::create(name);
        let (sink, probe) = ns.run(|| {
            let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
            (TcpSink::bind(lo), TcpSink::bind(lo))
        });
        Self { sink, probe, ns }
    }

    /// A command that runs inside the namespace.
    fn command(&self, program: &str) -> std::process::Command {
        Placement::default().netns(&self.ns.path()).command(program)
    }
}

/// The ruleset: a set of `entries` elements (the listener and fillers), matched for sockets of
/// the cgroup `cgroup_rel` (relative to /sys/fs/cgroup, as nft resolves it) at `level`.
fn ruleset(dst: SocketAddrV4, entries: usize, cgroup_rel: &str, level: usize, ct: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table inet egress_bench {{");
    let _ = writeln!(s, "  set allow4 {{");
    let _ = writeln!(s, "    type ipv4_addr . inet_service");
    let _ = write!(s, "    elements = {{ {} . {}", dst.ip(), dst.port());
    for i in 0..entries.saturating_sub(1) {
        let r = filler_rule(i);
        let _ = write!(
            s,
            ",\n      {} . {}",
            r.net().addr(),
            r.port().unwrap_or(443)
        );
    }
    let _ = writeln!(s, " }}\n  }}");
    let _ = writeln!(s, "  chain output {{");
    let _ = writeln!(
        s,
        "    type filter hook output priority filter; policy accept;"
    );
    let _ = writeln!(
        s,
        "    socket cgroupv2 level {level} \"{cgroup_rel}\" jump policed"
    );
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  chain policed {{");
    if ct {
        let _ = writeln!(s, "    ct state established,related accept");
    }
    let _ = writeln!(s, "    ip daddr . tcp dport @allow4 accept");
    let _ = writeln!(s, "    ip daddr . udp dport @allow4 accept");
    let _ = writeln!(s, "    meta l4proto tcp counter reject with tcp reset");
    let _ = writeln!(s, "    counter reject");
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("IPv4 listener"),
    }
}

pub fn run(lab: &mut EnforcerLab, exe: &Path, cg2: &Path, dir: &Path, o: &Opts) -> Result<Section> {
    let nft_cg = lab.extra_tree("bench-nft").child("client");
    let rel = nft_cg
        .path
        .strip_prefix("/sys/fs/cgroup")
        .with_context(|| {
            format!(
                "nft resolves cgroup paths under /sys/fs/cgroup; {} is elsewhere",
                nft_cg.path.display()
            )
        })?
        .to_string_lossy()
        .into_owned();
    let level = nft_cg
        .path
        .strip_prefix(cg2)
        .map(|p| p.components().count())
        .context("the nft client cgroup is under the cgroup v2 mount")?;
    let mut spaces: Vec<Space> = Vec::new();
    let mut setups: Vec<Setup> = Vec::new();
    spaces.push(Space::new("bench-plain"));
    setups.push(Setup {
        kind: Kind::Control,
        entries: 0,
        space: 0,
    });
    for &e in &o.entries {
        setups.push(Setup {
            kind: Kind::Enforcer,
            entries: e,
            space: 0,
        });
        for (kind, ct) in [(Kind::NftSet, false), (Kind::NftCt, true)] {
            let space = Space::new(&format!("bench-{}{e}", if ct { "ct" } else { "set" }));
            let name = space.ns.name.clone();
            note(&format!("nft: namespace {name} with a set of {e} elements"));
            let file = dir.join(format!("{name}.nft"));
            fs::write(&file, ruleset(v4(space.sink.addr), e, &rel, level, ct))?;
            let mut cmd = space.command("nft");
            cmd.arg("-f").arg(&file);
            run_ok(&mut cmd, Duration::from_secs(300))
                .with_context(|| format!("loading {} into namespace {name}", file.display()))?;
            let _ = fs::remove_file(&file);
            spaces.push(space);
            setups.push(Setup {
                kind,
                entries: e,
                space: spaces.len() - 1,
            });
        }
    }

    let n = setups.len();
    let mut res: Vec<Vec<ClientReport>> = vec![Vec::new(); n];
    let plain_side = SideSpec {
        cgroup: lab.free.path.clone(),
        netns: Some(spaces[0].ns.path()),
        dst: v4(spaces[0].sink.addr),
    };
    for round in 0..o.rounds {
        note(&format!("nft: round {}/{}", round + 1, o.rounds));
        for i in stats::rotation(n, round) {
            interrupt::check()?;
            let s = &setups[i];
            let space = &spaces[s.space];
            let dst = v4(space.sink.addr);
            let cgroup = match s.kind {
                Kind::Control => lab.control.path.clone(),
                Kind::Enforcer => {
                    lab.set_measured(&[SocketAddr::V4(dst)], s.entries)?;
                    lab.set_fillers(0)?;
                    lab.measured.path.clone()
                }
                Kind::NftSet | Kind::NftCt => nft_cg.path.clone(),
            };
            let b = SideSpec {
                cgroup,
                netns: Some(space.ns.path()),
                dst,
            };
            res[i].push(run_client(
                exe,
                Op::TcpConnect,
                &plain_side,
                Some(&b),
                o.load,
            )?);
        }
    }
    // A filter that never matched would make the comparison meaningless. Check that no
    // allowed packet was rejected, then that a connect to a listener outside the set fails.
    for s in &setups {
        if !matches!(s.kind, Kind::NftSet | Kind::NftCt) {
            continue;
        }
        let space = &spaces[s.space];
        let mut cmd = space.command("nft");
        cmd.args(["list", "chain", "inet", "egress_bench", "policed"]);
        let out = run_ok(&mut cmd, Duration::from_secs(60))?;
        if out.stdout.matches("counter packets 0 ").count() != 2 {
            bail!(
                "nft rejected allowed packets in {}: {}",
                space.ns.name,
                out.stdout
            );
        }
        let probe = SideSpec {
            cgroup: nft_cg.path.clone(),
            netns: Some(space.ns.path()),
            dst: v4(space.probe.addr),
        };
        let one = Load {
            batch: 1,
            batches: 1,
            warmup: 0,
            settle: 0,
        };
        match run_client(exe, Op::TcpConnect, &probe, None, one) {
            Ok(_) => bail!(
                "the nft filter in {} let a connect to {} through: it does not match the client",
                space.ns.name,
                space.probe.addr
            ),
            // `reject with tcp reset`: the connect fails at once with ECONNREFUSED.
            Err(e) if format!("{e:#}").contains("refused") => {}
            Err(e) => {
                return Err(e.context(format!(
                    "checking that the nft filter in {} rejects {}",
                    space.ns.name, space.probe.addr
                )));
            }
        }
    }
    drop(spaces);

    let all_a: Vec<f64> = res.iter().flatten().map(|r| r.a.rate()).collect();
    let all_a50: Vec<f64> = res.iter().flatten().map(|r| r.a.p50_ns as f64).collect();
    let all_a99: Vec<f64> = res.iter().flatten().map(|r| r.a.p99_ns as f64).collect();
    let mut md = String::from(
        "| configuration | connects/s | × no filter | connect p50 | connect p99 |\n|---|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        md,
        "| no filter (physical limit; side A of every run) | {} | 1 | {} | {} |",
        stats::int(stats::median(&all_a)),
        stats::dur_ns(stats::median(&all_a50)),
        stats::dur_ns(stats::median(&all_a99)),
    );
    let mut raw = Vec::new();
    let mut targets = Vec::new();
    let mut by_entries: Vec<(usize, Kind, Ratio)> = Vec::new();
    for (i, s) in setups.iter().enumerate() {
        let b = |r: &ClientReport| r.b.clone().unwrap_or_default();
        let r: Vec<f64> = res[i].iter().map(|r| b(r).rate()).collect();
        let pairs: Vec<f64> = res[i].iter().flat_map(|r| r.pair_ratios.clone()).collect();
        let ratio = Ratio::of(&pairs);
        let p50: Vec<f64> = res[i].iter().map(|r| b(r).p50_ns as f64).collect();
        let p99: Vec<f64> = res[i].iter().map(|r| b(r).p99_ns as f64).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            s.label(),
            stats::int(stats::median(&r)),
            ratio,
            stats::dur_ns(stats::median(&p50)),
            stats::dur_ns(stats::median(&p99)),
        );
        by_entries.push((s.entries, s.kind, ratio));
        raw.push(json!({"setup": s.label(), "runs": res[i]}));
    }
    for &e in &o.entries {
        let get = |k: Kind| {
            by_entries
                .iter()
                .find(|(n, kind, _)| *n == e && *kind == k)
                .map_or(Ratio::one(), |x| x.2)
        };
        let enf_r = get(Kind::Enforcer);
        let enf = enf_r.median;
        let set = get(Kind::NftSet).median;
        let ct = get(Kind::NftCt).median;
        let _ = writeln!(
            md,
            "\nWith {} entries: enforcer / nft set = {:.3}, enforcer / nft ct + set = {:.3} \
             (quotients of the median ratios above).",
            stats::int(e as f64),
            enf / set,
            enf / ct
        );
        targets.push(Target::ratio(
            format!(
                "nftables comparison, {} entries: enforcer connects/s ≥ 0.97× no filter",
                stats::int(e as f64)
            ),
            &enf_r,
            0.97,
        ));
    }
    md.push('\n');
    Ok(Section {
        title: "3. Against an nftables set filter".into(),
        intro: format!(
            "Each configuration has its own network namespace (made with `ip netns add`, removed \
             at the end) with its own loopback listener. The paired TCP client of part 1 \
             alternates batches ({} batches of {} connects per side per run, {} rounds, order \
             rotated) between the namespace without rules, from the cgroup without a program \
             (side A), and the configuration's namespace and cgroup (side B), moving itself \
             (`setns`, `cgroup.procs`) before each batch. The nftables rules match the \
             client's cgroup (`socket cgroupv2 level {level} \"{rel}\"`) and look up \
             `ip daddr . tcp dport` in a set holding the same allowlist as the enforcer's \
             policy (the listener plus fillers); every packet of the policed socket (SYN, ACK, \
             RST) is checked, or only the first with `ct state established,related accept`.",
            o.load.batches, o.load.batch, o.rounds
        ),
        markdown: md,
        targets,
        raw: json!(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_has_the_destination_and_the_count() {
        let r = ruleset(
            "127.0.0.1:5000".parse().unwrap(),
            3,
            "unified/x/client",
            2,
            true,
        );
        assert!(r.contains("elements = { 127.0.0.1 . 5000,\n      127.100.0.0 . 443,\n      127.100.0.1 . 443 }"), "{r}");
        assert!(r.contains("socket cgroupv2 level 2 \"unified/x/client\" jump policed"));
        assert!(r.contains("ct state established,related accept"));
    }
}
