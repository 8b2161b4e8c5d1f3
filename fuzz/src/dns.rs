//! The DNS messages of the agent's proxy, in the order `egress-agent/src/dns/proxied.rs` runs
//! them: a client's message parsed ([`query::parse`]); refused, it gets its rejection
//! ([`reply::rejection`]) or nothing; taken, the proxy answers it itself (NXDOMAIN, REFUSED,
//! SERVFAIL) or sends the upstream query ([`upstream::query`]); the resolver's bytes are
//! checked against it ([`answer::check`]); an accepted answer's addresses are learned
//! ([`Store::learn`]), those the store did not hold are removed ([`Answer::retain_addrs`]) and
//! the client gets the rest ([`Answer::to_client`], over UDP or TCP, framed [`tcp::frame`]).
//!
//! Three targets:
//!
//! - `dns_query`: the input is a client's UDP datagram, and the same bytes as a client's TCP
//!   stream (frames, [`tcp::next_frame`]).
//! - `dns_answer`: a control byte, then the resolver's answer; the client's question is the
//!   answer's own when it has one the proxy takes (so most inputs get past the question check),
//!   the message id the answer's (the proxy hands an answer to the query of its id).
//! - `dns_exchange`: a TCP stream of two frames, the client's query and the resolver's answer,
//!   then control bytes; run through a fixed policy exactly as the proxy does.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use egress_dns::{
    PLAIN_UDP_SIZE, Transport,
    answer::{self, Answer, MAX_CNAME_CHAIN},
    learned::{Limits, Store},
    query::{self, ClientQuery},
    reply, tcp,
    tcp::Frame,
    upstream,
};
use egress_policy::{
    dns::{DnsMode, DnsPolicy},
    labels::{self, Capabilities},
    policy::Mode,
};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode},
    rr::{Name, RData, Record, RecordType},
};

/// `dns_query`.
pub fn query_target(data: &[u8]) {
    let _ = client(data);
    let mut stream = data;
    loop {
        match tcp::next_frame(stream) {
            Frame::Message { message, consumed } => {
                assert_eq!(consumed, tcp::PREFIX_LEN + message.len());
                assert!(consumed <= stream.len());
                if let Some(reply) = client(message) {
                    let framed = tcp::frame(&reply).expect("a reply fits a frame");
                    assert_eq!(
                        tcp::next_frame(&framed),
                        Frame::Message {
                            message: &reply,
                            consumed: framed.len()
                        }
                    );
                }
                stream = &stream[consumed..];
            }
            Frame::Incomplete { needed } => {
                assert!(needed > 0);
                break;
            }
        }
    }
}

/// A client's message: what the proxy answers it with itself, or (taken) the upstream query it
/// sends, decoded back as a query the proxy itself would take.
fn client(bytes: &[u8]) -> Option<Vec<u8>> {
    let q = match query::parse(bytes) {
        Ok(q) => q,
        Err(e) => {
            let _ = e.to_string();
            let code = e.response_code();
            return match reply::rejection(&e) {
                Ok(Some(r)) => {
                    let m = decoded(&r, "a rejection");
                    assert_eq!(Some(m.metadata.id), e.id());
                    assert_eq!(
                        Some(u16::from(m.metadata.response_code)),
                        code.map(u16::from)
                    );
                    Some(r)
                }
                Ok(None) => {
                    assert!(code.is_none(), "no rejection for code {code:?}");
                    None
                }
                Err(_) => None,
            };
        }
    };
    check_query(&q);
    for made in [
        reply::nxdomain(&q),
        reply::refused(&q),
        reply::servfail(&q),
        reply::formerr(&q),
    ]
    .into_iter()
    .flatten()
    {
        check_own_reply(&made, &q);
    }
    let id = q.id ^ 0x5a5a;
    let sent = upstream::query(&q, id).ok()?;
    let again = query::parse(&sent).expect("the upstream query is a query the proxy takes");
    assert_eq!((again.id, &again.key), (id, &q.key));
    assert_eq!(again.question, q.question);
    assert_eq!(answer::id_of(&sent), Some(id));
    reply::nxdomain(&q).ok()
}

fn check_query(q: &ClientQuery) {
    assert!(!q.key.is_empty());
    assert_eq!(q.key, q.key.to_ascii_lowercase());
    assert!(!q.key.ends_with('.'));
    assert!(q.udp_limit() >= PLAIN_UDP_SIZE);
    assert!(!matches!(
        q.qtype(),
        RecordType::OPT | RecordType::AXFR | RecordType::IXFR
    ));
}

/// A message the proxy makes must decode, answer the client's id and carry its question.
fn decoded(bytes: &[u8], what: &str) -> Message {
    match Message::from_vec(bytes) {
        Ok(m) => {
            assert_eq!(m.metadata.message_type, MessageType::Response, "{what}");
            m
        }
        Err(e) => panic!("{what} does not decode: {e}"),
    }
}

fn check_own_reply(bytes: &[u8], q: &ClientQuery) {
    let m = decoded(bytes, "the proxy's reply");
    assert_eq!(m.metadata.id, q.id);
    assert_eq!(m.queries, std::slice::from_ref(&q.question));
    assert!(m.answers.is_empty() && m.authorities.is_empty());
}

/// `dns_answer`.
pub fn answer_target(data: &[u8]) {
    let Some((&ctl, raw)) = data.split_first() else {
        return;
    };
    let q = client_for(raw, ctl);
    let upstream_id = answer::id_of(raw).unwrap_or(0);
    let mut store = Store::new(limits(ctl));
    let now = Instant::now();
    resolver_answer(raw, &q, upstream_id, true, &mut store, now, ctl);
    check_store(&store);
    // A second answer to the same question, later: refreshes and caps.
    resolver_answer(
        raw,
        &q,
        upstream_id,
        true,
        &mut store,
        now + Duration::from_secs(1),
        ctl,
    );
    check_store(&store);
    let _ = store.expire(now + Duration::from_secs(u64::from(ctl)));
    check_store(&store);
}

/// The store's caps, from the control byte: 1-4 addresses a name, 1-2 names.
fn limits(ctl: u8) -> Limits {
    Limits {
        grace: Duration::from_secs(u64::from(ctl >> 6)),
        max_addrs_per_name: usize::from(ctl & 3) + 1,
        max_names: usize::from((ctl >> 2) & 1) + 1,
    }
}

/// The client's question: the answer's own when it has one the proxy takes, else `a.test.` A;
/// RD and EDNS (none, or UDP size 100, 1232 or 4096) from the control byte.
fn client_for(raw: &[u8], ctl: u8) -> ClientQuery {
    let question = Message::from_vec(raw)
        .ok()
        .and_then(|m| m.queries.into_iter().next());
    let fixed = hickory_proto::op::Query::query(
        Name::from_ascii("a.test.").expect("a name"),
        RecordType::A,
    );
    for question in question.into_iter().chain([fixed]) {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = ctl & 0x10 != 0;
        m.add_query(question);
        let size = match (ctl >> 5) & 3 {
            0 => None,
            1 => Some(100),
            2 => Some(1232),
            _ => Some(4096),
        };
        if let Some(size) = size {
            let mut edns = Edns::new();
            edns.set_max_payload(size);
            m.set_edns(edns);
        }
        if let Some(q) = m.to_vec().ok().and_then(|b| query::parse(&b).ok()) {
            return q;
        }
    }
    unreachable!("the fixed question is taken")
}

/// What the proxy does with the resolver's bytes `raw` for `q`: check, learn (if `learns`),
/// filter, encode for the client over UDP and TCP.
#[allow(clippy::too_many_arguments)]
fn resolver_answer(
    raw: &[u8],
    q: &ClientQuery,
    upstream_id: u16,
    learns: bool,
    store: &mut Store,
    now: Instant,
    ctl: u8,
) {
    let mut a = match answer::check(raw, q, upstream_id) {
        Ok(a) => a,
        Err(e) => {
            let _ = (e.to_string(), e.is_mismatch());
            if let Ok(r) = reply::servfail(q) {
                check_own_reply(&r, q);
            }
            return;
        }
    };
    check_answer(&a, q);
    if learns && !a.addrs.is_empty() {
        let ttl = a.min_ttl.unwrap_or(0);
        let learned = store.learn(&q.key, &a.addrs, ttl, now);
        if !learned.not_held.is_empty() {
            let before = a.addrs.len();
            a.retain_addrs(|ip| !learned.not_held.contains(&ip));
            assert!(a.addrs.len() <= before);
        }
        // The client is told only addresses the store holds for the name.
        assert!(
            store.name_holds_all(&q.key, &a.addrs),
            "the client gets addresses not learned"
        );
        check_store(store);
    }
    to_client(&a, q);
    // Some addresses refused after all (the caller's filter): gone from the response too.
    a.retain_addrs(|ip| !refused_by(ctl, ip));
    assert!(a.addrs.iter().all(|ip| !refused_by(ctl, *ip)));
    to_client(&a, q);
}

fn refused_by(ctl: u8, ip: IpAddr) -> bool {
    let last = match ip {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    };
    last & 1 == ctl & 1
}

fn check_answer(a: &Answer, q: &ClientQuery) {
    assert!(!a.chain.is_empty() && a.chain.len() <= MAX_CNAME_CHAIN + 1);
    assert!(a.chain[0].eq_ignore_root(q.name()));
    for (i, addr) in a.addrs.iter().enumerate() {
        assert!(!a.addrs[..i].contains(addr), "{addr} twice");
    }
    if !a.addrs.is_empty() {
        assert!(a.min_ttl.is_some(), "addresses without a TTL");
    }
}

/// The response the client gets over UDP and TCP: it decodes, answers the client's id and
/// question, fits the transport, and every address it carries is one of `a.addrs`.
fn to_client(a: &Answer, q: &ClientQuery) {
    for transport in [Transport::Udp, Transport::Tcp] {
        let Ok(bytes) = a.to_client(transport) else {
            continue;
        };
        if transport == Transport::Udp {
            assert!(
                bytes.len() <= usize::from(q.udp_limit()),
                "longer than the client takes"
            );
        }
        let framed = tcp::frame(&bytes).expect("a response fits a frame");
        assert_eq!(framed.len(), bytes.len() + tcp::PREFIX_LEN);
        let m = decoded(&bytes, "the client's response");
        assert_eq!(m.metadata.id, q.id);
        assert_eq!(m.queries, std::slice::from_ref(&q.question));
        assert_eq!(m.edns.is_some(), q.edns.is_some());
        for r in m.answers.iter().chain(&m.authorities).chain(&m.additionals) {
            for addr in addresses(r) {
                assert!(
                    m.answers.contains(r) && a.addrs.contains(&addr),
                    "the client gets {addr}, which is not on the answer's chain or allowed: {r}"
                );
            }
        }
    }
}

/// The addresses a record hands out (A, AAAA, and the hints of HTTPS and SVCB records).
fn addresses(r: &Record) -> Vec<IpAddr> {
    use hickory_proto::rr::rdata::svcb::SvcParamValue;
    let svcb = match &r.data {
        RData::A(a) => return vec![IpAddr::V4(a.0)],
        RData::AAAA(a) => return vec![IpAddr::V6(a.0)],
        RData::HTTPS(h) => &h.0,
        RData::SVCB(s) => s,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for (_, value) in &svcb.svc_params {
        match value {
            SvcParamValue::Ipv4Hint(h) => out.extend(h.0.iter().map(|a| IpAddr::V4(a.0))),
            SvcParamValue::Ipv6Hint(h) => out.extend(h.0.iter().map(|a| IpAddr::V6(a.0))),
            _ => {}
        }
    }
    out
}

/// The store's invariants: its caps, and every address held by a name counted once.
fn check_store(store: &Store) {
    let limits = store.limits();
    assert!(store.name_count() <= limits.max_names);
    let mut held: Vec<IpAddr> = Vec::new();
    let mut earliest: Option<Instant> = None;
    for (name, _) in store.entries() {
        let addrs: Vec<(IpAddr, Instant)> = store.addrs_of(name).collect();
        assert!(!addrs.is_empty(), "`{name}` kept without an address");
        assert!(addrs.len() <= limits.max_addrs_per_name);
        for (addr, expires) in addrs {
            assert!(store.holds(addr));
            assert!(store.names_of(addr).any(|n| n == name));
            earliest = Some(earliest.map_or(expires, |e| e.min(expires)));
            if !held.contains(&addr) {
                held.push(addr);
            }
        }
    }
    assert_eq!(store.addr_count(), held.len());
    assert!(store.addrs().all(|a| held.contains(&a)));
    match (store.next_expiry(), earliest) {
        (None, None) => {}
        (Some(next), Some(e)) => assert!(next <= e, "the next expiry is after an entry's"),
        (next, e) => panic!("next expiry {next:?}, earliest entry {e:?}"),
    }
}

/// The policy of `dns_exchange`: exact names, a port, both wildcards.
const POLICY: &str = "a.test, example.com:443, *.example.org, **.test";

/// `dns_exchange`.
pub fn exchange_target(data: &[u8]) {
    let Frame::Message {
        message: asked,
        consumed,
    } = tcp::next_frame(data)
    else {
        return;
    };
    let rest = &data[consumed..];
    let (raw, ctl) = match tcp::next_frame(rest) {
        Frame::Message { message, consumed } => (message, rest.get(consumed).copied()),
        Frame::Incomplete { .. } => (rest, None),
    };
    let ctl = ctl.unwrap_or(0);
    let mut labels =
        std::collections::HashMap::from([(labels::ALLOW_LABEL.to_owned(), POLICY.to_owned())]);
    if ctl & 0x80 != 0 {
        labels.insert(labels::MODE_LABEL.into(), "audit".into());
    }
    let class = labels::classify(&labels, Capabilities { wildcards: true });
    let default = if ctl & 0x40 != 0 {
        DnsMode::Resolve
    } else {
        DnsMode::Learn
    };
    let policy = DnsPolicy::of(&class, default).expect("a policed container");
    let mut store = Store::new(limits(ctl));
    let now = Instant::now();
    let q = match query::parse(asked) {
        Ok(q) => q,
        Err(e) => {
            let _ = reply::rejection(&e);
            return;
        }
    };
    let allowed = policy.allows(&q.key).is_some();
    if !allowed && policy.mode() == Mode::Enforce {
        for r in [reply::nxdomain(&q), reply::refused(&q)]
            .into_iter()
            .flatten()
        {
            check_own_reply(&r, &q);
        }
        return;
    }
    let upstream_id = answer::id_of(raw).unwrap_or(0);
    let Ok(sent) = upstream::query(&q, upstream_id) else {
        return;
    };
    assert_eq!(answer::id_of(&sent), Some(upstream_id));
    let learns = allowed && policy.learns(&q.key);
    resolver_answer(raw, &q, upstream_id, learns, &mut store, now, ctl);
    // The allow set the proxy writes from the store: only names the policy allows.
    for (name, addrs) in store.entries() {
        let rules = policy.rules_for(name, addrs);
        assert!(!rules.is_empty(), "`{name}` learned but not allowed");
    }
}
