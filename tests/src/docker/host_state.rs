//! What a dockerd changes on the host, and undoing it: a snapshot of the iptables rules, the
//! network links, the mounts and the forwarding sysctls taken before the daemon starts, and the
//! removal of what is new and Docker's once it has stopped. Only changes that were not there
//! before and that are Docker's are removed, so the machine stays as it was for the next run.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::{command::run_ok, process};

/// What the host looked like before dockerd started, and the daemon that changed it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HostState {
    pub dockerd_pid: i32,
    pub containerd_pid: Option<i32>,
    /// `iptables`/`ip6tables` → table → `-S` lines.
    rules: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    links: Vec<String>,
    mounts: Vec<PathBuf>,
    /// /proc/sys paths and their values, restored in this order.
    sysctls: Vec<(PathBuf, String)>,
}

const IPTABLES: &[&str] = &["iptables", "ip6tables"];
const TABLES: &[&str] = &["filter", "nat", "mangle", "raw"];
const SYSCTLS: &[&str] = &[
    // Writing ip_forward resets conf/*/forwarding and accept_redirects too: it goes first.
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv4/conf/all/forwarding",
    "/proc/sys/net/ipv4/conf/default/forwarding",
    "/proc/sys/net/ipv4/conf/all/accept_redirects",
    "/proc/sys/net/ipv6/conf/all/forwarding",
    "/proc/sys/net/ipv6/conf/default/forwarding",
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];
/// Where dockerd and its containerd mount things.
const MOUNT_PREFIXES: &[&str] = &[
    "/var/lib/docker",
    "/var/lib/containerd",
    "/run/docker",
    "/var/run/docker",
    "/run/containerd",
    "/var/run/containerd",
];
const TIMEOUT: Duration = Duration::from_secs(30);

impl HostState {
    pub fn snapshot() -> Self {
        let mut rules = BTreeMap::new();
        for cmd in IPTABLES {
            let mut tables = BTreeMap::new();
            for table in TABLES {
                if let Some(lines) = iptables_rules(cmd, table) {
                    tables.insert((*table).to_owned(), lines);
                }
            }
            rules.insert((*cmd).to_owned(), tables);
        }
        Self {
            dockerd_pid: 0,
            containerd_pid: None,
            rules,
            links: links(),
            mounts: mount_points(),
            sysctls: SYSCTLS
                .iter()
                .filter_map(|p| {
                    let v = fs::read_to_string(p).ok()?;
                    Some((PathBuf::from(p), v.trim().to_owned()))
                })
                .collect(),
        }
    }

    /// Undoes Docker's changes made since the snapshot (the daemon must be stopped); keeps
    /// going on errors and reports them all at the end.
    pub fn undo(&self) -> Result<()> {
        let mut errors = Vec::new();
        if let Some(pid) = self.containerd_pid
            && let Err(e) = process::terminate(pid, "containerd", Duration::from_secs(10))
        {
            errors.push(format!("{e:#}"));
        }

        let new_mounts: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|m| !self.mounts.contains(m))
            .filter(|m| MOUNT_PREFIXES.iter().any(|p| m.starts_with(p)))
            .collect();
        for m in deepest_first(new_mounts) {
            if let Err(e) = umount_lazy(&m) {
                errors.push(format!("umount {}: {e}", m.display()));
            }
        }

        for link in links() {
            if !self.links.contains(&link)
                && is_docker_bridge(&link)
                && let Err(e) = run_ok(Command::new("ip").args(["link", "del", &link]), TIMEOUT)
            {
                errors.push(format!("{e:#}"));
            }
        }

        for (cmd, tables) in &self.rules {
            for (table, before) in tables {
                let Some(now) = iptables_rules(cmd, table) else {
                    continue;
                };
                for args in iptables_undo(before, &now) {
                    let mut c = Command::new(cmd);
                    c.args(["-w", "-t", table]).args(&args);
                    if let Err(e) = run_ok(&mut c, TIMEOUT) {
                        errors.push(format!("{e:#}"));
                    }
                }
            }
        }

        for (path, value) in &self.sysctls {
            let now = fs::read_to_string(path).unwrap_or_default();
            if now.trim() != value
                && let Err(e) = fs::write(path, format!("{value}\n"))
            {
                errors.push(format!("restoring {} to {value}: {e}", path.display()));
            }
        }

        if errors.is_empty() {
            Ok(())
        } else {
            bail!("cleaning up after dockerd: {}", errors.join("; "))
        }
    }
}

/// The mount points of this process's mount namespace.
pub fn mount_points() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    egress_agent::sys::mounts::parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

/// Unmounts every mount point at or below `dir`, deepest first (lazily); errors are ignored.
pub fn umount_below(dir: &Path) {
    let below = mount_points()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    for p in deepest_first(below) {
        let _ = umount_lazy(&p);
    }
}

fn deepest_first(mut points: Vec<PathBuf>) -> Vec<PathBuf> {
    points.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    points
}

/// Unmounts `at` lazily (MNT_DETACH).
fn umount_lazy(at: &Path) -> io::Result<()> {
    let target = CString::new(at.as_os_str().as_bytes())?;
    // SAFETY: target is a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn iptables_rules(cmd: &str, table: &str) -> Option<Vec<String>> {
    let out = Command::new(cmd)
        .args(["-w", "-t", table, "-S"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

/// Docker's chains, rules that use them or its bridges, and the policy it sets.
fn is_dockers(rule: &str) -> bool {
    rule.contains("DOCKER")
        || split_words(rule)
            .iter()
            .any(|w| w == "docker0" || is_docker_bridge(w))
}

fn is_docker_bridge(name: &str) -> bool {
    name == "docker0"
        || name
            .strip_prefix("br-")
            .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The iptables arguments (after `-t TABLE`) that turn the `-S` listing `now` back into
/// `before` as far as Docker's changes go: delete Docker's new rules (newest first), then
/// flush and delete its new chains, then restore the built-in chains' policies.
fn iptables_undo(before: &[String], now: &[String]) -> Vec<Vec<String>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in before {
        *seen.entry(l.as_str()).or_default() += 1;
    }
    let mut new_rules = Vec::new();
    let mut new_chains = Vec::new();
    for l in now {
        if let Some(n) = seen.get_mut(l.as_str())
            && *n > 0
        {
            *n -= 1;
            continue;
        }
        let words = split_words(l);
        match words.first().map(String::as_str) {
            Some("-A") if is_dockers(l) => {
                let mut w = words;
                w[0] = "-D".to_owned();
                new_rules.push(w);
            }
            Some("-N") if words.len() == 2 && words[1].starts_with("DOCKER") => {
                new_chains.push(words[1].clone());
            }
            _ => {}
        }
    }
    let mut out: Vec<Vec<String>> = new_rules.into_iter().rev().collect();
    for c in &new_chains {
        out.push(vec!["-F".to_owned(), c.clone()]);
    }
    for c in &new_chains {
        out.push(vec!["-X".to_owned(), c.clone()]);
    }
    let policy = |lines: &[String], chain: &str| {
        lines.iter().find_map(|l| {
            let w = split_words(l);
            (w.len() == 3 && w[0] == "-P" && w[1] == chain).then(|| w[2].clone())
        })
    };
    for l in before {
        let w = split_words(l);
        if w.len() == 3 && w[0] == "-P" {
            let was = &w[2];
            if policy(now, &w[1]).is_some_and(|p| &p != was) {
                out.push(vec!["-P".to_owned(), w[1].clone(), was.clone()]);
            }
        }
    }
    out
}

/// Splits an `iptables -S` line into words; double quotes group, backslash escapes.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Network interface names (`ip -o link`).
fn links() -> Vec<String> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show"])
        .stdin(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(link_name)
        .collect()
}

/// `5: veth1a2b@if4: <...` → `veth1a2b`.
fn link_name(line: &str) -> Option<String> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_owned).collect()
    }

    #[test]
    fn undoes_only_dockers_iptables_changes() {
        let before = lines(
            "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-A INPUT -i lo -j ACCEPT\n",
        );
        let now = lines(
            "-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n-N DOCKER\n-N DOCKER-USER\n-N MINE\n\
             -A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp --dport 22 -j ACCEPT\n\
             -A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j DOCKER\n\
             -A FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT\n\
             -A DOCKER-USER -j RETURN\n",
        );
        let undo: Vec<String> = iptables_undo(&before, &now)
            .into_iter()
            .map(|w| w.join(" "))
            .collect();
        assert_eq!(
            undo,
            [
                "-D DOCKER-USER -j RETURN",
                "-D FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT",
                "-D FORWARD -o docker0 -j DOCKER",
                "-D FORWARD -j DOCKER-USER",
                "-F DOCKER",
                "-F DOCKER-USER",
                "-X DOCKER",
                "-X DOCKER-USER",
                "-P FORWARD ACCEPT",
            ]
        );
    }

    #[test]
    fn keeps_docker_rules_that_were_there_before() {
        let before = lines("-P FORWARD DROP\n-N DOCKER\n-A FORWARD -o docker0 -j DOCKER\n");
        let now = lines(
            "-P FORWARD DROP\n-N DOCKER\n-A FORWARD -o docker0 -j DOCKER\n-A FORWARD -o docker0 -j DOCKER\n",
        );
        let undo = iptables_undo(&before, &now);
        assert_eq!(undo, vec![split_words("-D FORWARD -o docker0 -j DOCKER")]);
    }

    #[test]
    fn splits_quoted_words() {
        assert_eq!(
            split_words(r#"-A X -m comment --comment "a b \"c\"" -j ACCEPT"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                r#"a b "c""#,
                "-j",
                "ACCEPT"
            ]
        );
    }

    #[test]
    fn recognises_docker_bridges_and_link_names() {
        assert!(is_docker_bridge("docker0"));
        assert!(is_docker_bridge("br-0123456789ab"));
        assert!(!is_docker_bridge("br-lan"));
        assert!(!is_docker_bridge("eth0"));
        assert_eq!(
            link_name("7: veth1a2b@if6: <BROADCAST> mtu 1500").as_deref(),
            Some("veth1a2b")
        );
        assert_eq!(link_name("1: lo: <LOOPBACK,UP>").as_deref(), Some("lo"));
    }
}
