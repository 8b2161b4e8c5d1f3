//! What `egress-agent run` is told to do, validated: [`Config`], built from the command line
//! ([`Config::from_args`]). Every field is a plain, checked value, so that a configuration file
//! can later fill the same fields through the same checks; an error names the flag and the
//! offending value ([`ConfigError`]).
//!
//! Validation reads only what the flags name (the policy file); nothing of the kernel, cgroups or
//! Docker is touched here, so a bad configuration is refused before anything is pinned.

pub mod policy_spec;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use self::policy_spec::{PolicySpec, SpecError, parse_policy_spec};
use crate::{
    cli::{DnsModeArg, DockerMode, RunArgs, Unclassified},
    dns::{DnsConfig, DnsMode},
    host::{Host, HostError},
    resolver::RefreshConfig,
    resolver::{ResolverError, parse_dns_server},
};
use egress_policy::{
    labels::Capabilities,
    policy_file::{FileError, PolicyFile},
};

/// A configuration that cannot be used, naming the flag and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Policy(#[from] SpecError),
    #[error("--policy-file {}", path.display())]
    PolicyFile {
        path: PathBuf,
        #[source]
        source: FileError,
    },
    #[error("--dns-server `{value}`")]
    DnsServer {
        value: String,
        #[source]
        source: Box<ResolverError>,
    },
    #[error("--ttl-floor {floor} / --ttl-ceiling {ceiling} / --grace {grace}")]
    Refresh {
        floor: u64,
        ceiling: u64,
        grace: u64,
        #[source]
        source: Box<ResolverError>,
    },
    #[error("--pin-dir `{}`: the pin directory must be an absolute path (in bpffs)", path.display())]
    PinDir { path: PathBuf },
    #[error("--attach-cgroup: the cgroup must not be empty")]
    AttachCgroup,
    #[error("--host-root `{}`", root.display())]
    HostRoot {
        root: PathBuf,
        #[source]
        source: HostError,
    },
}

/// The policy file: where it is (for reloads) and what it said when it was last loaded.
#[derive(Debug, Clone)]
pub struct PolicyFileConfig {
    pub path: PathBuf,
    pub loaded: PolicyFile,
}

/// What `egress-agent run` does, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// bpffs directory of the pinned maps and links (absolute).
    pub pin_dir: PathBuf,
    /// cgroup v2 directory the programs are attached to; None: the cgroup v2 root.
    pub attach_cgroup: Option<PathBuf>,
    /// `--policy` cgroups with their policies.
    pub policies: Vec<PolicySpec>,
    /// Whether to follow Docker.
    pub docker: DockerMode,
    /// Who resolves allowed domains; None: the host's resolv.conf servers.
    pub dns_server: Option<SocketAddr>,
    /// The policy file, loaded (reloaded on SIGHUP).
    pub policy_file: Option<PolicyFileConfig>,
    /// TTL floor and ceiling and grace period of resolved domains (validated).
    pub refresh: RefreshConfig,
    /// What cgroups of containers the agent has not classified get.
    pub unclassified: Unclassified,
    /// A denial is logged once per (container, destination) per this interval; zero logs all.
    pub deny_log_interval: Duration,
    /// Where the host's files are (`--host-root`).
    pub host: Host,
    /// What the agent can enforce (label entries it cannot honour are errors).
    pub caps: Capabilities,
    /// The DNS proxy's settings (`--dns-*`).
    pub dns: DnsConfig,
}

impl Config {
    /// Validates the flags of `run`: parses every `--policy` and `--dns-server`, loads the
    /// `--policy-file`, checks the resolver's timings, the pin directory and the host root.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        // The DNS proxy enforces wildcard entries (it learns their addresses from the answers).
        let caps = Capabilities { wildcards: true };
        let policies = args
            .policies
            .iter()
            .map(|s| parse_policy_spec(s))
            .collect::<Result<Vec<_>, _>>()?;
        let policy_file = args
            .policy_file
            .as_deref()
            .map(|path| load_policy_file(path, caps))
            .transpose()?;
        let dns_server = args
            .dns_server
            .as_deref()
            .map(|value| {
                parse_dns_server(value).map_err(|source| ConfigError::DnsServer {
                    value: value.to_owned(),
                    source: Box::new(source),
                })
            })
            .transpose()?;
        let refresh = RefreshConfig {
            ttl_floor: Duration::from_secs(args.ttl_floor),
            ttl_ceiling: Duration::from_secs(args.ttl_ceiling),
            grace: Duration::from_secs(args.grace),
            ..RefreshConfig::default()
        };
        refresh.validate().map_err(|source| ConfigError::Refresh {
            floor: args.ttl_floor,
            ceiling: args.ttl_ceiling,
            grace: args.grace,
            source: Box::new(source),
        })?;
        let pin_dir = args.pin.pin_dir.clone();
        if !pin_dir.is_absolute() {
            return Err(ConfigError::PinDir { path: pin_dir });
        }
        if args
            .attach_cgroup
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::AttachCgroup);
        }
        let host = Host::new(&args.host_root).map_err(|source| ConfigError::HostRoot {
            root: args.host_root.clone(),
            source,
        })?;
        Ok(Self {
            pin_dir,
            attach_cgroup: args.attach_cgroup.clone(),
            policies,
            docker: args.docker,
            dns_server,
            policy_file,
            refresh,
            unclassified: args.unclassified,
            deny_log_interval: Duration::from_secs(args.deny_log_interval),
            host,
            caps,
            dns: DnsConfig {
                default_mode: match args.dns_mode {
                    DnsModeArg::Learn => DnsMode::Learn,
                    DnsModeArg::Resolve => DnsMode::Resolve,
                },
                deny: args.dns_deny,
                hold: args.dns_hold,
                upstream_timeout: args.dns_upstream_timeout,
                grace: args.dns_grace,
                max_ips_per_name: args.dns_max_ips_per_name as usize,
                ..DnsConfig::default()
            },
        })
    }
}

/// Loads the policy file at `path` (at start and at every reload).
pub fn load_policy_file(path: &Path, caps: Capabilities) -> Result<PolicyFileConfig, ConfigError> {
    match PolicyFile::load(path, caps) {
        Ok(loaded) => Ok(PolicyFileConfig {
            path: path.to_owned(),
            loaded,
        }),
        Err(source) => Err(ConfigError::PolicyFile {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["egress-agent", "run"].iter().chain(extra)).unwrap();
        match cli.command {
            Command::Run(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// The error and its causes, as the agent prints them.
    fn chain(e: &ConfigError) -> String {
        let mut out = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            out.push_str(": ");
            out.push_str(&s.to_string());
            src = s.source();
        }
        out
    }

    #[test]
    fn the_defaults_are_valid() {
        let c = Config::from_args(&args(&[])).unwrap();
        assert_eq!(c.pin_dir, PathBuf::from(crate::paths::DEFAULT_PIN_DIR));
        assert_eq!(c.refresh.ttl_floor, Duration::from_secs(5));
        assert_eq!(c.deny_log_interval, Duration::from_secs(60));
        assert!(c.host.is_own_root());
        assert!(c.policies.is_empty() && c.policy_file.is_none() && c.dns_server.is_none());
    }

    #[test]
    fn values_are_parsed() {
        let c = Config::from_args(&args(&[
            "--policy",
            "a@audit=10.0.0.1",
            "--dns-server",
            "[::1]:5353",
            "--host-root",
            "/host",
            "--deny-log-interval",
            "0",
        ]))
        .unwrap();
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.dns_server, Some("[::1]:5353".parse().unwrap()));
        assert_eq!(c.host.root(), Path::new("/host"));
        assert_eq!(c.deny_log_interval, Duration::ZERO);
    }

    #[test]
    fn errors_name_the_flag_and_the_value() {
        let cases: [(&[&str], &[&str]); 6] = [
            (&["--policy", "a=10.0.0.300"], &["--policy", "10.0.0.300"]),
            (&["--dns-server", "nowhere"], &["--dns-server", "nowhere"]),
            (
                &["--ttl-floor", "10", "--ttl-ceiling", "9"],
                &["--ttl-floor 10", "--ttl-ceiling 9"],
            ),
            (&["--ttl-floor", "0"], &["--ttl-floor 0"]),
            (&["--pin-dir", "pins"], &["--pin-dir", "pins"]),
            (&["--host-root", "host"], &["--host-root", "host"]),
        ];
        for (flags, words) in cases {
            let e = Config::from_args(&args(flags)).unwrap_err();
            let text = chain(&e);
            for w in words {
                assert!(text.contains(w), "{flags:?}: `{w}` not in `{text}`");
            }
        }
    }

    #[test]
    fn a_broken_policy_file_is_refused_naming_the_file_and_the_token() {
        let path = std::env::temp_dir().join(format!("egress-config-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[[container]]\nname = \"x\"\nallow = [\"bad..name\"]\n",
        )
        .unwrap();
        let e = Config::from_args(&args(&["--policy-file", path.to_str().unwrap()])).unwrap_err();
        let text = chain(&e);
        std::fs::remove_file(&path).unwrap();
        assert!(text.contains("--policy-file"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("`bad..name`"), "{text}");
    }

    #[test]
    fn a_missing_policy_file_is_refused() {
        let e =
            Config::from_args(&args(&["--policy-file", "/nonexistent/egress.toml"])).unwrap_err();
        assert!(matches!(e, ConfigError::PolicyFile { .. }), "{e}");
    }
}
