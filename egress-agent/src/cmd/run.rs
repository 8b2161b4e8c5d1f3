//! `egress-agent run`: load, apply the static policies, log events until told to stop.

use std::{collections::HashMap, future::Future, path::PathBuf};

use anyhow::Context as _;
use tokio::sync::broadcast::error::RecvError;
use tracing::{error, info, warn};

use crate::{
    cli::RunArgs,
    enforcer::{Enforcer, EnforcerConfig},
    events::EgressEvent,
    owner,
    policy::{EntryError, Mode, Policy, parse_ip_entries, parse_mode},
    sys::{cgroup, mounts},
};

/// A `--policy` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub cgroup: PathBuf,
    pub policy: Policy,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("--policy `{spec}`: expected CGROUP[@MODE]=ENTRY[,ENTRY...]")]
    Shape { spec: String },
    #[error("--policy `{spec}`: {source}")]
    Mode {
        spec: String,
        source: crate::policy::UnknownMode,
    },
    #[error("--policy `{spec}`: {source}")]
    Entry { spec: String, source: EntryError },
}

/// Parses `CGROUP[@MODE]=ENTRY[,ENTRY...]`.
pub fn parse_policy_spec(spec: &str) -> Result<PolicySpec, SpecError> {
    let (left, entries) = spec.split_once('=').ok_or_else(|| SpecError::Shape {
        spec: spec.to_owned(),
    })?;
    let (cg, mode) = match left.rsplit_once('@') {
        Some((cg, m)) => (
            cg,
            parse_mode(m).map_err(|source| SpecError::Mode {
                spec: spec.to_owned(),
                source,
            })?,
        ),
        None => (left, Mode::Enforce),
    };
    if cg.trim().is_empty() {
        return Err(SpecError::Shape {
            spec: spec.to_owned(),
        });
    }
    let rules = parse_ip_entries(entries).map_err(|source| SpecError::Entry {
        spec: spec.to_owned(),
        source,
    })?;
    Ok(PolicySpec {
        cgroup: PathBuf::from(cg.trim()),
        policy: Policy::new(mode, rules),
    })
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(args: RunArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let specs = args
        .policies
        .iter()
        .map(|s| parse_policy_spec(s))
        .collect::<Result<Vec<_>, _>>()?;
    let attach_cgroup = match args.attach_cgroup {
        Some(p) => p,
        None => mounts::cgroup2_mount()?,
    };
    let cfg = EnforcerConfig {
        pin_dir: args.pin.pin_dir.clone(),
        attach_cgroup,
    };
    let (enforcer, report) = Enforcer::open(&cfg).context("starting the enforcer")?;
    if let Some(why) = &report.replaced {
        warn!(reason = %why, "replaced an incompatible pinned state");
    }
    let (handle, task) = owner::spawn(enforcer);

    let mut names: HashMap<u64, String> = HashMap::new();
    for spec in specs {
        let path = cgroup::resolve(&spec.cgroup)
            .with_context(|| format!("--policy for cgroup {}", spec.cgroup.display()))?;
        let id = cgroup::id_of(&path)?;
        handle
            .set_policy(id, spec.policy.clone())
            .await
            .with_context(|| format!("applying the policy of cgroup {}", path.display()))?;
        info!(cgroup = %path.display(), cgroup_id = id, mode = crate::policy::mode_name(spec.policy.mode),
            rules = spec.policy.rules.len(), "policy applied");
        names.insert(id, path.display().to_string());
    }

    let mut events = handle.subscribe();
    let logger = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => log_event(&ev, names.get(&ev.cgroup_id).map(String::as_str)),
                Err(RecvError::Lagged(n)) => {
                    warn!(
                        dropped = n,
                        "event log fell behind; events dropped (counters still have them)"
                    )
                }
                Err(RecvError::Closed) => break,
            }
        }
    });

    handle.release_previous().await?;
    let policed = handle.policies().await?.len();
    info!(
        pin_dir = %cfg.pin_dir.display(),
        attach_cgroup = %report.attach_cgroup.display(),
        reused_pinned_state = report.reused,
        policed_cgroups = policed,
        "ready"
    );

    shutdown.await;
    info!(
        "stopping; programs stay attached and maps pinned (enforcement continues). `egress-agent cleanup` removes them"
    );
    drop(handle);
    if let Err(e) = task.await {
        error!("enforcer task: {e}");
    }
    let _ = logger.await;
    Ok(())
}

fn log_event(ev: &EgressEvent, cgroup: Option<&str>) {
    let cgroup = cgroup.unwrap_or("");
    match ev.verdict {
        egress_common::event::Verdict::Denied => warn!(
            verdict = ev.verdict_name(),
            cgroup_id = ev.cgroup_id,
            cgroup,
            pid = ev.pid,
            comm = %ev.comm,
            protocol = %ev.protocol_name(),
            destination = %ev.destination(),
            reason = ev.reason_name(),
            "egress denied"
        ),
        egress_common::event::Verdict::Audited => info!(
            verdict = ev.verdict_name(),
            cgroup_id = ev.cgroup_id,
            cgroup,
            pid = ev.pid,
            comm = %ev.comm,
            protocol = %ev.protocol_name(),
            destination = %ev.destination(),
            reason = ev.reason_name(),
            "egress would be denied (audit mode)"
        ),
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, so a
/// signal that arrives while the agent starts up is not lost (nor fatal).
pub fn signals() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s = parse_policy_spec("test/a@audit=127.0.0.2,10.0.0.0/8:53").unwrap();
        assert_eq!(s.cgroup, PathBuf::from("test/a"));
        assert_eq!(s.policy.mode, Mode::Audit);
        assert_eq!(s.policy.rules.len(), 2);
        let s = parse_policy_spec("/sys/fs/cgroup/x=").unwrap();
        assert_eq!(s.policy, Policy::deny_all());
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!(matches!(
            parse_policy_spec("nocgroup"),
            Err(SpecError::Shape { .. })
        ));
        assert!(matches!(
            parse_policy_spec("=10.0.0.1"),
            Err(SpecError::Shape { .. })
        ));
        let e = parse_policy_spec("a@block=10.0.0.1").unwrap_err();
        assert!(e.to_string().contains("block"), "{e}");
        let e = parse_policy_spec("a=10.0.0.1,10.0.0.300").unwrap_err();
        assert!(e.to_string().contains("10.0.0.300"), "{e}");
    }
}
