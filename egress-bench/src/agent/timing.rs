//! Timing a container's policy into the agent's maps: from `docker run -d` to each stage
//! ([`time_to_policy`]), and a whole set of domain answers ([`wait_domains`]).

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use egress_common::container::ContainerId;
use egress_common::{
    container::ContainerKey,
    policy::{CgroupPolicy, FLAG_UNCLASSIFIED},
};
use egress_policy::policy::Rule;
use egress_tests::interrupt;

use super::{
    fleet::{self, Fleet, Launch},
    maps::{Maps, rule},
};
use crate::zone::{self, Zone};

/// What one `docker run -d` took until each stage was in the agent's maps.
#[derive(Debug, Default, serde::Serialize)]
pub struct PolicyTiming {
    pub docker_run_returned_ms: f64,
    pub container_entry_ms: f64,
    /// When the container's cgroup v2 directory (made by runc) was first seen.
    pub cgroup_created_ms: f64,
    /// Whether that first sight already showed the container's policy in the cgroup map (the
    /// `cgroup_mkdir` program gave it at creation), rather than `unclassified` or nothing.
    pub policed_at_creation: bool,
    pub cgroup_policed_ms: f64,
    pub rules_ms: f64,
}

/// When each stage of a new container was first seen in the maps.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    policy: Option<CgroupPolicy>,
    entry: Option<Instant>,
    cgroup: Option<Instant>,
    rules: Option<Instant>,
}

/// Starts a container whose label allows one address and one domain and watches the maps.
/// Other containers of the host may show up in the container map meanwhile (the agent knows
/// every container), so every new key is followed until `docker run` names ours.
pub fn time_to_policy(
    fleet: &mut Fleet,
    zone: &Zone,
    maps: &Maps,
    n: usize,
) -> Result<PolicyTiming> {
    let domain_ip = zone::container_addr(n);
    let fixed = rule(Ipv4Addr::new(127, 78, 255, 1), 443);
    let allow = format!("{fixed},{}:443", zone.container_domain(n));
    let before = maps.container_keys();
    let dirs = |attach: &Path| -> HashSet<String> {
        fs::read_dir(attach)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let attach = fleet.attach().to_owned();
    let dirs_before = dirs(&attach);
    // New cgroup directories: first sight, and the cgroup map's value for it at that moment.
    let mut new_dirs: HashMap<String, (Instant, Option<CgroupPolicy>)> = Default::default();
    let mut cmd = fleet.command(Launch::Detached, &fleet::allow(allow), &["sleep", "3600"]);
    let t0 = Instant::now();
    let mut child = Some(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("docker run -d")?,
    );
    let mut returned: Option<Instant> = None;
    let mut ours: Option<ContainerId> = None;
    let mut seen: HashMap<[u8; 64], Seen> = Default::default();
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let now = Instant::now();
        if let Some(c) = child.as_mut()
            && c.try_wait()?.is_some()
        {
            returned = Some(now);
            let out = child.take().expect("just checked").wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "docker run -d failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            ours = Some(
                s.parse()
                    .map_err(|e| anyhow::anyhow!("docker run -d printed {s:?}: {e}"))?,
            );
        }
        for d in dirs(&attach).difference(&dirs_before) {
            if new_dirs.contains_key(d) {
                continue;
            }
            if let Ok(m) = fs::metadata(attach.join(d)) {
                new_dirs.insert(d.clone(), (now, maps.cgroups.get(&m.ino(), 0).ok()));
            }
        }
        for k in maps.container_keys().difference(&before) {
            let Some(id) = ContainerId::from_key(&ContainerKey { id: *k }) else {
                continue;
            };
            if ours.is_some_and(|o| o != id) {
                continue;
            }
            let st = seen.entry(*k).or_default();
            // Only policed containers have an entry in EG_CONTAINERS.
            if st.policy.is_none()
                && let Some(p) = maps.container(&id)
            {
                st.policy = Some(p);
                st.entry = Some(now);
            }
            let Some(p) = st.policy else { continue };
            if st.cgroup.is_none()
                && let Ok(m) = fs::metadata(fleet.cgroup_of(&id))
                && let Ok(v) = maps.cgroups.get(&m.ino(), 0)
                && v.policy_id == p.policy_id
                && v.flags & FLAG_UNCLASSIFIED == 0
            {
                st.cgroup = Some(now);
            }
            if st.rules.is_none()
                && maps.has_rule(p.policy_id, &rule(domain_ip, 443))
                && maps.has_rule(p.policy_id, &fixed)
            {
                st.rules = Some(now);
            }
        }
        if let (Some(r), Some(id)) = (returned, ours)
            && let Some(st) = seen.get(&id.key().id)
            && let (Some(e), Some(c), Some(rl)) = (st.entry, st.cgroup, st.rules)
            && let Some((created, first)) = new_dirs.get(id.as_str())
        {
            let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1e3;
            let policy = st.policy.map(|p| p.policy_id);
            return Ok(PolicyTiming {
                docker_run_returned_ms: ms(r),
                container_entry_ms: ms(e),
                cgroup_created_ms: ms(*created),
                policed_at_creation: first.is_some_and(|v| {
                    Some(v.policy_id) == policy && v.flags & FLAG_UNCLASSIFIED == 0
                }),
                cgroup_policed_ms: ms(c),
                rules_ms: ms(rl),
            });
        }
        interrupt::check()?;
        if now > deadline {
            if let Some(mut c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
            let st = ours.and_then(|id| seen.get(&id.key().id).copied());
            bail!("the container's policy was not complete in the maps after 60 s: {st:?}");
        }
        thread::sleep(Duration::from_micros(500));
    }
}

/// The refresh container's policy once all `domains` answers of `version` are in the map
/// (with the port 443 rule): when that was seen, and when the bench's DNS server's query count
/// (of any name) was first seen above `queries` and when it last grew. Fails after `timeout`.
pub fn wait_domains(
    maps: &Maps,
    zone: &Zone,
    id: &ContainerId,
    (domains, version): (usize, u8),
    mut queries: usize,
    timeout: Duration,
) -> Result<Answered> {
    let deadline = Instant::now() + timeout;
    let rules: Vec<Rule> = (0..domains)
        .map(|n| rule(zone::refresh_addr(n, version), 443))
        .collect();
    let mut next = 0;
    let (mut first_query, mut last_query) = (None, None);
    loop {
        let asked = zone.total_queries();
        if asked != queries {
            queries = asked;
            let now = Instant::now();
            first_query.get_or_insert(now);
            last_query = Some(now);
        }
        if let Some(p) = maps.container(id) {
            while next < rules.len() && maps.has_rule(p.policy_id, &rules[next]) {
                next += 1;
            }
            if next == rules.len() {
                return Ok(Answered {
                    done: Instant::now(),
                    first_query,
                    last_query,
                });
            }
        }
        interrupt::check()?;
        if Instant::now() > deadline {
            bail!(
                "only {next} of {domains} domain answers (version {version}) reached the map within {timeout:?}"
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// What [`wait_domains`] saw.
pub struct Answered {
    pub done: Instant,
    /// The first and the last change of the DNS server's query count (polled with the maps).
    pub first_query: Option<Instant>,
    pub last_query: Option<Instant>,
}
