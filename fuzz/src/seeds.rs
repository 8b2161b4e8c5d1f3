//! The seed corpus (`fuzz/corpus/<target>/<name>`): small, meaningful inputs of each target,
//! made here so they can be remade and checked (`tests/corpus.rs`; `EGRESS_FUZZ_WRITE_SEEDS=1
//! cargo test --manifest-path fuzz/Cargo.toml` writes them). DNS messages are built with
//! hickory-proto, as a client or a resolver would send them.

use egress_common::event::{Event, NOTICE};
use egress_dns::tcp;
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{
            A, AAAA, CNAME, HTTPS, SOA, SVCB,
            svcb::{IpHint, SvcParamKey, SvcParamValue},
        },
    },
};

/// One seed: its target, its file name, its bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

/// The policy file of `egress-policy`'s documentation (and the README's).
pub const DOC_POLICY_FILE: &str = r#"# Images whose egress.* labels count as the operator's (before any [[container]]).
trusted_images = ["registry.example.com/team/proxy:1.4", "sha256:0c9023e3ec9a3f1c0e4bc7c0f0c0f5a9e7e1a8ad7d2f4b5c6d7e8f9a0b1c2d3e"]

[[container]]
name = "billing"
mode = "audit"
dns = "resolve"
allow = ["api.stripe.com", "10.0.0.0/8:5432"]
replace = false

[[container]]
label = "com.example.team=payments"
allow = ["*.payments.example.com"]
"#;

pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target, name, bytes: Vec<u8>| {
        seeds.push(Seed {
            target,
            name,
            bytes,
        })
    };
    for (name, text) in LABELS {
        add("labels", name, text.as_bytes().to_vec());
    }
    for (name, text) in policy_files() {
        add("policy_file", name, text.into_bytes());
    }
    for (name, bytes) in dns_queries() {
        add("dns_query", name, bytes);
    }
    for (name, bytes) in dns_answers() {
        add("dns_answer", name, bytes);
    }
    for (name, bytes) in dns_exchanges() {
        add("dns_exchange", name, bytes);
    }
    for (name, bytes) in events() {
        add("event", name, bytes);
    }
    seeds
}

const LABELS: [(&str, &str); 8] = [
    (
        "allow-mode-dns",
        "egress.allow=api.example.com, 10.0.0.0/8:5432, *.payments.example.com\n\
         egress.mode=enforce\negress.dns=learn\n",
    ),
    ("allow-nothing", "egress.allow=\n"),
    (
        "audit-only",
        "egress.mode=audit\ncom.example.team=payments\n",
    ),
    (
        "addresses-and-ports",
        "A=[2001:db8::1]:443, **.example.com:8443, db, 192.0.2.7, 2001:db8::/32,\nD=resolve\n",
    ),
    (
        "near-misses",
        "Egress.allow=x.com\negress_mode=audit\negressdsn=learn\n",
    ),
    (
        "image-labels",
        "!egress.mode=audit\n!egress.dns=resolve\n?egress.allow=evil.example\nM=enforce\n",
    ),
    (
        "bad-entries",
        "egress.allow=https://x:443, a..com, x.com:0, *foo.com, a.*.com, x.com/path, 10.0.0.0/33\n\
         egress.alow=x\negress.mode=\negress.dns=sometimes\n",
    ),
    (
        "long-names",
        "egress.allow=xn--caf-dma.example, API.Example.COM., _svc._tcp.example, a-b.c-d.e\n",
    ),
];

fn policy_files() -> Vec<(&'static str, String)> {
    vec![
        ("doc-example", DOC_POLICY_FILE.to_owned()),
        (
            "with-container",
            format!(
                "{DOC_POLICY_FILE}\n[[container]]\nname = \"web\"\nlabel = \"tier\"\nallow = \
                 []\nreplace = true\n---\nname=billing\negress.allow=db.internal\negress.mode=bogus\n\
                 com.example.team=payments\n!egress.mode=audit\n"
            ),
        ),
        (
            "errors",
            "trusted_images = [\"\", 3, \"UPPER/case\"]\nother = 1\n[[container]]\nallow = \
             [\"a,b\", \"\", \"*\"]\nmode = \"loud\"\ndns = 7\nextra = true\n[[container]]\n\
             name = \"x\"\nlabel = \"k=v=w\"\n"
                .to_owned(),
        ),
        ("not-toml", "[[container]\nname = \n".to_owned()),
        ("container-not-array", "container = \"x\"\n".to_owned()),
    ]
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("a seed's name")
}

/// A client's query as a resolver library sends it: id 0x1234, RD set.
fn client_query(owner: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(owner), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn bytes(m: &Message) -> Vec<u8> {
    m.to_vec().expect("a seed encodes")
}

fn dns_queries() -> Vec<(&'static str, Vec<u8>)> {
    let a = client_query("api.example.com.", RecordType::A, None);
    let mut aaaa_do = client_query("WWW.Example.ORG.", RecordType::AAAA, Some(4096));
    if let Some(e) = aaaa_do.edns.as_mut() {
        e.set_dnssec_ok(true);
    }
    let mut notify = client_query("a.test.", RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    let mut chaos = client_query("version.bind.", RecordType::TXT, None);
    chaos.queries[0].set_query_class(DNSClass::CH);
    let mut response = client_query("a.test.", RecordType::A, None);
    response.metadata.message_type = MessageType::Response;
    let mut two = client_query("a.test.", RecordType::A, None);
    two.add_query(Query::query(name("b.test."), RecordType::AAAA));
    let mut v1 = client_query("a.test.", RecordType::A, Some(1232));
    if let Some(e) = v1.edns.as_mut() {
        e.set_version(1);
    }
    let a_bytes = bytes(&a);
    let mut stream = tcp::frame(&a_bytes).expect("a frame");
    stream.extend(tcp::frame(&bytes(&aaaa_do)).expect("a frame"));
    stream.extend_from_slice(&[0x00, 0x20, 0x12]);
    vec![
        ("a", a_bytes.clone()),
        ("aaaa-edns-do", bytes(&aaaa_do)),
        (
            "srv",
            bytes(&client_query(
                "_svc._tcp.example.com.",
                RecordType::SRV,
                Some(512),
            )),
        ),
        (
            "https",
            bytes(&client_query("cdn.test.", RecordType::HTTPS, Some(1232))),
        ),
        (
            "any",
            bytes(&client_query("a.test.", RecordType::ANY, None)),
        ),
        (
            "axfr",
            bytes(&client_query("example.com.", RecordType::AXFR, None)),
        ),
        ("root-ns", bytes(&client_query(".", RecordType::NS, None))),
        ("notify", bytes(&notify)),
        ("chaos", bytes(&chaos)),
        ("response", bytes(&response)),
        ("two-questions", bytes(&two)),
        ("edns-v1", bytes(&v1)),
        ("cut-header", a_bytes[..14].to_vec()),
        ("tcp-stream", stream),
    ]
}

fn rec(owner: &str, ttl: u32, data: RData) -> Record {
    Record::from_rdata(name(owner), ttl, data)
}

fn a(owner: &str, ttl: u32, last: u8) -> Record {
    rec(owner, ttl, RData::A(A::new(192, 0, 2, last)))
}

fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    rec(owner, ttl, RData::CNAME(CNAME(name(target))))
}

fn https_hints(owner: &str, v4: &[u8]) -> Record {
    let svcb = SVCB::new(
        1,
        name("."),
        vec![
            (SvcParamKey::Port, SvcParamValue::Port(443)),
            (
                SvcParamKey::Ipv4Hint,
                SvcParamValue::Ipv4Hint(IpHint(v4.iter().map(|l| A::new(192, 0, 2, *l)).collect())),
            ),
            (
                SvcParamKey::Ipv6Hint,
                SvcParamValue::Ipv6Hint(IpHint(vec![AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)])),
            ),
        ],
    );
    rec(owner, 300, RData::HTTPS(HTTPS(svcb)))
}

fn soa() -> Record {
    rec(
        "test.",
        60,
        RData::SOA(SOA::new(
            name("ns.test."),
            name("host.test."),
            1,
            7200,
            900,
            86400,
            60,
        )),
    )
}

/// The resolver's answer to the question `q`, with message id `id`.
fn resolver_answer(id: u16, q: &Message, answers: Vec<Record>) -> Message {
    let mut m = Message::response(id, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    m.queries.clone_from(&q.queries);
    m.answers = answers;
    m
}

/// The resolver's answers, each for a question of its own (the `dns_answer` target asks the
/// answer's question), behind a control byte.
fn answer_messages() -> Vec<(&'static str, u8, Message)> {
    let q = |owner, t| client_query(owner, t, None);
    let plain = resolver_answer(
        0x4242,
        &q("api.test.", RecordType::A),
        vec![a("api.test.", 60, 1), a("api.test.", 30, 2)],
    );
    let mut chain = resolver_answer(
        7,
        &q("www.test.", RecordType::A),
        vec![
            cname("www.test.", 300, "cdn.test."),
            cname("cdn.test.", 60, "edge.cdn.test."),
            a("edge.cdn.test.", 20, 3),
            a("elsewhere.test.", 20, 66),
        ],
    );
    chain.authorities.push(soa());
    chain.additionals.push(a("ns.test.", 60, 53));
    let https = resolver_answer(
        9,
        &q("cdn.test.", RecordType::HTTPS),
        vec![
            https_hints("cdn.test.", &[1, 2]),
            https_hints("other.test.", &[66]),
        ],
    );
    let mut nxdomain = resolver_answer(11, &q("gone.test.", RecordType::AAAA), vec![]);
    nxdomain.metadata.response_code = ResponseCode::NXDomain;
    nxdomain.authorities.push(soa());
    let mut truncated = resolver_answer(12, &q("big.test.", RecordType::A), vec![]);
    truncated.metadata.truncation = true;
    let many = resolver_answer(
        13,
        &q("many.test.", RecordType::A),
        (1..=40).map(|i| a("many.test.", 60, i)).collect(),
    );
    let cname_loop = resolver_answer(
        14,
        &q("loop.test.", RecordType::A),
        vec![
            cname("loop.test.", 60, "loop2.test."),
            cname("loop2.test.", 60, "loop.test."),
        ],
    );
    let mut servfail = Message::response(15, OpCode::Query);
    servfail.metadata.response_code = ResponseCode::ServFail;
    let mut aaaa = resolver_answer(
        16,
        &q("v6.test.", RecordType::AAAA),
        vec![rec(
            "v6.test.",
            120,
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        )],
    );
    let mut e = Edns::new();
    e.set_max_payload(4096);
    aaaa.set_edns(e);
    vec![
        ("two-a", 0x03, plain),
        ("cname-chain", 0x50, chain),
        ("https-hints", 0x41, https),
        ("nxdomain", 0x00, nxdomain),
        ("truncated", 0x00, truncated),
        ("many-a-udp", 0x02, many),
        ("cname-loop", 0x00, cname_loop),
        ("servfail-no-question", 0x00, servfail),
        ("aaaa-edns", 0x60, aaaa),
    ]
}

fn dns_answers() -> Vec<(&'static str, Vec<u8>)> {
    answer_messages()
        .into_iter()
        .map(|(n, ctl, m)| {
            let mut b = vec![ctl];
            b.extend(bytes(&m));
            (n, b)
        })
        .collect()
}

/// A client's query and the resolver's answer as two TCP frames, then a control byte.
fn exchange(query: &Message, answer: &Message, ctl: u8) -> Vec<u8> {
    let mut b = tcp::frame(&bytes(query)).expect("a frame");
    b.extend(tcp::frame(&bytes(answer)).expect("a frame"));
    b.push(ctl);
    b
}

fn dns_exchanges() -> Vec<(&'static str, Vec<u8>)> {
    let exact = client_query("a.test.", RecordType::A, Some(1232));
    let wild = client_query("www.example.org.", RecordType::A, None);
    let port = client_query("example.com.", RecordType::AAAA, None);
    let blocked = client_query("blocked.example.net.", RecordType::A, None);
    let answer = |q: &Message, recs| resolver_answer(0x0101, q, recs);
    vec![
        (
            "exact-learn",
            exchange(&exact, &answer(&exact, vec![a("a.test.", 60, 1)]), 0x01),
        ),
        (
            "wildcard-cname",
            exchange(
                &wild,
                &answer(
                    &wild,
                    vec![
                        cname("www.example.org.", 60, "edge.example.org."),
                        a("edge.example.org.", 30, 2),
                        a("www.example.org.", 30, 3),
                    ],
                ),
                0x42,
            ),
        ),
        (
            "port-aaaa",
            exchange(
                &port,
                &answer(
                    &port,
                    vec![rec(
                        "example.com.",
                        60,
                        RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
                    )],
                ),
                0x00,
            ),
        ),
        (
            "blocked",
            exchange(
                &blocked,
                &answer(&blocked, vec![a("blocked.example.net.", 60, 9)]),
                0x00,
            ),
        ),
        (
            "blocked-audit",
            exchange(
                &blocked,
                &answer(&blocked, vec![a("blocked.example.net.", 60, 9)]),
                0x80,
            ),
        ),
    ]
}

fn events() -> Vec<(&'static str, Vec<u8>)> {
    let mut denial = Event::zeroed();
    denial.cgroup_id = 4242;
    denial.pid = 100;
    denial.tid = 101;
    denial.policy_id = 3;
    denial.port = 443;
    denial.family = egress_common::AF_INET;
    denial.protocol = 6;
    denial.verdict = 1;
    denial.reason = 1;
    denial.hook = 1;
    denial.comm[..4].copy_from_slice(b"curl");
    denial.addr[..4].copy_from_slice(&[10, 0, 0, 9]);
    let mut audit6 = denial;
    audit6.family = egress_common::AF_INET6;
    audit6.verdict = 2;
    audit6.reason = 4;
    audit6.hook = 4;
    audit6.protocol = 17;
    audit6.port = 53;
    audit6.addr = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x35,
    ];
    audit6.comm = *b"a-long-thread-nm";
    let mut notice = Event::zeroed();
    notice.cgroup_id = 77;
    notice.policy_id = 7;
    notice.verdict = NOTICE;
    notice.reason = 2;
    notice.pid = 555;
    notice.comm[..4].copy_from_slice(b"runc");
    let mut unknown = denial;
    unknown.verdict = 9;
    unknown.hook = 200;
    vec![
        ("denial-v4", denial.to_bytes().to_vec()),
        ("audit-v6", audit6.to_bytes().to_vec()),
        ("notice", notice.to_bytes().to_vec()),
        ("unknown-codes", unknown.to_bytes().to_vec()),
        ("short", denial.to_bytes()[..40].to_vec()),
    ]
}
