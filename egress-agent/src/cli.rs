//! Command-line interface. The doc comments are the `--help` text.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{dns::DenyRcode, host::DEFAULT_ROOT, paths::DEFAULT_PIN_DIR};

/// Egress enforcer for Docker hosts: eBPF programs on cgroups let a policed container reach
/// only the destinations it is allowed, and deny everything else at once with EPERM.
///
/// Everything the agent puts in the kernel is pinned under one bpffs directory, so enforcement
/// survives the agent's exit or crash; `cleanup` removes it all.
#[derive(Debug, Parser)]
#[command(name = "egress-agent", version, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "EGRESS_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `egress_agent=debug`). RUST_LOG
    /// works too.
    #[arg(long, default_value = "info", global = true, env = "EGRESS_LOG")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and attach the programs (reusing pinned state of an earlier run without a gap),
    /// apply policies, and log every denial and audit hit until SIGINT/SIGTERM. Programs stay
    /// attached and maps pinned after it exits.
    ///
    /// Example: police one cgroup so that it may reach 10.0.0.5 on any port and port 53 of
    /// 10.0.0.0/8 only:
    ///
    ///   egress-agent run --policy 'mygroup=10.0.0.5,10.0.0.0/8:53'
    Run(RunArgs),
    /// Show what is pinned and attached: policed cgroups with their mode and allowed entries,
    /// the programs the kernel reports attached, and the counters. Read-only; works whether or
    /// not an agent runs.
    Status(StatusArgs),
    /// Detach every program and unpin every map under the pin directory. Enforcement stops.
    /// Safe to run twice.
    Cleanup(PinArgs),
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// bpffs directory holding the agent's pinned maps and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR, env = "EGRESS_PIN_DIR")]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pin: PinArgs,

    /// cgroup v2 directory to attach the programs to, absolute or relative to the cgroup v2
    /// mount. They judge sockets of every cgroup below it, including ones created later, and
    /// pass unpoliced cgroups after one map lookup. Default: the cgroup v2 root.
    #[arg(long, env = "EGRESS_ATTACH_CGROUP")]
    pub attach_cgroup: Option<PathBuf>,

    /// Police a cgroup: `CGROUP[@MODE]=ENTRY[,ENTRY...]`. CGROUP is a cgroup v2 directory
    /// (absolute, or relative to the cgroup v2 mount); MODE is `enforce` (default) or `audit`;
    /// an ENTRY is an address or CIDR with an optional port: `10.0.0.5`, `10.0.0.0/8:53`,
    /// `::1`, `[2001:db8::1]:443`, `[2001:db8::/32]:443`. No entries: everything is denied.
    /// Repeat for more cgroups.
    #[arg(long = "policy", value_name = "SPEC")]
    pub policies: Vec<String>,

    /// Follow Docker: `auto` (if DOCKER_HOST is set or /var/run/docker.sock exists), `on`
    /// (wait for Docker, retrying) or `off` (only --policy cgroups are policed).
    #[arg(long, value_enum, default_value_t = DockerMode::Auto, env = "EGRESS_DOCKER")]
    pub docker: DockerMode,

    /// DNS server that resolves allowed domains, `ADDR[:PORT]` (default: the host's
    /// /etc/resolv.conf servers).
    #[arg(long, value_name = "ADDR[:PORT]", env = "EGRESS_DNS_SERVER")]
    pub dns_server: Option<String>,

    /// Optional TOML policy file that adds to or overrides container labels (selected by
    /// container name or label). Reloaded on SIGHUP; a file with errors is refused and the
    /// previous one stays in force.
    #[arg(long, value_name = "PATH", env = "EGRESS_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,

    /// Shortest time between two lookups of an allowed domain, whatever its TTL (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub ttl_floor: u64,

    /// Longest time between two lookups of an allowed domain, whatever its TTL (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub ttl_ceiling: u64,

    /// How long an IP that dropped out of a domain's answer stays allowed (seconds), so that
    /// cached answers and open connections keep working.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub grace: u64,

    /// What the cgroups of a container the agent has not classified yet get (it was created
    /// while the agent was down, or faster than the agent could register it): `deny` (safe)
    /// or `allow`.
    #[arg(long, value_enum, default_value_t = Unclassified::Deny, env = "EGRESS_UNCLASSIFIED")]
    pub unclassified: Unclassified,

    /// Log a denial once per (container, destination) per this many seconds; the line says
    /// how many were suppressed. 0 logs every one.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub deny_log_interval: u64,

    /// What `egress.dns` is for a container without the label: `learn` (its allowed names'
    /// addresses are exactly those its own DNS answers carried) or `resolve` (the agent
    /// resolves its allowed names itself, for applications that connect to addresses they did
    /// not look up; its questions still go through the proxy).
    #[arg(long, value_enum, default_value_t = DnsModeArg::Learn, env = "EGRESS_DNS_MODE")]
    pub dns_mode: DnsModeArg,

    /// What the DNS proxy answers for a name the policy does not allow: `nxdomain` or
    /// `refused` (musl stops its search list on it).
    #[arg(long, value_enum, default_value_t = DenyRcode::NxDomain, env = "EGRESS_DNS_DENY")]
    pub dns_deny: DenyRcode,

    /// Longest the DNS proxy holds an answer while it writes its addresses into the
    /// container's allow set; longer, and the container gets SERVFAIL (and asks again).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub dns_hold: Duration,

    /// Longest the container's resolvers get to answer a question before the proxy answers
    /// SERVFAIL.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub dns_upstream_timeout: Duration,

    /// How long a learned address stays allowed after the TTL of the answer that carried it
    /// (the minimum over its CNAME chain) ran out.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub dns_grace: Duration,

    /// Most addresses a container learns for one name; the oldest go first.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub dns_max_ips_per_name: u32,

    /// Where the host's root directory is. The agent reads the host's files below it
    /// (resolv.conf, /proc, the mount table, /run/systemd, Docker's default socket): `/` on the
    /// host itself, e.g. `/host` when the agent runs in a container with the host's `/` mounted
    /// there.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_ROOT, env = "EGRESS_HOST_ROOT")]
    pub host_root: PathBuf,
}

/// `--dns-mode` (`egress_policy::dns::DnsMode` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DnsModeArg {
    Learn,
    Resolve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DockerMode {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Unclassified {
    Deny,
    Allow,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub pin: PinArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_repeated_policies() {
        let cli = Cli::try_parse_from([
            "egress-agent",
            "run",
            "--policy",
            "a=10.0.0.1",
            "--policy",
            "b@audit=",
            "--attach-cgroup",
            "/sys/fs/cgroup/x",
        ])
        .unwrap();
        match cli.command {
            Command::Run(r) => {
                assert_eq!(r.policies, vec!["a=10.0.0.1", "b@audit="]);
                assert_eq!(r.attach_cgroup, Some(PathBuf::from("/sys/fs/cgroup/x")));
                assert_eq!(r.pin.pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
                assert_eq!(r.host_root, PathBuf::from("/"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_and_cleanup_take_a_pin_dir() {
        let cli = Cli::try_parse_from([
            "egress-agent",
            "status",
            "--json",
            "--pin-dir",
            "/sys/fs/bpf/t",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs { json: true, .. })
        ));
        let cli = Cli::try_parse_from(["egress-agent", "cleanup"]).unwrap();
        assert!(matches!(cli.command, Command::Cleanup(_)));
    }

    #[test]
    fn unknown_log_format_is_rejected() {
        assert!(Cli::try_parse_from(["egress-agent", "--log-format", "xml", "status"]).is_err());
    }
}
