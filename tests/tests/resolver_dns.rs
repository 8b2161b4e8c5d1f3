//! The resolver against a real DNS server (the test server on loopback, `test.` zone): A and
//! AAAA looked up on their own, CNAME chains, TTL refresh with the floor, grace periods,
//! failures keeping the last good IPs, one resolution per domain, NXDOMAIN; one family failing
//! (AAAA REFUSED, SERVFAIL or never answered, directly and behind a CNAME, and from a real
//! dnsmasq without upstream) never costs the other its addresses. No traffic leaves loopback.

use std::{
    collections::BTreeSet,
    future::Future,
    net::IpAddr,
    time::{Duration, Instant},
};

use egress_agent::resolver::{
    DnsClient, DnsOptions, DomainUpdate, Family, FirstAnswer, RefreshConfig, ResolverError,
    ResolverHandle, ResolverService, ServiceConfig,
};
use egress_tests::{dns::TestDns, dnsmasq::Dnsmasq, net, slots};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use tokio::sync::mpsc::UnboundedReceiver;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Grace period of the services under test.
const GRACE: Duration = Duration::from_secs(2);

/// `127.126.<net>.<host>`: the one-family-failing tests' DNS servers and answers.
fn slot_ip(n: u8, host: u8) -> IpAddr {
    net::v4(slots::FAMILY_DNS, n, host)
}

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
async fn client_looks_up_each_family_on_its_own() {
    let dns = TestDns::start(LOOPBACK);
    dns.set_a(
        "dual.test",
        &[ip("10.0.0.1"), ip("10.0.0.2"), ip("fd00::1")],
        30,
    );
    dns.set_a("v4only.test", &[ip("10.0.0.3")], 30);
    dns.set_negative_ttl(20);
    let client = client(&dns);

    let a = client.lookup("Dual.Test.", Family::V4).await.unwrap();
    assert_eq!(a.ips, ips(&["10.0.0.1", "10.0.0.2"]));
    assert_eq!(a.ttl, Duration::from_secs(30));
    let aaaa = client.lookup("dual.test", Family::V6).await.unwrap();
    assert_eq!(aaaa.ips, ips(&["fd00::1"]));
    assert_eq!(dns.queries_of_type("dual.test", RecordType::A), 1);
    assert_eq!(dns.queries_of_type("dual.test", RecordType::AAAA), 1);

    // No AAAA is an empty answer with the SOA's negative TTL.
    let aaaa = client.lookup("v4only.test", Family::V6).await.unwrap();
    assert!(aaaa.ips.is_empty());
    assert_eq!(aaaa.ttl, Duration::from_secs(20));

    // hickory's cache is off: a change is seen at once, whatever the old TTL said.
    dns.set_a("dual.test", &[ip("10.0.0.9")], 7);
    let a = client.lookup("dual.test", Family::V4).await.unwrap();
    assert_eq!(a.ips, ips(&["10.0.0.9"]));
    assert_eq!(a.ttl, Duration::from_secs(7));
    assert_eq!(dns.queries_of_type("dual.test", RecordType::A), 2);
}

#[tokio::test]
async fn client_follows_cname_chains() {
    let dns = TestDns::start(LOOPBACK);
    dns.set_cname("www.test", "mid.test", 20);
    dns.set_cname("mid.test", "edge.cdn.test", 60);
    dns.set_a("edge.cdn.test", &[ip("10.1.1.1"), ip("fd00::11")], 120);
    let client = client(&dns);

    // The server puts the whole chain in one answer.
    let a = client.lookup("www.test", Family::V4).await.unwrap();
    assert_eq!(a.ips, ips(&["10.1.1.1"]));
    assert_eq!(a.ttl, Duration::from_secs(20), "smallest TTL of the chain");
    let aaaa = client.lookup("www.test", Family::V6).await.unwrap();
    assert_eq!(aaaa.ips, ips(&["fd00::11"]));
    assert_eq!(dns.queries_for("edge.cdn.test"), 0);

    // The server answers each CNAME alone: the resolver follows the chain itself.
    dns.set_chase_cnames(false);
    let a = client.lookup("www.test", Family::V4).await.unwrap();
    assert_eq!(a.ips, ips(&["10.1.1.1"]));
    assert_eq!(a.ttl, Duration::from_secs(20));
    let aaaa = client.lookup("www.test", Family::V6).await.unwrap();
    assert_eq!(aaaa.ips, ips(&["fd00::11"]));
    assert_eq!(
        dns.queries_for("edge.cdn.test"),
        2,
        "A and AAAA of the chain's end"
    );

    // A chain that ends in NXDOMAIN is an empty answer.
    dns.set_chase_cnames(true);
    dns.set_cname("dangling.test", "nowhere.test", 30);
    for family in Family::ALL {
        let answer = client.lookup("dangling.test", family).await.unwrap();
        assert!(answer.ips.is_empty(), "{family}: {answer:?}");
    }
}

#[tokio::test]
async fn client_nxdomain_refused_and_servfail() {
    let dns = TestDns::start(LOOPBACK);
    dns.set_negative_ttl(7);
    let client = client(&dns);

    for family in Family::ALL {
        let answer = client.lookup("nothing.test", family).await.unwrap();
        assert!(answer.ips.is_empty(), "NXDOMAIN is an empty answer");
        assert_eq!(answer.ttl, Duration::from_secs(7), "the SOA's negative TTL");
    }

    dns.set_failure("broken.test", ResponseCode::ServFail);
    let err = client.lookup("broken.test", Family::V4).await.unwrap_err();
    assert!(
        matches!(
            err,
            ResolverError::Lookup {
                family: Family::V4,
                ..
            }
        ),
        "{err}"
    );

    // The test server refuses every other zone (and never forwards); the query goes to it only.
    let err = client
        .lookup("outside.example", Family::V6)
        .await
        .unwrap_err();
    assert!(matches!(err, ResolverError::Lookup { .. }), "{err}");
    assert!(
        dns.queries_for("outside.example") >= 1,
        "asked (hickory asks a refusing server twice), refused"
    );
}

#[tokio::test]
async fn client_fails_one_family_and_answers_the_other() {
    let dns = TestDns::start(slot_ip(0, 1));
    dns.set_a("v4only.test", &[slot_ip(1, 1)], 30);
    dns.set_type_failure("v4only.test", RecordType::AAAA, ResponseCode::Refused);
    dns.set_cname("alias.test", "v4only.test", 30);
    let client = client(&dns);
    for name in ["v4only.test", "alias.test"] {
        let a = client.lookup(name, Family::V4).await.unwrap();
        assert_eq!(a.ips, BTreeSet::from([slot_ip(1, 1)]), "{name}");
        let err = client.lookup(name, Family::V6).await.unwrap_err();
        assert!(
            matches!(
                err,
                ResolverError::Lookup {
                    family: Family::V6,
                    ..
                }
            ),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("(AAAA)"), "{err}");
    }
}

#[tokio::test]
async fn client_retries_truncated_answers_over_tcp() {
    let dns = TestDns::start(LOOPBACK);
    // 300 A records do not fit a UDP answer (EDNS payload ~1232 bytes).
    let many: Vec<IpAddr> = (0..300u32)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a20_0000 + i)))
        .collect();
    dns.set_a("big.test", &many, 30);
    let answer = client(&dns).lookup("big.test", Family::V4).await.unwrap();
    assert_eq!(answer.ips.len(), 300);
    assert!(
        dns.queries_of_type("big.test", RecordType::A) >= 2,
        "A over UDP (truncated), A over TCP"
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
    // Each family's first answer is published as it comes.
    let mut first = next_update(&mut updates, "moving.test", Duration::from_secs(2)).await;
    if first.ips != added.ips {
        first = next_update(&mut updates, "moving.test", Duration::from_secs(2)).await;
    }
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

/// How a test DNS server makes the AAAA question of a name fail.
#[derive(Debug, Clone, Copy)]
enum AaaaFailure {
    Code(ResponseCode),
    /// Never answered: the client times out.
    Dropped,
}

impl AaaaFailure {
    fn apply(self, dns: &TestDns, name: &str) {
        match self {
            AaaaFailure::Code(code) => dns.set_type_failure(name, RecordType::AAAA, code),
            AaaaFailure::Dropped => dns.drop_type(name, RecordType::AAAA),
        }
    }
}

/// `asked` (maybe a CNAME to `target`) resolves while `target`'s AAAA question fails as
/// `failure` says: its A addresses are published by the first `add`, kept well past the grace
/// period while AAAA keeps failing, and AAAA alone is retried (A has a TTL of 300 s and is not
/// asked again). Returns the service, for what the caller checks next.
async fn a_is_kept_while_aaaa_fails(
    dns: &TestDns,
    asked: &str,
    target: &str,
    failure: AaaaFailure,
) -> (ResolverHandle, UnboundedReceiver<DomainUpdate>) {
    let want = BTreeSet::from([slot_ip(1, 1), slot_ip(1, 2)]);
    dns.set_a(target, &want.iter().copied().collect::<Vec<_>>(), 300);
    failure.apply(dns, target);
    let (resolver, mut updates) = service(dns);

    let (added, took) = timed(resolver.add(asked)).await;
    let added = added.unwrap();
    assert_eq!(
        added.status,
        FirstAnswer::Resolved,
        "{asked} (AAAA of {target}: {failure:?}): the A answer must count: {added:?}"
    );
    assert_eq!(added.ips, want, "{asked}: the A addresses");
    let update = next_update(&mut updates, asked, Duration::from_secs(2)).await;
    assert_eq!(update.ips, want, "{asked}: the A addresses published");
    println!("{asked} ({failure:?}): add returned after {took:?}: {added:?}");

    // AAAA keeps failing: it is retried on its own backoff; A is not asked again.
    let a_queries = dns.queries_of_type(asked, RecordType::A);
    let aaaa_queries = dns.queries_of_type(asked, RecordType::AAAA);
    assert!(
        eventually(Duration::from_secs(10), || dns
            .queries_of_type(asked, RecordType::AAAA)
            >= aaaa_queries + 3)
        .await,
        "{asked}: AAAA retried ({} AAAA queries)",
        dns.queries_of_type(asked, RecordType::AAAA)
    );
    tokio::time::sleep(GRACE).await;
    assert_eq!(
        resolver.snapshot(asked),
        Some(want.clone()),
        "{asked}: A kept while AAAA fails"
    );
    assert_eq!(
        dns.queries_of_type(asked, RecordType::A),
        a_queries,
        "{asked}: A (TTL 300 s) asked again although only AAAA failed"
    );
    assert!(
        updates.try_recv().is_err(),
        "{asked}: nothing changed while AAAA failed"
    );
    (resolver, updates)
}

#[tokio::test]
async fn service_keeps_a_when_aaaa_is_refused() {
    let dns = TestDns::start(slot_ip(0, 2));
    let refused = AaaaFailure::Code(ResponseCode::Refused);
    a_is_kept_while_aaaa_fails(&dns, "v4only.test", "v4only.test", refused).await;
}

#[tokio::test]
async fn service_keeps_a_when_aaaa_of_a_cname_target_is_refused() {
    let dns = TestDns::start(slot_ip(0, 3));
    let refused = AaaaFailure::Code(ResponseCode::Refused);
    dns.set_cname("alias.test", "api.v4only.test", 300);
    // The server follows the CNAME in its answers, then the resolver does.
    a_is_kept_while_aaaa_fails(&dns, "alias.test", "api.v4only.test", refused).await;
    dns.set_chase_cnames(false);
    dns.set_cname("other-alias.test", "api.v4only.test", 300);
    let (resolver, _updates) = service(&dns);
    let added = resolver.add("other-alias.test").await.unwrap();
    assert_eq!(added.status, FirstAnswer::Resolved, "{added:?}");
    assert_eq!(added.ips, BTreeSet::from([slot_ip(1, 1), slot_ip(1, 2)]));
    assert!(
        dns.queries_of_type("api.v4only.test", RecordType::AAAA) >= 1,
        "the resolver followed the CNAME for AAAA itself"
    );
}

#[tokio::test]
async fn service_keeps_a_when_aaaa_fails_with_servfail_and_adds_aaaa_when_it_recovers() {
    let dns = TestDns::start(slot_ip(0, 4));
    let servfail = AaaaFailure::Code(ResponseCode::ServFail);
    let (_resolver, mut updates) =
        a_is_kept_while_aaaa_fails(&dns, "flaky6.test", "flaky6.test", servfail).await;
    // AAAA comes back: its address joins, within the backoff (<= 1 s) and a lookup.
    dns.clear_type_failure("flaky6.test", RecordType::AAAA);
    let v6 = ip("fd00:126::1");
    dns.set_a("flaky6.test", &[slot_ip(1, 1), slot_ip(1, 2), v6], 300);
    let update = next_update(&mut updates, "flaky6.test", Duration::from_secs(5)).await;
    assert_eq!(
        update.ips,
        BTreeSet::from([slot_ip(1, 1), slot_ip(1, 2), v6])
    );
}

#[tokio::test]
async fn service_keeps_a_when_aaaa_times_out() {
    let dns = TestDns::start(slot_ip(0, 5));
    let (resolver, _updates) =
        a_is_kept_while_aaaa_fails(&dns, "silent6.test", "silent6.test", AaaaFailure::Dropped)
            .await;
    // The same behind a CNAME.
    dns.set_cname("silent-alias.test", "silent6.test", 300);
    let added = resolver.add("silent-alias.test").await.unwrap();
    assert_eq!(added.status, FirstAnswer::Resolved, "{added:?}");
    assert_eq!(added.ips, BTreeSet::from([slot_ip(1, 1), slot_ip(1, 2)]));
}

/// A real dnsmasq without upstream servers answers the A question of its `--host-record` names
/// and REFUSES their AAAA question: the resolver publishes and keeps the A addresses, for the
/// name and for a `--cname` to it.
#[tokio::test]
async fn service_gets_the_a_addresses_from_a_real_dnsmasq() {
    let api = net::v4(slots::FAMILY_DNSMASQ, 1, 1);
    let dnsmasq = Dnsmasq::start(
        net::v4(slots::FAMILY_DNSMASQ, 0, 53),
        &[
            format!("--host-record=api.fam-dnsmasq.test,{api},300"),
            "--cname=alias.fam-dnsmasq.test,api.fam-dnsmasq.test".into(),
        ],
    );
    let options = DnsOptions {
        timeout: Duration::from_millis(500),
        attempts: 1,
    };
    let client = DnsClient::with_options(Some(dnsmasq.addr()), options).unwrap();
    // The premise: dnsmasq refuses AAAA here (or the test checks nothing).
    let aaaa = client.lookup("api.fam-dnsmasq.test", Family::V6).await;
    assert!(
        aaaa.is_err(),
        "dnsmasq answered AAAA ({aaaa:?}); the test's premise changed. Its log:\n{}",
        dnsmasq.log_text()
    );

    let (resolver, mut updates) = ResolverService::spawn(client, config()).unwrap();
    for name in ["api.fam-dnsmasq.test", "alias.fam-dnsmasq.test"] {
        let added = resolver.add(name).await.unwrap();
        assert_eq!(
            added.status,
            FirstAnswer::Resolved,
            "{name}: {added:?}; dnsmasq's log:\n{}",
            dnsmasq.log_text()
        );
        assert_eq!(added.ips, BTreeSet::from([api]), "{name}");
        let update = next_update(&mut updates, name, Duration::from_secs(2)).await;
        assert_eq!(update.ips, BTreeSet::from([api]), "{name}");
    }
    // Still there after AAAA retries and the grace period.
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    for name in ["api.fam-dnsmasq.test", "alias.fam-dnsmasq.test"] {
        assert_eq!(
            resolver.snapshot(name),
            Some(BTreeSet::from([api])),
            "{name}"
        );
    }
    let log = dnsmasq.log_text();
    assert!(
        log.matches("query[AAAA] api.fam-dnsmasq.test").count() >= 3,
        "AAAA retried; dnsmasq's log:\n{log}"
    );
}
