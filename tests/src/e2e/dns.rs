//! What the DNS tests add to a [`Lab`]: clients made from the glibc probe image
//! ([`Lab::start_probe_host`], asked with [`Lab::probe`]), test hosts with several addresses
//! (the `cdn.test` pool, [`Lab::start_pool_host`]), test hosts that serve DNS on their own
//! address ([`Lab::start_dns_host`]), networks of the test's own ([`Lab::create_network`]),
//! and waiting until the agent's DNS proxy answers a container ([`Lab::wait_dns_proxy`]).

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use super::{LAB_LABEL, Lab, PORT, Started, answers_ok, wait_until};
use crate::{
    dns::TestDns,
    dns_client::{Report, Via, reports},
    docker::{Docker, PROBE_PATH, ensure_glibc_probe_image},
};

/// The resolver Docker puts in the resolv.conf of containers on user-defined networks.
pub const EMBEDDED_DNS: &str = "127.0.0.11:53";

/// Where a probe container is attached.
#[derive(Debug, Clone, Copy)]
pub enum Net<'a> {
    /// The lab's network, `--dns <gateway>` (resolv.conf: Docker's embedded `127.0.0.11`).
    Lab,
    /// Another network by name (`bridge`, `host`, one of [`Lab::create_network`]), with these
    /// `--dns` servers (none: Docker's default).
    Other(&'a str, &'a [IpAddr]),
}

impl Lab {
    /// The glibc probe image (built once per probe binary).
    #[track_caller]
    pub fn probe_image(&self) -> &str {
        self.probe_image.get_or_init(|| {
            ensure_glibc_probe_image(&self.docker)
                .unwrap_or_else(|e| panic!("building the glibc probe image: {e:#}"))
        })
    }

    /// A container of the glibc probe image that sleeps (ask it with [`Lab::probe`]), with
    /// these labels, on `net`, with more `docker run` options.
    #[track_caller]
    pub fn start_probe_host(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        net: Net<'_>,
        extra: &[&str],
    ) -> Started {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        match net {
            Net::Lab => args.extend(self.base_args(&name)),
            Net::Other(network, dns) => {
                args.extend(self.base_args_on(&name, Some(network)));
                for d in dns {
                    args.extend(["--dns".into(), d.to_string()]);
                }
            }
        }
        args.extend(Self::label_args(labels));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([self.probe_image().to_owned(), "sleep".into(), "600".into()]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Started { name, id, ip: None }
    }

    /// `docker exec CONTAINER /egress-probe ARGS...`: its reports (and the whole output, for
    /// messages).
    #[track_caller]
    pub fn probe(&self, container: &str, args: &[&str]) -> (Vec<Report>, String) {
        probe_in(&self.docker, container, args)
    }

    /// `dns-connect NAME PORT --count N` in `container`: getaddrinfo and a TCP connect, `count`
    /// times; one report per try (and the whole output).
    #[track_caller]
    pub fn connect_by_name(
        &self,
        container: &str,
        name: &str,
        port: u16,
        count: usize,
    ) -> (Vec<Report>, String) {
        let (port, count) = (port.to_string(), count.to_string());
        self.probe(container, &["dns-connect", name, &port, "--count", &count])
    }

    /// One question from `container` to `server` (`ADDR` or `ADDR:PORT`) for `name` (type A,
    /// UDP unless `tcp`).
    #[track_caller]
    pub fn ask(&self, container: &str, server: &str, name: &str, tcp: bool) -> Report {
        self.ask_via(
            container,
            server,
            name,
            if tcp { Via::Tcp } else { Via::Udp },
        )
    }

    /// [`Lab::ask`] over `via` (connected UDP too).
    #[track_caller]
    pub fn ask_via(&self, container: &str, server: &str, name: &str, via: Via) -> Report {
        let mut args = vec!["dns-query", server, name, "--timeout-ms", "3000"];
        match via {
            Via::Tcp => args.push("--tcp"),
            Via::ConnectedUdp => args.push("--connected"),
            Via::Udp => {}
        }
        let (r, text) = self.probe(container, &args);
        r.into_iter()
            .next()
            .unwrap_or_else(|| panic!("no report from {container}: {text}"))
    }

    /// Waits until a question from `container` to `server` gets a DNS answer at all (the
    /// agent's proxy for it is open: until then the redirect is not there and the kernel
    /// refuses port 53). The name asked (`proxy-ready.<tag>.test`) is allowed by nobody and
    /// in no table, so it never reaches a server.
    #[track_caller]
    pub fn wait_dns_proxy(&self, container: &str, server: &str) {
        let name = format!("proxy-ready.{}.test", self.tag);
        let mut last = String::new();
        let answered =
            crate::wait::poll(Duration::from_secs(20), Duration::from_millis(100), || {
                let (r, text) = self.probe(
                    container,
                    &["dns-query", server, &name, "--timeout-ms", "500"],
                );
                last = text;
                r.into_iter().find(|r| r.rcode.is_some())
            });
        if answered.is_none() {
            panic!(
                "the DNS proxy did not answer {container} (asking {server}) within 20 s; the \
                 last try: {last}\nagent log:\n{}",
                self.agent
                    .as_ref()
                    .map(|a| a.log_text())
                    .unwrap_or_default()
            );
        }
    }

    /// A target host (see [`Lab::start_target`]) at `10.231.<n>.<hosts[0]>` that also owns the
    /// other addresses of `hosts` (added to its `eth0`, so the bridge reaches them); returns
    /// it and all its addresses once each answers on [`PORT`].
    #[track_caller]
    pub fn start_pool_host(&self, role: &str, hosts: &[u8]) -> (Started, Vec<IpAddr>) {
        let (first, rest) = hosts.split_first().expect("at least one host");
        let target = self.start_target(role, *first);
        let pid = self.docker.pid(&target.id).to_string();
        let mut ips = vec![self.ip(*first)];
        for h in rest {
            let ip = self.ip(*h);
            let out = Command::new("nsenter")
                .args(["-t", &pid, "-n", "ip", "addr", "add"])
                .arg(format!("{ip}/24"))
                .args(["dev", "eth0"])
                .output()
                .unwrap_or_else(|e| panic!("running nsenter: {e}"));
            assert!(
                out.status.success(),
                "adding {ip} to {}: {}",
                target.name,
                String::from_utf8_lossy(&out.stderr)
            );
            ips.push(ip);
        }
        for ip in &ips {
            let addr = SocketAddr::new(*ip, PORT);
            wait_until(
                &format!("pool host {} to answer on {addr}", target.name),
                Duration::from_secs(20),
                || answers_ok(addr).then_some(()),
            );
        }
        (target, ips)
    }

    /// A test DNS server on `target`'s own address, port 53, inside its network namespace
    /// (another resolver a client may send its questions to).
    #[track_caller]
    pub fn start_dns_host(&self, target: &Started) -> TestDns {
        let ip = target.ip.expect("a target with a fixed IP");
        TestDns::start_in_netns_of(self.docker.pid(&target.id), SocketAddr::new(ip, 53))
            .unwrap_or_else(|e| panic!("test DNS in {} on {ip}:53: {e}", target.name))
    }

    /// A bridge network of the test's own, `egress-e2e-<tag>-<suffix>` on `subnet` (e.g.
    /// `10.232.<n>.0/24`), `--internal` if asked; removed when the lab ends.
    #[track_caller]
    pub fn create_network(&mut self, suffix: &str, subnet: &str, internal: bool) -> String {
        let name = format!("{}-{suffix}", self.network);
        let mut args = vec![
            "network".to_owned(),
            "create".into(),
            "--driver".into(),
            "bridge".into(),
            "--subnet".into(),
            subnet.into(),
            "--label".into(),
            format!("{LAB_LABEL}={}", self.tag),
        ];
        if internal {
            args.push("--internal".into());
        }
        args.push(name.clone());
        self.docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        self.extra_networks.push(name.clone());
        name
    }

    /// `docker run -d` of a busybox target answering `ok <role>` on [`PORT`] on `network`
    /// with these options (an alias, say); no fixed IP.
    #[track_caller]
    pub fn start_target_on(&self, role: &str, network: &str, extra: &[&str]) -> Started {
        let script = format!(
            "trap 'exit 0' TERM; nc -ll -p {PORT} -e echo ok {role} & while :; do sleep 1; done"
        );
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(self.base_args_on(&name, Some(network)));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([super::image(), "sh".into(), "-c".into(), script]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Started { name, id, ip: None }
    }

    /// A glibc probe container on the lab's network with these labels, once the agent has
    /// registered it and its DNS proxy answers (through Docker's embedded resolver).
    #[track_caller]
    pub fn dns_client(&self, role: &str, labels: &[(&str, &str)]) -> Started {
        let c = self.start_probe_host(role, labels, Net::Lab, &[]);
        self.wait_registered(&c.id, &[]);
        self.wait_dns_proxy(&c.name, EMBEDDED_DNS);
        c
    }

    /// A busybox sleeper on the lab's network with these labels, once the agent has
    /// registered it and its DNS proxy answers `nslookup` (busybox's own resolver).
    #[track_caller]
    pub fn busybox_dns_client(&self, role: &str, labels: &[(&str, &str)]) -> Started {
        let c = self.start_sleeper(role, labels, &[]);
        self.wait_registered(&c.id, &[]);
        let name = format!("proxy-ready.{}.test", self.tag);
        wait_until(
            &format!("the DNS proxy to answer busybox {}", c.name),
            Duration::from_secs(20),
            || {
                let (out, _) = self.nslookup(&c.name, &name);
                out.contains("NXDOMAIN").then_some(())
            },
        );
        c
    }

    /// busybox `nslookup NAME` in `container` (its resolv.conf's server): the output and
    /// whether it found an address.
    #[track_caller]
    pub fn nslookup(&self, container: &str, name: &str) -> (String, bool) {
        let out = self
            .docker
            .output(&["exec", container, "timeout", "10", "nslookup", name]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (text, out.status.success())
    }

    /// A name under the test zone nobody allows and no table holds, unique to this lab and
    /// `what`: if it ever reaches a server, its log shows it.
    pub fn marker(&self, what: &str) -> String {
        format!("{what}-{}.leak.test", self.tag)
    }
}

/// `docker exec CONTAINER /egress-probe ARGS...` on `docker` (from a thread of its own, say):
/// its reports and its whole output.
#[track_caller]
pub fn probe_in(docker: &Docker, container: &str, args: &[&str]) -> (Vec<Report>, String) {
    let mut argv = vec!["exec", container, PROBE_PATH];
    argv.extend_from_slice(args);
    let out = docker.output(&argv);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (reports(&text), text)
}

/// Panics unless `r` is an answer with response code `code` (`NXDomain`, `Refused`) and
/// `name` reached none of `servers` (it was answered by the agent, never forwarded).
#[track_caller]
pub fn assert_stopped(r: &Report, code: &str, name: &str, servers: &[&TestDns], context: &str) {
    assert_eq!(
        r.rcode.as_deref(),
        Some(code),
        "{context}: `{name}` should get {code}: {r:?}"
    );
    assert!(
        r.addrs.is_empty(),
        "{context}: `{name}` got addresses: {r:?}"
    );
    for s in servers {
        assert_eq!(
            s.queries_for(name),
            0,
            "{context}: `{name}` reached the server on {}: {:?}",
            s.addr(),
            s.log()
        );
    }
}

/// Panics unless `r` is a NOERROR answer carrying `ip`.
#[track_caller]
pub fn assert_answered(r: &Report, ip: IpAddr, context: &str) {
    assert_eq!(
        r.rcode.as_deref(),
        Some("NoError"),
        "{context}: should be answered: {r:?}"
    );
    assert!(r.addrs.contains(&ip), "{context}: {ip} missing: {r:?}");
}
