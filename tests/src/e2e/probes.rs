//! What a client container's connects and sends got: the `sh` script a client runs
//! ([`probe_script`] of [`Check`]s) and the `PROBE` lines it prints, parsed ([`Probe`]).

use std::{collections::BTreeMap, time::Duration};

use crate::docker::Docker;

/// A denial must come at once: well under the clients' 3 s connect timeout.
pub const IMMEDIATE: Duration = Duration::from_millis(1000);
/// What busybox prints for EPERM.
pub const EPERM_TEXT: &str = "Operation not permitted";

/// One attempt of a client container, parsed from its `PROBE` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub tag: String,
    pub rc: i32,
    /// Measured inside the container (10 ms resolution, from /proc/uptime).
    pub elapsed: Duration,
    /// What the command printed (stdout and stderr, on one line).
    pub out: String,
}

/// What the kernel did with a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// TCP: connected and read the target's `ok ...`. (A UDP probe that got through shows
    /// as `Failed` with the sink's `tftp: server error`; see [`super::UdpSink::received`].)
    Connected,
    /// EPERM.
    Denied,
    /// Anything else (timeout, refused, ...), with the text.
    Failed(String),
}

impl Probe {
    pub fn outcome(&self) -> Outcome {
        if self.out.contains(EPERM_TEXT) {
            Outcome::Denied
        } else if self.rc == 0 && self.out.split_whitespace().any(|w| w == "ok") {
            Outcome::Connected
        } else {
            Outcome::Failed(format!("rc={} out={:?}", self.rc, self.out))
        }
    }

    /// Panics unless the probe was denied with EPERM at once.
    #[track_caller]
    pub fn assert_denied(&self, context: &str) {
        assert_eq!(
            self.outcome(),
            Outcome::Denied,
            "{context}: `{}` should be denied with EPERM: {self:?}",
            self.tag
        );
        assert!(
            self.elapsed < IMMEDIATE,
            "{context}: the denial of `{}` took {:?} (should be immediate): {self:?}",
            self.tag,
            self.elapsed
        );
    }

    /// Panics unless the name of the probe did not resolve (busybox: `bad address`), at once:
    /// what a name the policy does not allow gets from the agent's DNS proxy.
    #[track_caller]
    pub fn assert_unresolved(&self, context: &str) {
        assert!(
            self.out.contains("bad address"),
            "{context}: the name of `{}` should not resolve: {self:?}",
            self.tag
        );
        assert!(
            self.elapsed < IMMEDIATE,
            "{context}: the failed lookup of `{}` took {:?}: {self:?}",
            self.tag,
            self.elapsed
        );
    }

    /// True if the TCP probe read the answer of the target of this role (`ok <role>`).
    pub fn reached(&self, role: &str) -> bool {
        self.rc == 0 && self.out.trim() == format!("ok {role}")
    }

    /// Panics unless the TCP probe connected and read `ok ...`.
    #[track_caller]
    pub fn assert_connected(&self, context: &str) {
        assert_eq!(
            self.outcome(),
            Outcome::Connected,
            "{context}: `{}` should connect: {self:?}",
            self.tag
        );
    }
}

/// A `sh` prelude that waits (at most 3 s) until the container's resolver port is no longer
/// refused with EPERM: the agent's DNS proxy for a container opens once the container runs, so
/// a client that looks names up at once could race it. It sends no DNS question (a TCP
/// connect to the resolv.conf server's port 53, closed at once). A container denied
/// everything waits the full 3 s.
pub const WAIT_FOR_DNS: &str = "ns=$(sed -n 's/^nameserver //p' /etc/resolv.conf | head -n 1); \
     i=0; while [ $i -lt 30 ] && timeout 1 nc $ns 53 </dev/null 2>&1 | grep -q 'not permitted'; \
     do usleep 100000; i=$((i+1)); done\n";

/// One attempt a client makes.
#[derive(Debug, Clone)]
pub enum Check {
    /// `nc` to HOST:PORT (HOST may be a name); the target answers `ok`.
    Tcp {
        tag: String,
        host: String,
        port: u16,
    },
    /// One UDP datagram to HOST:PORT (busybox `tftp`, whose request carries `tag` as the file
    /// name, so that a [`super::UdpSink`] can tell whose it is).
    Udp {
        tag: String,
        host: String,
        port: u16,
    },
}

impl Check {
    pub fn tcp(tag: &str, host: impl ToString, port: u16) -> Self {
        Check::Tcp {
            tag: tag.to_owned(),
            host: host.to_string(),
            port,
        }
    }

    pub fn udp(tag: &str, host: impl ToString, port: u16) -> Self {
        Check::Udp {
            tag: tag.to_owned(),
            host: host.to_string(),
            port,
        }
    }
}

/// A `sh` script that runs the checks one after the other and prints one line per check:
/// `PROBE <tag> <rc> <uptime before> <uptime after> <output...>`.
pub fn probe_script(checks: &[Check]) -> String {
    let mut s = String::from(
        "p() { tag=$1; shift; t0=$(cut -d' ' -f1 /proc/uptime); out=$(\"$@\" 2>&1 </dev/null); \
         rc=$?; t1=$(cut -d' ' -f1 /proc/uptime); echo \"PROBE $tag $rc $t0 $t1 $(echo $out)\"; }\n",
    );
    for c in checks {
        match c {
            Check::Tcp { tag, host, port } => {
                s.push_str(&format!("p {tag} timeout 5 nc -w 3 {host} {port}\n"))
            }
            Check::Udp { tag, host, port } => s.push_str(&format!(
                "p {tag} timeout 2 tftp -g -r {tag} -l /tmp/{tag} {host} {port}\n"
            )),
        }
    }
    s
}

/// The `PROBE` lines of a client's output, by tag.
pub fn parse_probes(output: &str) -> BTreeMap<String, Probe> {
    let mut out = BTreeMap::new();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("PROBE ") else {
            continue;
        };
        let mut w = rest.splitn(5, ' ');
        let (Some(tag), Some(rc), Some(t0), Some(t1)) = (w.next(), w.next(), w.next(), w.next())
        else {
            continue;
        };
        let secs = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
        let d = secs(t1) - secs(t0);
        let elapsed = if d.is_finite() && d >= 0.0 {
            Duration::from_secs_f64(d)
        } else {
            Duration::MAX
        };
        out.insert(
            tag.to_owned(),
            Probe {
                tag: tag.to_owned(),
                rc: rc.parse().unwrap_or(-1),
                elapsed,
                out: w.next().unwrap_or_default().trim().to_owned(),
            },
        );
    }
    out
}

/// The probes of `output`, one per check, in the checks' order; panics if one is missing.
#[track_caller]
pub fn probes_of(output: &str, checks: &[Check]) -> Vec<Probe> {
    let parsed = parse_probes(output);
    checks
        .iter()
        .map(|c| {
            let tag = match c {
                Check::Tcp { tag, .. } | Check::Udp { tag, .. } => tag,
            };
            parsed
                .get(tag)
                .cloned()
                .unwrap_or_else(|| panic!("no PROBE line for `{tag}` in the output:\n{output}"))
        })
        .collect()
}

/// Runs the checks in a running container (`docker exec`): new processes in its cgroup.
#[track_caller]
pub fn exec_probes(docker: &Docker, container: &str, checks: &[Check]) -> Vec<Probe> {
    let out = docker.output(&["exec", container, "sh", "-c", &probe_script(checks)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    probes_of(&text, checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_lines() {
        let out = "noise\nPROBE a 0 100.10 100.12 ok\nPROBE b 1 5.00 5.01 nc: can't connect to \
                   remote host (10.0.0.1): Operation not permitted\n";
        let p = parse_probes(out);
        assert_eq!(p["a"].outcome(), Outcome::Connected);
        assert!(p["a"].elapsed >= Duration::from_millis(19));
        assert_eq!(p["b"].outcome(), Outcome::Denied);
        assert_eq!(p["b"].rc, 1);
    }
}
