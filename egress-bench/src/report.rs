//! The report: its parts ([`Section`]), the targets and where a run stands ([`Target`]), the
//! markdown of the whole run, and what it says about the machine.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

use serde_json::json;

use crate::stats;

/// One part of the report.
pub struct Section {
    pub title: String,
    pub intro: String,
    pub markdown: String,
    pub targets: Vec<Target>,
    pub raw: serde_json::Value,
}

/// A target of the issue and where this run stands (reported, never enforced).
pub struct Target {
    pub what: String,
    pub shown: String,
    pub verdict: &'static str,
}

impl Target {
    /// A ratio (with its confidence interval) that should be at least `bound`.
    pub fn ratio(what: String, r: &stats::Ratio, bound: f64) -> Self {
        Self {
            what,
            shown: if r.median.is_finite() {
                format!("{r}")
            } else {
                "n/a".into()
            },
            verdict: r.verdict_at_least(bound),
        }
    }

    /// Anything else, formatted by the caller.
    pub fn custom(what: String, shown: String, verdict: &'static str) -> Self {
        Self {
            what,
            shown,
            verdict,
        }
    }
}

pub fn render(
    quick: bool,
    rounds: usize,
    machine: &serde_json::Value,
    sections: &[(Section, Duration)],
    foreign: &BTreeSet<String>,
    total: Duration,
) -> String {
    let mut md = String::new();
    let m = |k: &str| machine[k].as_str().unwrap_or("?").to_owned();
    let _ = writeln!(
        md,
        "## egress-enforcer benchmarks ({}), {}\n",
        if quick { "quick run" } else { "full run" },
        m("date")
    );
    let _ = writeln!(
        md,
        "Machine: {}, {} CPUs, {} RAM, kernel {}, load average {} at the start; commit {}. \
         `cargo xtask bench{}` took {:.0} s ({} rounds per comparison).\n",
        m("cpu"),
        m("cpus"),
        m("memory"),
        m("kernel"),
        m("loadavg"),
        m("commit"),
        if quick { " --quick" } else { "" },
        total.as_secs_f64(),
        rounds,
    );
    let _ = writeln!(
        md,
        "This is a shared 2-core machine: absolute numbers are noisy; compare the ratios, which \
         are measured side by side within each round. Client, servers, proxy and the harness \
         share the same two cores.\n"
    );
    if !foreign.is_empty() {
        let _ = writeln!(
            md,
            "**Caveat:** programs of others were attached above the measured cgroups at some \
             point of this run ({}). They ran for both sides of every comparison, so the \
             \"no program\" side paid for them too; the ratios still compare like with like, \
             the absolute \"physical limit\" is lower than on an idle host.\n",
            foreign.iter().cloned().collect::<Vec<_>>().join("; ")
        );
    }
    if quick {
        let _ = writeln!(
            md,
            "A quick run is a smoke test of the harness: with so few rounds and short runs its \
             figures are rough and most verdicts below cannot be resolved. Use the full run \
             (`cargo xtask bench`) for numbers.\n"
        );
    }
    let all: Vec<&Target> = sections.iter().flat_map(|(s, _)| &s.targets).collect();
    if !all.is_empty() {
        let _ = writeln!(
            md,
            "### Targets (where this run stands; not enforced)\n\nRatios show the median and, in brackets, its 95 % confidence interval (fewer than \
             {} samples: their range). `met` and `missed` mean the whole interval is on that side \
             of the target; `… by the median` means the interval spans the target (or there are \
             too few samples), so only the median says which side this run is on.\n\n\
             | target | this run | status |\n|---|---:|---|",
            stats::MIN_FOR_CI
        );
        for t in all {
            let _ = writeln!(md, "| {} | {} | {} |", t.what, t.shown, t.verdict);
        }
        md.push('\n');
    }
    for (s, d) in sections {
        let _ = writeln!(
            md,
            "### {} ({:.0} s)\n\n{}\n\n{}",
            s.title,
            d.as_secs_f64(),
            s.intro,
            s.markdown
        );
    }
    md
}

/// What the report says about the machine.
pub fn machine(workspace: &Path) -> serde_json::Value {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let loadavg = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(workspace)
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    json!({
        "date": utc_now(),
        "cpu": cpu,
        "cpus": cpus.to_string(),
        "memory": format!("{:.0} GiB", mem_kib / 1024.0 / 1024.0),
        "kernel": kernel,
        "loadavg": loadavg,
        "commit": if dirty { format!("{commit} (with uncommitted changes)") } else { commit },
    })
}

/// `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
