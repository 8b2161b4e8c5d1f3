//! The resolver against a real DNS server (the test server on loopback, `test.` zone): A and
//! AAAA merged, CNAME chains, TTL refresh with the floor, grace periods, failures keeping the
//! last good IPs, one resolution per domain, NXDOMAIN. Unprivileged; no traffic leaves
//! loopback.

use std::{
    collections::BTreeSet,
    future::Future,
    net::IpAddr,
    time::{Duration, Instant},
};

use egress_agent::resolver::{
    DnsClient, DnsOptions, DomainUpdate, FirstAnswer, RefreshConfig, ResolverError, ResolverHandle,
    ResolverService, ServiceConfig,
};
use egress_tests::dns::TestDns;
use hickory_proto::op::ResponseCode;
use tokio::sync::mpsc::UnboundedReceiver;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Grace period of the services under test.
const GRACE: Duration = Duration::from_secs(2);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn client(dns: &TestDns) -> DnsClient {
    let options = DnsOptions {
        timeout: Duration::from_millis(500),
        attempts: 1,
    };
    DnsClient::with_options(Some(dns.addr()), options).unwrap()
}

fn config() -> ServiceConfig {
    ServiceConfig {
        refresh: RefreshConfig {
            ttl_floor: Duration::from_secs(1),
            ttl_ceiling: Duration::from_secs(30),
            grace: GRACE,
            failure_retry_min: Duration::from_millis(200),
            failure_retry_max: Duration::from_secs(1),
        },
        first_answer_timeout: Duration::from_secs(5),
        lookup_timeout: Duration::from_secs(5),
        max_lookups_in_flight: ServiceConfig::DEFAULT_MAX_LOOKUPS_IN_FLIGHT,
    }
}

fn service(dns: &TestDns) -> (ResolverHandle, UnboundedReceiver<DomainUpdate>) {
    ResolverService::spawn(client(dns), config()).unwrap()
}

/// The next update of `domain`, failing the test after `within`.
async fn next_update(
    updates: &mut UnboundedReceiver<DomainUpdate>,
    domain: &str,
    within: Duration,
) -> DomainUpdate {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let update = tokio::time::timeout_at(deadline, updates.recv())
            .await
            .unwrap_or_else(|_| panic!("no update of {domain} within {within:?}"))
            .expect("the service stopped");
        if update.domain == domain {
            return update;
        }
    }
}

/// Polls `check` every 20 ms until it holds; false after `within`.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

#[tokio::test]
async fn client_merges_a_and_aaaa() {
    let dns = TestDns::start(LOOPBACK);
    dns.set_a(
        "dual.test",
        &[ip("10.0.0.1"), ip("10.0.0.2"), ip("fd00::1")],
        30,
    );
    dns.set_a("v4only.test", &[ip("10.0.0.3")], 30);
    dns.set_negative_ttl(20);
    let client = client(&dns);

    let answer = client.lookup("Dual.Test.").await.unwrap();
    assert_eq!(answer.ips, ips(&["10.0.0.1", "10.0.0.2", "fd00::1"]));
    assert_eq!(answer.ttl, Duration::from_secs(30));
    assert_eq!(dns.queries_for("dual.test"), 2, "one A and one AAAA query");

    // No AAAA is fine; its negative TTL bounds the answer's.
    let answer = client.lookup("v4only.test").await.unwrap();
    assert_eq!(answer.ips, ips(&["10.0.0.3"]));
    assert_eq!(answer.ttl, Duration::from_secs(20));

    // hickory's cache is off: a change is seen at once, whatever the old TTL said.
    dns.set_a("dual.test", &[ip("10.0.0.9")], 7);
    let answer = client.lookup("dual.test").await.unwrap();
    assert_eq!(answer.ips, ips(&["10.0.0.9"]));
    assert_eq!(answer.ttl, Duration::from_secs(7));
    assert_eq!(dns.queries_for("dual.test"), 4);
}

#[tokio::test]
async fn client_follows_cname_chains() {
    let dns = TestDns::start(LOOPBACK);
    dns.set_cname("www.test", "mid.test", 20);
    dns.set_cname("mid.test", "edge.cdn.test", 60);
    dns.set_a("edge.cdn.test", &[ip("10.1.1.1"), ip("fd00::11")], 120);
    let client = client(&dns);

    // The server puts the whole chain in one answer.
    let answer = client.lookup("www.test").await.unwrap();
    assert_eq!(answer.ips, ips(&["10.1.1.1", "fd00::11"]));
    assert_eq!(
        answer.ttl,
        Duration::from_secs(20),
        "smallest TTL of the chain"
    );
    assert_eq!(dns.queries_for("edge.cdn.test"), 0);

    // The server answers each CNAME alone: the resolver follows the chain itself.
    dns.set_chase_cnames(false);
    let answer = client.lookup("www.test").await.unwrap();
    assert_eq!(answer.ips, ips(&["10.1.1.1", "fd00::11"]));
    assert_eq!(answer.ttl, Duration::from_secs(20));
    assert_eq!(
        dns.queries_for("edge.cdn.test"),
        2,
        "A and AAAA of the chain's end"
    );

    // A chain that ends in NXDOMAIN is an empty answer.
    dns.set_chase_cnames(true);
    dns.set_cname("dangling.test", "nowhere.test", 30);
    let answer = client.lookup("dangling.test").await.unwrap();
    assert!(answer.ips.is_empty());
}

#[tokio::test]
async fn client_nxdomain_refused_and_servfail() {
    let dns = TestDns::start(LOOPBACK);
    dns.set_negative_ttl(7);
    let client = client(&dns);

    let answer = client.lookup("nothing.test").await.unwrap();
    assert!(answer.ips.is_empty(), "NXDOMAIN is an empty answer");
    assert_eq!(answer.ttl, Duration::from_secs(7), "the SOA's negative TTL");

    dns.set_failure("broken.test", ResponseCode::ServFail);
    let err = client.lookup("broken.test").await.unwrap_err();
    assert!(matches!(err, ResolverError::Lookup { .. }), "{err}");

    // The test server refuses every other zone (and never forwards); the query goes to it only.
    let err = client.lookup("outside.example").await.unwrap_err();
    assert!(matches!(err, ResolverError::Lookup { .. }), "{err}");
    assert!(
        dns.queries_for("outside.example") >= 2,
        "asked (A and AAAA), refused"
    );
}

#[tokio::test]
async fn client_retries_truncated_answers_over_tcp() {
    let dns = TestDns::start(LOOPBACK);
    // 300 A records do not fit a UDP answer (EDNS payload ~1232 bytes).
    let many: Vec<IpAddr> = (0..300u32)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a20_0000 + i)))
        .collect();
    dns.set_a("big.test", &many, 30);
    let answer = client(&dns).lookup("big.test").await.unwrap();
    assert_eq!(answer.ips.len(), 300);
    assert!(
        dns.queries_for("big.test") >= 3,
        "A over UDP (truncated), A over TCP, AAAA"
    );
}

#[tokio::test]
async fn service_follows_ttl_changes_and_keeps_old_ips_for_the_grace_period() {
    let dns = TestDns::start(LOOPBACK);
    dns.set_a("moving.test", &[ip("10.2.0.1"), ip("fd00::21")], 1);
    let (resolver, mut updates) = service(&dns);

    let added = resolver.add("moving.test").await.unwrap();
    assert_eq!(added.status, FirstAnswer::Resolved);
    assert_eq!(added.ips, ips(&["10.2.0.1", "fd00::21"]));
    let first = next_update(&mut updates, "moving.test", Duration::from_secs(2)).await;
    assert_eq!(first.ips, added.ips);

    // TTL 1 s (= the floor): the change is seen within about 1 s.
    dns.set_a("moving.test", &[ip("10.2.0.2"), ip("fd00::21")], 1);
    let changed = Instant::now();
    let (update, took) = timed(next_update(
        &mut updates,
        "moving.test",
        Duration::from_secs(5),
    ))
    .await;
    assert_eq!(
        update.ips,
        ips(&["10.2.0.1", "10.2.0.2", "fd00::21"]),
        "new IP added, old one kept in grace"
    );
    assert!(took < Duration::from_millis(2500), "refresh took {took:?}");

    // The old IP leaves when its grace period is over, not before.
    let update = next_update(&mut updates, "moving.test", GRACE + Duration::from_secs(4)).await;
    assert_eq!(update.ips, ips(&["10.2.0.2", "fd00::21"]));
    let kept = changed.elapsed();
    assert!(
        kept >= GRACE,
        "old IP removed after {kept:?}, grace is {GRACE:?}"
    );
    assert_eq!(resolver.snapshot("moving.test"), Some(update.ips));
}

#[tokio::test]
async fn service_keeps_the_last_good_ips_while_resolution_fails() {
    let dns = TestDns::start(LOOPBACK);
    let addr = dns.addr();
    dns.set_a("flaky.test", &[ip("10.3.0.1")], 1);
    let (resolver, mut updates) = service(&dns);
    resolver.add("flaky.test").await.unwrap();
    next_update(&mut updates, "flaky.test", Duration::from_secs(2)).await;

    // The server fails for the name: lookups are retried, the IP stays well past the grace.
    dns.set_failure("flaky.test", ResponseCode::ServFail);
    let before = dns.queries_for("flaky.test");
    assert!(
        eventually(Duration::from_secs(5), || dns.queries_for("flaky.test")
            >= before + 6)
        .await,
        "failed lookups are retried"
    );
    tokio::time::sleep(GRACE).await;
    assert_eq!(resolver.snapshot("flaky.test"), Some(ips(&["10.3.0.1"])));

    // The server goes away entirely: still the same IPs.
    dns.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(resolver.snapshot("flaky.test"), Some(ips(&["10.3.0.1"])));
    assert!(updates.try_recv().is_err(), "no update while failing");

    // It comes back with a new address: picked up within the backoff (<= 1 s) and a lookup.
    let dns = TestDns::start_on(addr).expect("restart the test DNS on the same port");
    dns.set_a("flaky.test", &[ip("10.3.0.2")], 1);
    let update = next_update(&mut updates, "flaky.test", Duration::from_secs(5)).await;
    assert_eq!(update.ips, ips(&["10.3.0.1", "10.3.0.2"]));
}

#[tokio::test]
async fn service_resolves_a_shared_domain_once() {
    let dns = TestDns::start(LOOPBACK);
    dns.set_a("shared.test", &[ip("10.4.0.1"), ip("fd00::41")], 300);
    let (resolver, _updates) = service(&dns);

    let (a, b) = tokio::join!(resolver.add("shared.test"), resolver.add("SHARED.test."));
    assert_eq!(a.unwrap().ips, ips(&["10.4.0.1", "fd00::41"]));
    assert_eq!(b.unwrap().ips, ips(&["10.4.0.1", "fd00::41"]));
    let c = resolver.add("shared.test").await.unwrap();
    assert_eq!(c.status, FirstAnswer::Resolved);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        dns.queries_for("shared.test"),
        2,
        "three references, one resolution (A + AAAA)"
    );

    // It is resolved until the last reference goes.
    resolver.remove("shared.test");
    resolver.remove("shared.test");
    assert!(
        eventually(Duration::from_secs(1), || resolver
            .snapshot("shared.test")
            .is_some())
        .await
    );
    resolver.remove("shared.test");
    assert!(eventually(Duration::from_secs(2), || resolver.domains().is_empty()).await);
}

#[tokio::test]
async fn service_empties_a_vanished_domain_after_the_grace_period() {
    let dns = TestDns::start(LOOPBACK);
    dns.set_negative_ttl(1);
    dns.set_a("vanish.test", &[ip("10.5.0.1")], 1);
    let (resolver, mut updates) = service(&dns);

    // A name that never existed resolves to nothing (an answer, not a failure).
    let never = resolver.add("never.test").await.unwrap();
    assert_eq!(never.status, FirstAnswer::Resolved);
    assert!(never.ips.is_empty());

    resolver.add("vanish.test").await.unwrap();
    next_update(&mut updates, "vanish.test", Duration::from_secs(2)).await;
    dns.remove("vanish.test");
    let gone = Instant::now();
    let update = next_update(&mut updates, "vanish.test", GRACE + Duration::from_secs(5)).await;
    assert!(update.ips.is_empty(), "{update:?}");
    let kept = gone.elapsed();
    assert!(kept >= GRACE, "removed after {kept:?}");
    assert_eq!(resolver.snapshot("vanish.test"), Some(BTreeSet::new()));
}
