//! End-to-end, a policed container's own loopback: allowed when the network namespace is its
//! own — nothing leaves the container — but port 53 there reaches the agent's DNS proxy, not
//! the container's own listener, and Docker's embedded resolver `127.0.0.11` (a loopback
//! address that forwards outward) is denied on other ports; never with `--network host`
//! (loopback is the host's), and never while a container with a wider policy shares its
//! namespace (`--network container:X`). Probes run inside the containers with `docker exec`;
//! EPERM (denied) and "connection refused" (allowed, nobody listening) tell the two apart.
//!
//! Needs root, the shared dockerd and the test image: `cargo xtask test --with-docker`.

use std::{net::SocketAddr, time::Duration};

use egress_tests::e2e::{AgentOpts, Check, Lab, TcpTarget, loopback, wait_until};

const ALLOW: &str = "egress.allow";
/// Where the containers of these tests listen on their own loopback.
const LOCAL_PORT: u16 = 9000;

/// A script that answers `ok <role>` on LOCAL_PORT and on port 53 (any address) and sleeps.
fn listener(role: &str) -> String {
    format!(
        "trap 'exit 0' TERM; nc -ll -p {LOCAL_PORT} -e echo ok {role} & \
         nc -ll -p 53 -e echo ok dns & while :; do sleep 1; done"
    )
}

/// Waits until the container's own listener answers inside it (it started in the background).
fn wait_listening(lab: &Lab, container: &str) {
    wait_until(
        &format!("{container} to listen on its loopback"),
        Duration::from_secs(10),
        || {
            let out = lab.docker.output(&[
                "exec",
                container,
                "sh",
                "-c",
                &format!("netstat -ltn | grep -q ':{LOCAL_PORT} '"),
            ]);
            out.status.success().then_some(())
        },
    );
}

#[test]
fn own_loopback_is_allowed_but_dns_goes_to_the_proxy_and_the_embedded_resolver_is_denied() {
    let mut lab = Lab::new("loopback-own", 65);
    let a = lab.start_target("a", 10);
    lab.start_agent(&AgentOpts::default());
    let allow = a.ip.unwrap().to_string();
    let p = lab.start_detached("policed", &[(ALLOW, &allow)], &[], &listener("self"));
    lab.wait_policed(&p.id, std::slice::from_ref(&allow));
    wait_listening(&lab, &p.name);
    wait_until(
        "status to show the container's own loopback",
        Duration::from_secs(10),
        || (lab.pin.container(&p.id)?["loopback"] == true).then_some(()),
    );

    let probes = lab.exec_probes(
        &p.name,
        &[
            Check::tcp("own_loopback", "127.0.0.1", LOCAL_PORT),
            Check::tcp("other_loopback_addr", "127.0.0.2", LOCAL_PORT),
            Check::tcp("own_dns_port", "127.0.0.1", 53),
            Check::tcp("embedded_resolver", "127.0.0.11", LOCAL_PORT),
            Check::tcp("allowed_a", a.ip.unwrap(), egress_tests::e2e::PORT),
        ],
    );
    assert!(probes[0].reached("self"), "own loopback: {:?}", probes[0]);
    assert!(probes[1].reached("self"), "127.0.0.2: {:?}", probes[1]);
    // Port 53, whatever the address, is redirected to the agent's DNS proxy: the container's
    // own listener there never gets the connection.
    assert!(
        !probes[2].reached("dns") && probes[2].outcome() != egress_tests::e2e::Outcome::Denied,
        "port 53 on the container's own loopback reaches the DNS proxy: {:?}",
        probes[2]
    );
    probes[3].assert_denied("Docker's embedded resolver on another port");
    assert!(
        probes[4].reached("a"),
        "the allowed target: {:?}",
        probes[4]
    );
}

#[test]
fn host_network_never_gets_loopback() {
    let mut lab = Lab::new("loopback-host", 66);
    // A service on the host's loopback (a local proxy could forward anywhere).
    let svc = TcpTarget::start(SocketAddr::new(loopback(66, 1), 8080), "hostsvc");
    lab.start_agent(&AgentOpts::default());
    let sleep = "trap 'exit 0' TERM; while :; do sleep 1; done";
    let p = lab.start_detached_on("policed", &[(ALLOW, "10.231.66.200")], "host", sleep);
    let free = lab.start_detached_on("free", &[], "host", sleep);
    lab.wait_policed(&p.id, &["10.231.66.200".to_owned()]);
    let check = [Check::tcp("host_loopback", svc.addr.ip(), svc.addr.port())];
    let probes = lab.exec_probes(&free.name, &check);
    assert!(
        probes[0].reached("hostsvc"),
        "unpoliced, host network: {:?}",
        probes[0]
    );
    let before = svc.accepted();
    let probes = lab.exec_probes(&p.name, &check);
    probes[0].assert_denied("policed with --network host, the host's loopback");
    assert_eq!(
        svc.accepted(),
        before,
        "the host's service got a connection"
    );
    assert_eq!(lab.pin.container(&p.id).unwrap()["loopback"], false);
}

#[test]
fn a_shared_namespace_with_a_wider_policy_gets_no_loopback() {
    let mut lab = Lab::new("loopback-shared", 67);
    lab.start_agent(&AgentOpts::default());
    let allow = "10.231.67.200".to_owned();

    // Policed X alone in its namespace: its loopback is its own.
    let x = lab.start_detached("x", &[(ALLOW, &allow)], &[], &listener("x"));
    lab.wait_policed(&x.id, std::slice::from_ref(&allow));
    wait_listening(&lab, &x.name);
    let own = [Check::tcp("loop", "127.0.0.1", LOCAL_PORT)];
    wait_until(
        "x to reach its own loopback",
        Duration::from_secs(10),
        || lab.exec_probes(&x.name, &own)[0].reached("x").then_some(()),
    );

    // An unpoliced Y joins X's namespace: through it, X's loopback reaches anything.
    let sleep = "trap 'exit 0' TERM; while :; do sleep 1; done";
    let y = lab.start_detached_on("y", &[], &format!("container:{}", x.name), sleep);
    wait_until(
        "x to lose its loopback while y shares its namespace",
        Duration::from_secs(10),
        || {
            (lab.exec_probes(&x.name, &own)[0].outcome() == egress_tests::e2e::Outcome::Denied)
                .then_some(())
        },
    );
    lab.exec_probes(&x.name, &own)[0].assert_denied("x, sharing its namespace with unpoliced y");

    // Y goes: X gets its loopback back.
    lab.docker.run(&["rm", "-f", &y.id]);
    wait_until(
        "x to get its loopback back",
        Duration::from_secs(10),
        || lab.exec_probes(&x.name, &own)[0].reached("x").then_some(()),
    );
}
