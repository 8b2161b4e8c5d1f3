//! The resolver's response to an upstream query: checked against the client's question, read
//! for the addresses it hands out, and filtered into the response the client gets.
//!
//! [`check`] first makes sure the message answers the query the proxy sent (its id, QR=1,
//! opcode QUERY, the same question; a response with no question is taken only with an error
//! code other than NXDOMAIN, and then carries no records). Then:
//!
//! - the **chain**: the question's name, then the target of the CNAME record (class IN) of the
//!   answer section owned by the last name, and so on; at most [`MAX_CNAME_CHAIN`] CNAMEs, and
//!   a name met twice is a loop (both are errors: the proxy answers SERVFAIL);
//! - the **addresses**: those of the answer section's A and AAAA records owned by a name of the
//!   chain, and the `ipv4hint` and `ipv6hint` values of its HTTPS and SVCB records owned by a
//!   name of the chain. They are learned, and the client gets them;
//! - **stripped**: every other record that carries an address: A and AAAA records (and HTTPS
//!   and SVCB records with address hints) owned by a name off the chain, or of another class,
//!   or in the authority or additional section. So every address the client sees is one the
//!   caller allows;
//! - the **TTL**: the minimum over the chain's CNAME records and the records the addresses
//!   came from;
//! - the **response** to the client ([`Answer::to_client`]): the resolver's, with the client's
//!   id, RD and question, the resolver's flags (TC included: a truncated answer stays
//!   truncated, and the client asks again over TCP) and response code, the proxy's EDNS record
//!   when the client sent one (the resolver's options are not passed on; an extended code the
//!   client cannot receive without EDNS becomes SERVFAIL), no TSIG; and cut to the client's
//!   UDP size over UDP.

use std::net::IpAddr;

use hickory_proto::{
    op::{Header, Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, Name, RData, Record, rdata::svcb::SvcParamValue},
    serialize::binary::{BinDecodable, BinDecoder},
};

use crate::{EncodeError, Transport, query::ClientQuery, wire};

/// The id of a resolver's message, read from its header (to hand the message to the query
/// that waits for it; [`check`] checks the rest). None if not even the header decodes.
pub fn id_of(bytes: &[u8]) -> Option<u16> {
    Header::read(&mut BinDecoder::new(bytes))
        .ok()
        .map(|h| h.metadata.id)
}

/// The most CNAME records a chain follows.
pub const MAX_CNAME_CHAIN: usize = 16;

/// A checked upstream response.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The chain: the question's name (as asked), then each CNAME target in order.
    pub chain: Vec<Name>,
    /// The addresses on the chain, each once, in the order the answer gave them.
    pub addrs: Vec<IpAddr>,
    /// The minimum TTL over the chain's records (CNAMEs and address records), in seconds;
    /// `None` when the chain has no record (an answer with no CNAME and no address).
    pub min_ttl: Option<u32>,
    /// The resolver's response code.
    pub rcode: ResponseCode,
    /// TC: the resolver truncated its answer.
    pub truncated: bool,
    /// How many address records were removed (off the chain).
    pub stripped: usize,
    response: Message,
    udp_limit: u16,
}

/// Why a message is not a usable answer to the upstream query.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("not a DNS message: {0}")]
    Decode(String),
    #[error("message id {got:#06x}, the query's is {expected:#06x}")]
    Id { expected: u16, got: u16 },
    #[error("a query (QR=0), not a response")]
    NotAResponse,
    #[error("opcode {0}, not QUERY")]
    OpCode(OpCode),
    #[error("question {got}, the query asked {expected}")]
    Question { expected: String, got: String },
    #[error("CNAME loop: `{0}` is met twice")]
    CnameLoop(String),
    #[error("CNAME chain longer than {MAX_CNAME_CHAIN}")]
    CnameChainTooLong,
}

impl AnswerError {
    /// True when the message is not an answer to this query (undecodable, another id, a query,
    /// another opcode or question): drop it and keep waiting (it may be stale or spoofed).
    /// False when it answers the query unusably (a CNAME loop, a chain too long): the client
    /// gets SERVFAIL.
    pub fn is_mismatch(&self) -> bool {
        !matches!(self, Self::CnameLoop(_) | Self::CnameChainTooLong)
    }
}

impl Answer {
    /// The response for the client, on the wire. Over UDP, a response longer than the client's
    /// UDP size ([`ClientQuery::udp_limit`]) is sent as its header, question and EDNS record
    /// with TC set, so the client asks again over TCP; over TCP the limit is 65,535 bytes.
    pub fn to_client(&self, transport: Transport) -> Result<Vec<u8>, EncodeError> {
        let max = match transport {
            Transport::Udp => self.udp_limit,
            Transport::Tcp => u16::MAX,
        };
        if let Some(bytes) = wire::encode_within(&self.response, max)? {
            return Ok(bytes);
        }
        let mut short = Message::new(0, MessageType::Response, OpCode::Query);
        short.metadata = self.response.metadata;
        short.metadata.truncation = true;
        short.queries.clone_from(&self.response.queries);
        short.edns.clone_from(&self.response.edns);
        wire::encode(&short)
    }

    /// Removes from the client's response every record with an address `allowed` refuses (an
    /// HTTPS or SVCB record goes whole when one of its hints is refused), and those addresses
    /// from [`Answer::addrs`] (with the other hints of a removed record); returns how many records went (also counted in `stripped`). For
    /// addresses the caller could not allow after all, such as those beyond the per-name cap
    /// ([`crate::learned::Learned::not_held`]). `min_ttl` stays as it was (no later).
    pub fn retain_addrs(&mut self, mut allowed: impl FnMut(IpAddr) -> bool) -> usize {
        let before = self.response.answers.len();
        self.response.answers.retain(|record| {
            addresses_of(record).is_none_or(|found| found.into_iter().all(&mut allowed))
        });
        let kept: Vec<IpAddr> = self
            .response
            .answers
            .iter()
            .filter_map(addresses_of)
            .flatten()
            .collect();
        self.addrs.retain(|addr| kept.contains(addr));
        let removed = before - self.response.answers.len();
        self.stripped += removed;
        removed
    }

    /// The response for the client, before encoding.
    pub fn response(&self) -> &Message {
        &self.response
    }
}

/// Checks `bytes`, the resolver's response to the upstream query with id `upstream_id` made
/// for `client`, and reads and filters it (see the module's documentation).
pub fn check(bytes: &[u8], client: &ClientQuery, upstream_id: u16) -> Result<Answer, AnswerError> {
    let mut message = Message::from_vec(bytes).map_err(|e| AnswerError::Decode(e.to_string()))?;
    check_answers(&message, client, upstream_id)?;
    let rcode = message.metadata.response_code;
    if message.queries.is_empty() {
        message.answers.clear();
        message.authorities.clear();
        message.additionals.clear();
    }

    let (chain, cname_ttl) = follow_chain(client.name(), &message.answers)?;
    let on_chain =
        |r: &Record| r.dns_class == DNSClass::IN && chain.iter().any(|n| n.eq_ignore_root(&r.name));
    let mut addrs = Vec::new();
    let mut min_ttl = cname_ttl;
    let mut stripped = 0;
    message.answers.retain(|record| match addresses_of(record) {
        None => true,
        Some(_) if !on_chain(record) => {
            stripped += 1;
            false
        }
        Some(found) => {
            min_ttl = Some(min_ttl.map_or(record.ttl, |t| t.min(record.ttl)));
            for addr in found {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            true
        }
    });
    for section in [&mut message.authorities, &mut message.additionals] {
        let before = section.len();
        section.retain(|record| addresses_of(record).is_none());
        stripped += before - section.len();
    }

    let truncated = message.metadata.truncation;
    let mut response = message;
    response.metadata.id = client.id;
    response.metadata.recursion_desired = client.recursion_desired;
    response.queries = vec![client.question.clone()];
    response.signature = None;
    response.edns = client.edns.map(|_| wire::proxy_edns());
    if response.edns.is_none() && rcode.high() > 0 {
        response.metadata.response_code = ResponseCode::ServFail;
    }
    Ok(Answer {
        chain,
        addrs,
        min_ttl,
        rcode,
        truncated,
        stripped,
        response,
        udp_limit: client.udp_limit(),
    })
}

/// Whether `message` answers the upstream query `upstream_id` for `client`.
fn check_answers(
    message: &Message,
    client: &ClientQuery,
    upstream_id: u16,
) -> Result<(), AnswerError> {
    let meta = &message.metadata;
    if meta.id != upstream_id {
        return Err(AnswerError::Id {
            expected: upstream_id,
            got: meta.id,
        });
    }
    if meta.message_type != MessageType::Response {
        return Err(AnswerError::NotAResponse);
    }
    if meta.op_code != OpCode::Query {
        return Err(AnswerError::OpCode(meta.op_code));
    }
    let asked = &client.question;
    let matches = match message.queries.as_slice() {
        [q] => {
            q.name().eq_ignore_root(asked.name())
                && q.query_type() == asked.query_type()
                && q.query_class() == asked.query_class()
        }
        [] => !matches!(
            meta.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ),
        _ => false,
    };
    if matches {
        return Ok(());
    }
    let got = match message.queries.as_slice() {
        [q] => q.to_string(),
        qs => format!("{} questions", qs.len()),
    };
    Err(AnswerError::Question {
        expected: asked.to_string(),
        got,
    })
}

/// The chain from `name` through the CNAME records of `answers`, and the minimum TTL of the
/// CNAME records it followed.
fn follow_chain(name: &Name, answers: &[Record]) -> Result<(Vec<Name>, Option<u32>), AnswerError> {
    let mut chain = vec![name.clone()];
    let mut min_ttl: Option<u32> = None;
    loop {
        let last = chain.last().unwrap_or(name);
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.dns_class == DNSClass::IN && r.name.eq_ignore_root(last) => {
                Some((target.0.clone(), r.ttl))
            }
            _ => None,
        });
        let Some((target, ttl)) = next else {
            return Ok((chain, min_ttl));
        };
        if chain.iter().any(|n| n.eq_ignore_root(&target)) {
            return Err(AnswerError::CnameLoop(target.to_ascii()));
        }
        if chain.len() > MAX_CNAME_CHAIN {
            return Err(AnswerError::CnameChainTooLong);
        }
        min_ttl = Some(min_ttl.map_or(ttl, |t| t.min(ttl)));
        chain.push(target);
    }
}

/// The addresses a record hands out, or `None` for a record that carries none: A, AAAA, and
/// HTTPS or SVCB records with an `ipv4hint` or `ipv6hint`.
fn addresses_of(record: &Record) -> Option<Vec<IpAddr>> {
    let svcb = match &record.data {
        RData::A(a) => return Some(vec![IpAddr::V4(a.0)]),
        RData::AAAA(aaaa) => return Some(vec![IpAddr::V6(aaaa.0)]),
        RData::HTTPS(https) => &https.0,
        RData::SVCB(svcb) => svcb,
        _ => return None,
    };
    let mut hinted = false;
    let mut addrs = Vec::new();
    for (_, value) in &svcb.svc_params {
        match value {
            SvcParamValue::Ipv4Hint(hint) => {
                hinted = true;
                addrs.extend(hint.0.iter().map(|a| IpAddr::V4(a.0)));
            }
            SvcParamValue::Ipv6Hint(hint) => {
                hinted = true;
                addrs.extend(hint.0.iter().map(|a| IpAddr::V6(a.0)));
            }
            _ => {}
        }
    }
    hinted.then_some(addrs)
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn the_id_is_read_from_the_header_only() {
        let mut m = Message::query();
        m.metadata.id = 0xbeef;
        let bytes = m.to_vec().unwrap();
        assert_eq!(id_of(&bytes), Some(0xbeef));
        assert_eq!(id_of(&bytes[..11]), None);
        assert_eq!(id_of(&[]), None);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::{
        op::Edns,
        rr::{
            RecordType,
            rdata::{
                A, AAAA, CNAME, HTTPS, SOA, SVCB,
                svcb::{IpHint, SvcParamKey, SvcParamValue},
            },
        },
    };

    use super::*;
    use crate::query::{
        self,
        tests::{client_message, client_message_edns, client_query},
    };

    const UP: u16 = 0x4242;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
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

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    /// The resolver's response to `client`'s upstream query, with `answers`.
    fn upstream_response(client: &ClientQuery, answers: Vec<Record>) -> Message {
        let mut message = Message::response(UP, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.metadata.recursion_available = true;
        message.add_query(client.question.clone());
        message.insert_answers(answers);
        message
    }

    fn check_message(message: &Message, client: &ClientQuery) -> Result<Answer, AnswerError> {
        check(&message.to_vec().unwrap(), client, UP)
    }

    fn to_client(answer: &Answer, transport: Transport) -> Message {
        Message::from_vec(&answer.to_client(transport).unwrap()).unwrap()
    }

    #[test]
    fn addresses_of_the_name_are_learned_and_passed() {
        let client = client_query("Api.Test.", RecordType::A);
        let answer = check_message(
            &upstream_response(&client, vec![a("api.test.", 60, 1), a("api.test.", 30, 2)]),
            &client,
        )
        .unwrap();
        assert_eq!(answer.addrs, vec![v4(1), v4(2)]);
        assert_eq!(answer.min_ttl, Some(30));
        assert_eq!(answer.chain, vec![name("Api.Test.")]);
        assert_eq!(
            (answer.rcode, answer.truncated, answer.stripped),
            (ResponseCode::NoError, false, 0)
        );
        let r = to_client(&answer, Transport::Udp);
        assert_eq!(r.metadata.id, 0x1234);
        assert!(r.metadata.recursion_desired && r.metadata.recursion_available);
        assert_eq!(r.queries, vec![client.question.clone()]);
        assert_eq!(r.answers.len(), 2);
        assert!(r.edns.is_none());
    }

    #[test]
    fn the_cname_chain_and_what_is_off_it() {
        let client = client_query("www.shop.test.", RecordType::A);
        let mut message = upstream_response(
            &client,
            vec![
                cname("www.shop.test.", 300, "shop.cdn.test."),
                a("elsewhere.test.", 300, 66),
                cname("SHOP.cdn.test.", 20, "edge7.cdn.test."),
                a("edge7.cdn.test.", 40, 7),
                rec(
                    "edge7.cdn.test.",
                    50,
                    RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
                ),
            ],
        );
        message.add_additional(a("ns.cdn.test.", 300, 53));
        message.add_authority(a("glue.test.", 300, 54));
        let answer = check_message(&message, &client).unwrap();
        assert_eq!(
            answer.chain,
            vec![
                name("www.shop.test."),
                name("shop.cdn.test."),
                name("edge7.cdn.test.")
            ]
        );
        assert_eq!(answer.addrs, vec![v4(7), "2001:db8::7".parse().unwrap()]);
        assert_eq!(answer.min_ttl, Some(20), "the second CNAME's TTL");
        assert_eq!(answer.stripped, 3);
        let r = to_client(&answer, Transport::Udp);
        assert_eq!(
            r.answers.len(),
            4,
            "both CNAMEs, the A and the AAAA on the chain"
        );
        assert!(
            r.answers
                .iter()
                .all(|r| r.name.to_ascii() != "elsewhere.test.")
        );
        assert!(r.additionals.is_empty() && r.authorities.is_empty());
    }

    #[test]
    fn a_cname_only_answer_has_no_addresses() {
        let client = client_query("alias.test.", RecordType::A);
        let message = upstream_response(&client, vec![cname("alias.test.", 90, "gone.test.")]);
        let answer = check_message(&message, &client).unwrap();
        assert!(answer.addrs.is_empty());
        assert_eq!(answer.min_ttl, Some(90));
        let empty = check_message(&upstream_response(&client, vec![]), &client).unwrap();
        assert_eq!((empty.min_ttl, empty.addrs.len()), (None, 0));
    }

    #[test]
    fn cname_loops_and_long_chains_are_servfail() {
        let client = client_query("a.test.", RecordType::A);
        let looped = upstream_response(
            &client,
            vec![
                cname("a.test.", 5, "b.test."),
                cname("b.test.", 5, "A.test."),
            ],
        );
        let e = check_message(&looped, &client).unwrap_err();
        assert_eq!(e, AnswerError::CnameLoop("A.test.".into()));
        assert!(!e.is_mismatch());
        let to_self = upstream_response(&client, vec![cname("a.test.", 5, "a.test.")]);
        assert!(matches!(
            check_message(&to_self, &client),
            Err(AnswerError::CnameLoop(_))
        ));

        let links = |n: usize| -> Vec<Record> {
            (0..n)
                .map(|i| {
                    let from = if i == 0 {
                        "a.test.".to_string()
                    } else {
                        format!("c{i}.test.")
                    };
                    cname(&from, 5, &format!("c{}.test.", i + 1))
                })
                .collect()
        };
        let longest = upstream_response(&client, links(MAX_CNAME_CHAIN));
        assert_eq!(
            check_message(&longest, &client).unwrap().chain.len(),
            MAX_CNAME_CHAIN + 1
        );
        let too_long = upstream_response(&client, links(MAX_CNAME_CHAIN + 1));
        let e = check_message(&too_long, &client).unwrap_err();
        assert_eq!(e, AnswerError::CnameChainTooLong);
        assert!(!e.is_mismatch());
    }

    fn svcb_with_hints(target: &str, v4s: &[u8]) -> SVCB {
        SVCB::new(
            1,
            name(target),
            vec![
                (SvcParamKey::Port, SvcParamValue::Port(443)),
                (
                    SvcParamKey::Ipv4Hint,
                    SvcParamValue::Ipv4Hint(IpHint(
                        v4s.iter().map(|l| A::new(192, 0, 2, *l)).collect(),
                    )),
                ),
                (
                    SvcParamKey::Ipv6Hint,
                    SvcParamValue::Ipv6Hint(IpHint(vec![AAAA::new(
                        0x2001, 0xdb8, 0, 0, 0, 0, 0, 9,
                    )])),
                ),
            ],
        )
    }

    #[test]
    fn addresses_the_caller_refuses_are_removed() {
        let client = client_query("cdn.test.", RecordType::HTTPS);
        let message = upstream_response(
            &client,
            vec![
                a("cdn.test.", 5, 1),
                a("cdn.test.", 5, 2),
                rec(
                    "cdn.test.",
                    5,
                    RData::HTTPS(HTTPS(svcb_with_hints(".", &[2]))),
                ),
                cname("x.test.", 5, "y.test."),
            ],
        );
        let mut answer = check_message(&message, &client).unwrap();
        assert_eq!(answer.retain_addrs(|addr| addr != v4(2)), 2);
        assert_eq!(
            answer.addrs,
            vec![v4(1)],
            "the HTTPS record's v6 hint went with it"
        );
        assert_eq!(answer.stripped, 2);
        let r = to_client(&answer, Transport::Tcp);
        let types: Vec<RecordType> = r.answers.iter().map(Record::record_type).collect();
        assert_eq!(types, [RecordType::A, RecordType::CNAME]);
    }

    #[test]
    fn https_and_svcb_hints_on_the_chain_are_learned() {
        let client = client_query("svc.test.", RecordType::HTTPS);
        let mut message = upstream_response(
            &client,
            vec![
                cname("svc.test.", 100, "edge.test."),
                rec(
                    "edge.test.",
                    10,
                    RData::HTTPS(HTTPS(svcb_with_hints(".", &[1, 2]))),
                ),
                // Off the chain: with hints it goes, without it stays.
                rec(
                    "other.test.",
                    10,
                    RData::HTTPS(HTTPS(svcb_with_hints(".", &[66]))),
                ),
                rec(
                    "plain.test.",
                    10,
                    RData::HTTPS(HTTPS(SVCB::new(1, name("."), vec![]))),
                ),
            ],
        );
        message.add_additional(rec("x.test.", 10, RData::SVCB(svcb_with_hints(".", &[67]))));
        let answer = check_message(&message, &client).unwrap();
        assert_eq!(
            answer.addrs,
            vec![v4(1), v4(2), "2001:db8::9".parse().unwrap()]
        );
        assert_eq!(answer.min_ttl, Some(10));
        assert_eq!(answer.stripped, 2);
        let r = to_client(&answer, Transport::Udp);
        let owners: Vec<String> = r.answers.iter().map(|r| r.name.to_ascii()).collect();
        assert_eq!(owners, ["svc.test.", "edge.test.", "plain.test."]);
        assert!(r.additionals.is_empty());
    }

    #[test]
    fn addresses_of_another_class_are_stripped() {
        let client = client_query("a.test.", RecordType::A);
        let mut chaos = a("a.test.", 5, 9);
        chaos.dns_class = DNSClass::CH;
        let answer = check_message(&upstream_response(&client, vec![chaos]), &client).unwrap();
        assert!(answer.addrs.is_empty());
        assert_eq!(answer.stripped, 1);
    }

    #[test]
    fn mismatches_are_dropped() {
        let client = client_query("a.test.", RecordType::A);
        let good = upstream_response(&client, vec![a("a.test.", 5, 1)]);
        let bytes = good.to_vec().unwrap();
        let e = check(&bytes, &client, UP + 1).unwrap_err();
        assert_eq!(
            e,
            AnswerError::Id {
                expected: UP + 1,
                got: UP
            }
        );

        let mut query = good.clone();
        query.metadata.message_type = MessageType::Query;
        let mut notify = good.clone();
        notify.metadata.op_code = OpCode::Notify;
        let mut other_name = good.clone();
        other_name.queries[0].set_name(name("b.test."));
        let mut other_type = good.clone();
        other_type.queries[0].set_query_type(RecordType::AAAA);
        let mut none = good.clone();
        none.queries.clear();
        let mut two = good.clone();
        two.add_query(client.question.clone());
        for m in [query, notify, other_name, other_type, none, two] {
            let e = check_message(&m, &client).unwrap_err();
            assert!(e.is_mismatch(), "{e}");
        }
        for bad in [&bytes[..5], &bytes[..bytes.len() - 1], b""] {
            let e = check(bad, &client, UP).unwrap_err();
            assert!(matches!(e, AnswerError::Decode(_)) && e.is_mismatch());
        }
    }

    #[test]
    fn the_question_matches_in_any_case() {
        let client = client_query("a.test.", RecordType::A);
        let mut message = upstream_response(&client, vec![a("A.TEST.", 5, 1)]);
        message.queries[0].set_name(name("A.Test."));
        let answer = check_message(&message, &client).unwrap();
        assert_eq!(answer.addrs, vec![v4(1)]);
        assert_eq!(
            to_client(&answer, Transport::Udp).queries[0]
                .name()
                .to_ascii(),
            "a.test."
        );
    }

    #[test]
    fn an_error_without_question_is_taken_without_records() {
        let client = client_query("a.test.", RecordType::A);
        let mut message = upstream_response(&client, vec![a("a.test.", 5, 1)]);
        message.queries.clear();
        message.metadata.response_code = ResponseCode::Refused;
        let answer = check_message(&message, &client).unwrap();
        assert_eq!(answer.rcode, ResponseCode::Refused);
        assert!(answer.addrs.is_empty());
        let r = to_client(&answer, Transport::Udp);
        assert_eq!(r.queries, vec![client.question.clone()]);
        assert!(r.answers.is_empty());
    }

    #[test]
    fn nxdomain_and_tc_pass_through() {
        let client = client_query("gone.test.", RecordType::A);
        let mut message = upstream_response(&client, vec![]);
        message.metadata.response_code = ResponseCode::NXDomain;
        message.add_authority(rec(
            "test.",
            60,
            RData::SOA(SOA::new(name("ns.test."), name("h.test."), 1, 2, 3, 4, 5)),
        ));
        let answer = check_message(&message, &client).unwrap();
        let r = to_client(&answer, Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities.len(), 1, "the SOA stays");

        let mut truncated = upstream_response(&client, vec![a("gone.test.", 5, 1)]);
        truncated.metadata.truncation = true;
        let answer = check_message(&truncated, &client).unwrap();
        assert!(answer.truncated);
        assert_eq!(answer.addrs, vec![v4(1)]);
        let r = to_client(&answer, Transport::Udp);
        assert!(r.metadata.truncation);
        assert_eq!(r.answers.len(), 1);

        // Truncated upstream and too long for the client: the short form, TC still set.
        let many: Vec<Record> = (1..=60).map(|i| a("gone.test.", 5, i)).collect();
        let mut truncated = upstream_response(&client, many);
        truncated.metadata.truncation = true;
        let answer = check_message(&truncated, &client).unwrap();
        let r = to_client(&answer, Transport::Udp);
        assert!(r.metadata.truncation);
        assert!(r.answers.is_empty());
        assert_eq!(to_client(&answer, Transport::Tcp).answers.len(), 60);
    }

    #[test]
    fn edns_is_the_proxys_and_only_for_clients_that_sent_one() {
        let plain = client_query("a.test.", RecordType::A);
        let with_edns = query::parse(
            &client_message_edns("a.test.", RecordType::A, 4096)
                .to_vec()
                .unwrap(),
        )
        .unwrap();
        let mut message = upstream_response(&plain, vec![a("a.test.", 5, 1)]);
        let mut upstream_edns = Edns::new();
        upstream_edns.set_max_payload(4000).set_dnssec_ok(true);
        message.set_edns(upstream_edns);
        let r = to_client(&check_message(&message, &plain).unwrap(), Transport::Udp);
        assert!(r.edns.is_none());
        let r = to_client(
            &check_message(&message, &with_edns).unwrap(),
            Transport::Udp,
        );
        let edns = r.edns.unwrap();
        assert_eq!(edns.max_payload(), crate::EDNS_UDP_SIZE);
        assert!(!edns.flags().dnssec_ok);

        // An extended code (BADCOOKIE) reaches only a client with EDNS.
        message.metadata.response_code = ResponseCode::BADCOOKIE;
        let r = to_client(&check_message(&message, &plain).unwrap(), Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        let r = to_client(
            &check_message(&message, &with_edns).unwrap(),
            Transport::Udp,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::BADCOOKIE);
    }

    #[test]
    fn long_answers_are_truncated_over_udp_only() {
        let many: Vec<Record> = (1..=60).map(|i| a("big.test.", 5, i)).collect();
        let plain = client_query("big.test.", RecordType::A);
        let answer = check_message(&upstream_response(&plain, many.clone()), &plain).unwrap();
        assert_eq!(answer.addrs.len(), 60);
        let udp = answer.to_client(Transport::Udp).unwrap();
        assert!(udp.len() <= 512);
        let r = Message::from_vec(&udp).unwrap();
        assert!(r.metadata.truncation);
        assert_eq!(r.queries, vec![plain.question.clone()]);
        assert!(r.answers.is_empty());
        assert_eq!(r.metadata.id, 0x1234);
        let r = to_client(&answer, Transport::Tcp);
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);

        let big = query::parse(
            &client_message_edns("big.test.", RecordType::A, 1232)
                .to_vec()
                .unwrap(),
        )
        .unwrap();
        let answer = check_message(&upstream_response(&big, many), &big).unwrap();
        let r = to_client(&answer, Transport::Udp);
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
        assert!(r.edns.is_some());
    }

    #[test]
    fn hostile_responses_never_panic() {
        let client = client_query("www.shop.test.", RecordType::HTTPS);
        let mut message = upstream_response(
            &client,
            vec![
                cname("www.shop.test.", 300, "edge.test."),
                rec(
                    "edge.test.",
                    10,
                    RData::HTTPS(HTTPS(svcb_with_hints(".", &[1]))),
                ),
                a("edge.test.", 10, 2),
            ],
        );
        message.add_additional(a("x.test.", 5, 3));
        message.set_edns(Edns::new());
        let good = message.to_vec().unwrap();
        for end in 0..good.len() {
            let _ = check(&good[..end], &client, UP);
        }
        for i in 0..good.len() {
            for flip in [0x01, 0x20, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[i] ^= flip;
                if let Ok(answer) = check(&bytes, &client, UP) {
                    let _ = answer.to_client(Transport::Udp);
                    let _ = answer.to_client(Transport::Tcp);
                }
            }
        }
        // A client message that is also a hostile answer: the id check refuses it.
        let echo = client_message("www.shop.test.", RecordType::HTTPS);
        assert!(
            check(&echo.to_vec().unwrap(), &client, 0x1234)
                .unwrap_err()
                .is_mismatch()
        );
    }
}
