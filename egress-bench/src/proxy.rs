//! Part 2: against the blog's approach, one nginx `stream` proxy per allowed destination. The
//! same clients (wrk for HTTP, iperf3 for one bulk stream) run
//!
//! - directly to the upstream from a cgroup without any program (the physical limit),
//! - directly to the upstream from the policed cgroup (the enforcer allows the upstream),
//! - through an nginx `stream` proxy configured like the blog's (`worker_processes 8`,
//!   `worker_connections 1024`, `stream { server { listen ...; proxy_pass upstream; } }`),
//!   from the cgroup without any program (the blog polices with networks, not programs).
//!
//! The unloaded connect + request + close cycle is measured with the paired client of part 1
//! (`egress-bench client http-cycle`): batches alternate between direct without a program and
//! the path compared, so the ratio is taken in the same moments of this shared machine (wrk's
//! runs of seconds, one path after the other, cannot resolve a few per cent here).
//!
//! The upstream is a second nginx serving a small static file over HTTP, and an iperf3 server.
//! Every process runs with its own configuration, pid and log files under `target/bench`, never
//! as a system service, and listens on 127.77.1.0/24 only. On this machine all of them share
//! the same two cores with the client; in the blog's setup the proxy is also a container
//! behind a Docker bridge, which costs more than the loopback hop measured here.

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;

use egress_tests::{
    command::run_captured,
    daemon::{Daemon, wait_listening},
    interrupt,
    placement::Placement,
    tools,
};

use crate::{
    client::{ClientReport, Op, SideReport},
    connect::{Load, SideSpec, run_client},
    lab::EnforcerLab,
    note,
    report::{Section, Target},
    stats::{self, Ratio},
};

const UPSTREAM: Ipv4Addr = Ipv4Addr::new(127, 77, 1, 1);
const PROXY: Ipv4Addr = Ipv4Addr::new(127, 77, 1, 2);
const HTTP_PORT: u16 = 18080;
const IPERF_PORT: u16 = 15201;
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
/// Size of the static file each request fetches.
const SMALL_FILE_BYTES: usize = 256;
/// Connections wrk keeps open (one thread).
const WRK_CONNECTIONS: usize = 8;

#[derive(Debug, Clone)]
pub struct Opts {
    pub rounds: usize,
    pub seconds: u64,
    /// The paired unloaded HTTP cycles: batches per side, requests per batch.
    pub cycle: Load,
}

pub fn check_tools() -> Result<()> {
    tools::require("nginx", "nginx", "the nginx proxy comparison")?;
    if !Path::new(STREAM_MODULE).exists() {
        bail!(
            "{STREAM_MODULE} is missing; the nginx proxy comparison needs nginx's stream module: \
             apt-get install -y --no-install-recommends libnginx-mod-stream"
        );
    }
    tools::require("wrk", "wrk", "the nginx proxy comparison")?;
    tools::require("iperf3", "iperf3", "the nginx proxy comparison")?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path3 {
    Direct,
    /// The same as `Direct` from a second cgroup: what noise alone does to a ratio.
    Control,
    Enforcer,
    Proxy,
}

impl Path3 {
    const ALL: [Path3; 4] = [Path3::Direct, Path3::Control, Path3::Enforcer, Path3::Proxy];

    fn label(self) -> &'static str {
        match self {
            Path3::Direct => "direct, no program",
            Path3::Control => "direct, no program (control)",
            Path3::Enforcer => "direct, enforcer",
            Path3::Proxy => "via nginx stream proxy",
        }
    }

    fn target(self) -> Ipv4Addr {
        match self {
            Path3::Proxy => PROXY,
            _ => UPSTREAM,
        }
    }
}

/// What one wrk run reported.
#[derive(Debug, Clone, Default, Serialize)]
struct Wrk {
    requests_per_s: f64,
    p50_ns: f64,
    p99_ns: f64,
    errors: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Round {
    close: Wrk,
    keepalive: Wrk,
    bulk_bytes_per_s: f64,
}

fn upstream_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# The upstream of the proxy benchmark (made by `cargo xtask bench`).
worker_processes 1;
daemon off;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    default_type text/plain;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen {UPSTREAM}:{HTTP_PORT} backlog=4096;
        root {d}/www;
    }}
}}
"
    )
}

/// The blog's proxy configuration (its `nginx_proxy_*.conf`: 8 workers, 1024 connections,
/// one `stream` server per port), on loopback, with its files under `dir`. The listen backlog
/// is raised to the upstream's so that neither side drops SYNs.
fn proxy_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# The blog's per-domain stream proxy (made by `cargo xtask bench`).
load_module {STREAM_MODULE};
worker_processes 8;
daemon off;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
stream {{
    server {{
        listen {PROXY}:{HTTP_PORT} backlog=4096;
        proxy_pass {UPSTREAM}:{HTTP_PORT};
    }}
    server {{
        listen {PROXY}:{IPERF_PORT} backlog=4096;
        proxy_pass {UPSTREAM}:{IPERF_PORT};
    }}
}}
"
    )
}

fn start_nginx(name: &str, dir: &Path, conf: &str) -> Result<Daemon> {
    for sub in ["tmp", "www"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"));
    Daemon::spawn(name, &mut cmd, &dir.join("stdout.log"))
}

/// Parses `123.45us`, `1.20ms`, `2.00s`, `1.5m` into nanoseconds.
fn parse_wrk_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    Some(v * mult)
}

fn parse_wrk(out: &str) -> Result<Wrk> {
    let mut w = Wrk {
        requests_per_s: f64::NAN,
        p50_ns: f64::NAN,
        p99_ns: f64::NAN,
        errors: 0,
    };
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.requests_per_s = v.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = t.strip_prefix("50%") {
            w.p50_ns = parse_wrk_duration(v).unwrap_or(f64::NAN);
        } else if let Some(v) = t.strip_prefix("99%") {
            w.p99_ns = parse_wrk_duration(v).unwrap_or(f64::NAN);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            w.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>().unwrap_or(1);
        }
    }
    if !w.requests_per_s.is_finite() || !w.p50_ns.is_finite() {
        bail!("could not read wrk's output: {out}");
    }
    Ok(w)
}

struct Bench<'a> {
    cgroup_free: PathBuf,
    cgroup_control: PathBuf,
    cgroup_policed: PathBuf,
    o: &'a Opts,
}

impl Bench<'_> {
    /// The cgroup a path's client runs in.
    fn cgroup(&self, p: Path3) -> &PathBuf {
        match p {
            Path3::Enforcer => &self.cgroup_policed,
            Path3::Control => &self.cgroup_control,
            _ => &self.cgroup_free,
        }
    }

    fn place(&self, p: Path3) -> Placement {
        Placement::cgroup(self.cgroup(p))
    }

    fn wrk(&self, p: Path3, close: bool) -> Result<Wrk> {
        let mut cmd = self.place(p).command("wrk");
        cmd.args(["-t1", &format!("-c{WRK_CONNECTIONS}")])
            .arg(format!("-d{}s", self.o.seconds))
            .arg("--latency");
        if close {
            cmd.args(["-H", "Connection: close"]);
        }
        cmd.arg(format!("http://{}:{HTTP_PORT}/small.txt", p.target()));
        let out = run_captured(&mut cmd, Duration::from_secs(self.o.seconds + 60))?;
        if !out.status.success() {
            bail!("wrk failed ({}): {}{}", out.status, out.stderr, out.stdout);
        }
        parse_wrk(&out.stdout)
    }

    fn iperf(&self, p: Path3) -> Result<f64> {
        let mut cmd = self.place(p).command("iperf3");
        cmd.arg("-c")
            .arg(p.target().to_string())
            .args(["-p", &IPERF_PORT.to_string(), "-J", "-t"])
            .arg(self.o.seconds.to_string());
        let out = run_captured(&mut cmd, Duration::from_secs(self.o.seconds + 60))?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("iperf3 printed no JSON: {}{}", out.stdout, out.stderr))?;
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            bail!("iperf3 through {}: {e}", p.label());
        }
        let bits = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .with_context(|| format!("no end.sum_received in iperf3's output: {}", out.stdout))?;
        Ok(bits / 8.0)
    }
}

/// The paired unloaded cycles of one round: each path against direct without a program.
fn cycle_round(b: &Bench, exe: &Path, o: &Opts) -> Result<[ClientReport; 3]> {
    let spec = |p: Path3| SideSpec {
        cgroup: b.cgroup(p).clone(),
        netns: None,
        dst: SocketAddrV4::new(p.target(), HTTP_PORT),
    };
    let direct = spec(Path3::Direct);
    let run = |p: Path3| run_client(exe, Op::HttpCycle, &direct, Some(&spec(p)), o.cycle);
    Ok([
        run(Path3::Control)?,
        run(Path3::Enforcer)?,
        run(Path3::Proxy)?,
    ])
}

/// The markdown of the paired cycles: rate and latency per path, ratios to direct.
fn cycle_table(cycles: &[[ClientReport; 3]], o: &Opts) -> (String, Vec<Target>) {
    let med = |xs: Vec<f64>| stats::median(&xs);
    let direct: Vec<&SideReport> = cycles.iter().flatten().map(|r| &r.a).collect();
    let mut md = format!(
        "Unloaded cycle, paired: one client process does `connect`, `GET /small.txt`, reads the \
         response, `close` (RST), one request at a time, alternating batches of {} between \
         direct without a program (A) and the path (B) in the order A B B A ({} batches per \
         side per run, one run per path and round); `× direct` is the median of the per-pair \
         rate ratios B/A with its 95 % confidence interval.\n\n\
         | path | cycles/s | × direct | cycle p50 | cycle p99 |\n|---|---:|---:|---:|---:|\n\
         | direct, no program (side A of every run) | {} | 1 | {} | {} |\n",
        o.cycle.batch,
        o.cycle.batches,
        stats::int(med(direct.iter().map(|s| s.rate()).collect())),
        stats::dur_ns(med(direct.iter().map(|s| s.p50_ns as f64).collect())),
        stats::dur_ns(med(direct.iter().map(|s| s.p99_ns as f64).collect())),
    );
    let mut targets = Vec::new();
    for (i, p) in [Path3::Control, Path3::Enforcer, Path3::Proxy]
        .into_iter()
        .enumerate()
    {
        let rs: Vec<&ClientReport> = cycles.iter().map(|c| &c[i]).collect();
        let ratio = Ratio::of(
            &rs.iter()
                .flat_map(|r| r.pair_ratios.clone())
                .collect::<Vec<_>>(),
        );
        let b = |r: &&ClientReport| r.b.clone().unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            p.label(),
            stats::int(med(rs.iter().map(|r| b(r).rate()).collect())),
            ratio,
            stats::dur_ns(med(rs.iter().map(|r| b(r).p50_ns as f64).collect())),
            stats::dur_ns(med(rs.iter().map(|r| b(r).p99_ns as f64).collect())),
        );
        if p == Path3::Enforcer {
            targets.push(Target::ratio(
                "vs. nginx: enforcer keeps ≥ 0.97× direct: unloaded connect + request + close \
                 cycles/s (paired batches)"
                    .to_string(),
                &ratio,
                0.97,
            ));
        }
    }
    md.push('\n');
    (md, targets)
}

pub fn run(lab: &mut EnforcerLab, exe: &Path, dir: &Path, o: &Opts) -> Result<Section> {
    let up_dir = dir.join("nginx-upstream");
    let px_dir = dir.join("nginx-proxy");
    fs::create_dir_all(up_dir.join("www"))?;
    fs::write(
        up_dir.join("www/small.txt"),
        "x".repeat(SMALL_FILE_BYTES - 1) + "\n",
    )?;
    let mut upstream = start_nginx("nginx (upstream)", &up_dir, &upstream_conf(&up_dir))?;
    let mut proxy = start_nginx("nginx (stream proxy)", &px_dir, &proxy_conf(&px_dir))?;
    let mut iperf = Daemon::spawn(
        "iperf3 server",
        Command::new("iperf3").args([
            "-s",
            "-B",
            &UPSTREAM.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
        ]),
        &dir.join("iperf3-server.log"),
    )?;
    for (addr, what) in [
        (
            SocketAddr::new(IpAddr::V4(UPSTREAM), HTTP_PORT),
            "nginx (upstream)",
        ),
        (
            SocketAddr::new(IpAddr::V4(PROXY), HTTP_PORT),
            "nginx (stream proxy)",
        ),
        (
            SocketAddr::new(IpAddr::V4(UPSTREAM), IPERF_PORT),
            "the iperf3 server",
        ),
    ] {
        wait_listening(addr, Duration::from_secs(20), what).with_context(|| {
            format!(
                "see {} and {}",
                up_dir.join("error.log").display(),
                px_dir.join("error.log").display()
            )
        })?;
    }
    lab.set_measured(
        &[
            SocketAddr::new(IpAddr::V4(UPSTREAM), HTTP_PORT),
            SocketAddr::new(IpAddr::V4(UPSTREAM), IPERF_PORT),
        ],
        10,
    )?;
    lab.set_fillers(0)?;
    let b = Bench {
        cgroup_free: lab.free.path.clone(),
        cgroup_control: lab.control.path.clone(),
        cgroup_policed: lab.measured.path.clone(),
        o,
    };
    // Each test runs the three paths back to back (order rotated per round), so that the paths
    // compared are measured moments apart.
    let mut rounds: Vec<[Round; 4]> = Vec::new();
    let mut cycles: Vec<[ClientReport; 3]> = Vec::new();
    for round in 0..o.rounds {
        note(&format!("proxy: round {}/{}", round + 1, o.rounds));
        cycles.push(cycle_round(&b, exe, o)?);
        let mut this: [Round; 4] = Default::default();
        for test in 0..3 {
            for i in stats::rotation(4, round) {
                interrupt::check()?;
                for d in [&mut upstream, &mut proxy, &mut iperf] {
                    d.check_alive()?;
                }
                let p = Path3::ALL[i];
                let r = &mut this[i];
                match test {
                    0 => r.close = b.wrk(p, true)?,
                    1 => r.keepalive = b.wrk(p, false)?,
                    _ => r.bulk_bytes_per_s = b.iperf(p)?,
                }
            }
        }
        rounds.push(this);
    }
    // res[path][round]
    let res: Vec<Vec<Round>> = (0..4)
        .map(|i| rounds.iter().map(|r| r[i].clone()).collect())
        .collect();
    drop(iperf);
    drop(proxy);
    drop(upstream);

    type Get = fn(&Round) -> f64;
    let figures: [(&str, Get, bool); 7] = [
        (
            "new connections/s (one request each, `Connection: close`)",
            |r| r.close.requests_per_s,
            true,
        ),
        (
            "  request latency p50 (new connection)",
            |r| r.close.p50_ns,
            false,
        ),
        (
            "  request latency p99 (new connection)",
            |r| r.close.p99_ns,
            false,
        ),
        (
            "keep-alive requests/s",
            |r| r.keepalive.requests_per_s,
            true,
        ),
        (
            "  request latency p50 (keep-alive)",
            |r| r.keepalive.p50_ns,
            false,
        ),
        (
            "  request latency p99 (keep-alive)",
            |r| r.keepalive.p99_ns,
            false,
        ),
        (
            "bulk transfer, one TCP stream (iperf3)",
            |r| r.bulk_bytes_per_s,
            true,
        ),
    ];
    let mut md = String::from(
        "| figure | direct, no program | direct, enforcer | via nginx stream proxy | control × direct | enforcer × direct | proxy × direct |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut targets = Vec::new();
    for (name, get, higher_better) in figures {
        let vals: Vec<Vec<f64>> = res.iter().map(|rs| rs.iter().map(get).collect()).collect();
        let fmt = |v: f64| {
            if name.contains("latency") {
                stats::dur_ns(v)
            } else if name.contains("bulk") {
                stats::bytes_per_s(v)
            } else {
                stats::int(v)
            }
        };
        let ctl = Ratio::per_round(&vals[1], &vals[0]);
        let enf = Ratio::per_round(&vals[2], &vals[0]);
        let prx = Ratio::per_round(&vals[3], &vals[0]);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            name.trim(),
            fmt(stats::median(&vals[0])),
            fmt(stats::median(&vals[2])),
            fmt(stats::median(&vals[3])),
            ctl,
            enf,
            prx
        );
        // As a performance ratio (higher is better) for the target.
        let perf = if higher_better {
            enf
        } else {
            Ratio::per_round(&vals[0], &vals[2])
        };
        targets.push(Target::ratio(
            format!(
                "vs. nginx: enforcer keeps ≥ 0.97× direct: {}{}",
                name.trim(),
                if higher_better {
                    ""
                } else {
                    " (direct / enforcer)"
                }
            ),
            &perf,
            0.97,
        ));
    }
    let errors: u64 = res
        .iter()
        .flatten()
        .map(|r| r.close.errors + r.keepalive.errors)
        .sum();
    let _ = writeln!(
        md,
        "\nRatios are medians of per-round ratios with their 95 % confidence interval in \
         brackets (with few rounds, the whole range); latency ratios above 1 are slower than \
         direct. The control column runs the direct path from a second cgroup without programs: \
         its spread is what noise alone does. wrk socket errors and non-2xx answers over all \
         runs: {errors}.\n"
    );
    let raw: Vec<serde_json::Value> = Path3::ALL
        .iter()
        .zip(&res)
        .map(|(p, rs)| json!({"path": p.label(), "rounds": rs}))
        .collect();
    let (cycle_md, cycle_targets) = cycle_table(&cycles, o);
    md.push_str(&cycle_md);
    targets.extend(cycle_targets);
    Ok(Section {
        title: "2. Against the blog's nginx stream proxy".into(),
        intro: format!(
            "wrk (1 thread, {WRK_CONNECTIONS} connections, {} s per run, a \
             {SMALL_FILE_BYTES}-byte static file from an nginx upstream) and iperf3 (one TCP stream, {} s) run directly \
             from a cgroup without any program (and, as a control, from a second one), directly \
             from the policed cgroup (policy of 10 \
             entries allowing the upstream), and through an nginx `stream` proxy configured like \
             the blog's (`worker_processes 8; worker_connections 1024; stream {{ server {{ listen \
             ...; proxy_pass upstream; }} }}`). {} rounds; in each, every test runs the four \
             paths back to back (order rotated). Client, proxy and \
             upstream share the machine's 2 cores, so the proxy's extra work also slows the \
             others; in the blog's setup the proxy is a container behind a Docker bridge, which \
             adds more than this loopback hop.",
            o.seconds, o.seconds, o.rounds
        ),
        markdown: md,
        targets,
        raw: json!({"wrk_iperf": raw, "paired_cycles": cycles}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUT: &str = "Running 1s test @ http://127.77.1.1:18080/small.txt
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   155.73us   83.09us   2.06ms   92.41%
    Req/Sec    48.67k     2.51k   51.57k    80.00%
  Latency Distribution
     50%  141.00us
     75%  166.00us
     90%  200.00us
     99%    1.02ms
  48421 requests in 1.00s, 17.55MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
Requests/sec:  48410.64
Transfer/sec:     17.55MB
";

    #[test]
    fn reads_wrk_output() {
        let w = parse_wrk(WRK_OUT).unwrap();
        assert_eq!(w.requests_per_s, 48410.64);
        assert_eq!(w.p50_ns, 141_000.0);
        assert_eq!(w.p99_ns, 1_020_000.0);
        assert_eq!(w.errors, 4);
    }

    #[test]
    fn proxy_config_follows_the_blog() {
        let c = proxy_conf(Path::new("/x"));
        assert!(c.contains("worker_processes 8;"));
        assert!(c.contains("worker_connections 1024;"));
        assert!(c.contains("proxy_pass 127.77.1.1:18080;"));
        assert!(c.contains("listen 127.77.1.2:15201 backlog=4096;"));
    }
}
