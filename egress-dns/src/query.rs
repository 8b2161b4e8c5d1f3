//! A client's query: decoded with hickory-proto and checked before anything else looks at it.
//!
//! [`parse`] accepts a message with QR=0, opcode QUERY, exactly one question of class IN whose
//! type is a data type or ANY (not OPT, and no zone transfer: AXFR, IXFR), whose name is not
//! the root and has only letters, digits, `-` and `_` in its labels, and at most one EDNS
//! record, of version 0 (other records the query carries are ignored: nothing of them is
//! used or forwarded). Anything else is a [`QueryError`], which says why ([`Reason`]), keeps
//! what could be read of the message (its header, its question) and names the response code
//! to answer it with ([`QueryError::response_code`]; [`crate::reply::rejection`] builds it).

use hickory_proto::{
    op::{Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RecordType},
    serialize::binary::{BinDecodable, BinDecoder},
};

use crate::PLAIN_UDP_SIZE;

/// A checked client query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientQuery {
    /// The client's message id (its response carries it back).
    pub id: u16,
    /// The question as asked (the name keeps the client's spelling and case).
    pub question: Query,
    /// The question's name as a domain key: lowercase ASCII, labels joined by `.`, no final
    /// dot (`WWW.Example.com.` is `www.example.com`). What policy patterns are matched against.
    pub key: String,
    /// RD: the client asks for recursion.
    pub recursion_desired: bool,
    /// The client's EDNS record, if it sent one.
    pub edns: Option<ClientEdns>,
}

/// What the proxy keeps of a client's EDNS record (its options are not kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientEdns {
    /// The UDP payload size the client advertised, as sent.
    pub udp_size: u16,
    /// DO: the client asked for DNSSEC records.
    pub dnssec_ok: bool,
}

impl ClientQuery {
    /// The question's type.
    pub fn qtype(&self) -> RecordType {
        self.question.query_type()
    }

    /// The question's name as asked.
    pub fn name(&self) -> &Name {
        self.question.name()
    }

    /// The largest UDP response this client accepts: its EDNS UDP size, at least 512; 512
    /// without EDNS.
    pub fn udp_limit(&self) -> u16 {
        self.edns
            .map_or(PLAIN_UDP_SIZE, |e| e.udp_size.max(PLAIN_UDP_SIZE))
    }
}

/// Why a message is not a query the proxy takes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// hickory-proto cannot decode it (too short, bad counts, bad names, two OPT records, …).
    #[error("not a DNS message: {0}")]
    Decode(String),
    /// QR=1: a response, not a query (never answered, so two proxies cannot loop).
    #[error("a response (QR=1), not a query")]
    Response,
    #[error("opcode {0} (only QUERY is answered)")]
    OpCode(OpCode),
    #[error("{0} questions (exactly one is answered)")]
    QuestionCount(usize),
    #[error("class {0} (only IN is answered)")]
    Class(DNSClass),
    #[error("type {0} (OPT and zone transfers are not asked)")]
    Type(RecordType),
    #[error("EDNS version {0} (only version 0 is known)")]
    EdnsVersion(u8),
    /// The root, or a label with a byte other than a letter, digit, `-` or `_`: not a name a
    /// policy can allow.
    #[error("name `{0}` is not a domain name a policy can allow")]
    Name(String),
}

/// A message [`parse`] refused, with what could be read of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct QueryError {
    pub reason: Reason,
    header: Option<Metadata>,
    question: Option<Box<Query>>,
    edns: bool,
}

impl QueryError {
    /// The message's header, if it had 12 bytes.
    pub fn header(&self) -> Option<&Metadata> {
        self.header.as_ref()
    }

    /// The message's id, if it had a header.
    pub fn id(&self) -> Option<u16> {
        self.header.map(|h| h.id)
    }

    /// The message's question, if it decoded and had exactly one.
    pub fn question(&self) -> Option<&Query> {
        self.question.as_deref()
    }

    /// Whether the message decoded with an EDNS record (the answer then carries one).
    pub fn had_edns(&self) -> bool {
        self.edns
    }

    /// The response code to answer with, or `None` when the message gets no answer (no
    /// header to answer, or a response): FORMERR when it does not decode or does not have
    /// one question, NOTIMP for another opcode, REFUSED for another class, a meta type or an
    /// unusable name, BADVERS for an EDNS version above 0.
    pub fn response_code(&self) -> Option<ResponseCode> {
        self.header?;
        Some(match self.reason {
            Reason::Response => return None,
            Reason::Decode(_) | Reason::QuestionCount(_) => ResponseCode::FormErr,
            Reason::OpCode(_) => ResponseCode::NotImp,
            Reason::Class(_) | Reason::Type(_) | Reason::Name(_) => ResponseCode::Refused,
            Reason::EdnsVersion(_) => ResponseCode::BADVERS,
        })
    }
}

/// Decodes and checks a client's query (see the module's documentation for what is accepted).
pub fn parse(bytes: &[u8]) -> Result<ClientQuery, QueryError> {
    let message = match Message::from_vec(bytes) {
        Ok(message) => message,
        Err(e) => {
            let header = Header::read(&mut BinDecoder::new(bytes))
                .ok()
                .map(|h| h.metadata);
            return Err(QueryError {
                reason: Reason::Decode(e.to_string()),
                header,
                question: None,
                edns: false,
            });
        }
    };
    let key = check(&message).map_err(|reason| QueryError {
        reason,
        header: Some(message.metadata),
        question: (message.queries.len() == 1).then(|| Box::new(message.queries[0].clone())),
        edns: message.edns.is_some(),
    })?;
    Ok(ClientQuery {
        id: message.metadata.id,
        key,
        recursion_desired: message.metadata.recursion_desired,
        edns: message.edns.as_ref().map(|e| ClientEdns {
            udp_size: e.max_payload(),
            dnssec_ok: e.flags().dnssec_ok,
        }),
        question: message.queries.into_iter().next().unwrap_or_default(),
    })
}

/// The key of a decoded message's question, or why the message is refused.
fn check(message: &Message) -> Result<String, Reason> {
    if message.metadata.message_type != MessageType::Query {
        return Err(Reason::Response);
    }
    if message.metadata.op_code != OpCode::Query {
        return Err(Reason::OpCode(message.metadata.op_code));
    }
    let [question] = message.queries.as_slice() else {
        return Err(Reason::QuestionCount(message.queries.len()));
    };
    if question.query_class() != DNSClass::IN {
        return Err(Reason::Class(question.query_class()));
    }
    if matches!(
        question.query_type(),
        RecordType::OPT | RecordType::AXFR | RecordType::IXFR
    ) {
        return Err(Reason::Type(question.query_type()));
    }
    if let Some(edns) = &message.edns
        && edns.version() != 0
    {
        return Err(Reason::EdnsVersion(edns.version()));
    }
    key_of(question.name()).ok_or_else(|| Reason::Name(question.name().to_ascii()))
}

/// `name` as a domain key, or `None` for the root or a label with a byte other than an ASCII
/// letter, digit, `-` or `_`.
fn key_of(name: &Name) -> Option<String> {
    if name.is_root() {
        return None;
    }
    let mut key = String::with_capacity(name.len());
    for label in name.iter() {
        if label.is_empty()
            || !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return None;
        }
        if !key.is_empty() {
            key.push('.');
        }
        key.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    Some(key)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::str::FromStr;

    use hickory_proto::op::Edns;

    use super::*;

    /// A client's query for `name` and `qtype` as hickory builds it: id 0x1234, RD set.
    pub(crate) fn client_message(name: &str, qtype: RecordType) -> Message {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message
    }

    /// The same with an EDNS record advertising `udp_size`.
    pub(crate) fn client_message_edns(name: &str, qtype: RecordType, udp_size: u16) -> Message {
        let mut message = client_message(name, qtype);
        let mut edns = Edns::new();
        edns.set_max_payload(udp_size);
        message.set_edns(edns);
        message
    }

    /// A parsed client query for `name` and `qtype`.
    pub(crate) fn client_query(name: &str, qtype: RecordType) -> ClientQuery {
        parse(&client_message(name, qtype).to_vec().unwrap()).unwrap()
    }

    fn parse_message(message: &Message) -> Result<ClientQuery, QueryError> {
        parse(&message.to_vec().unwrap())
    }

    #[test]
    fn a_plain_query() {
        let q = client_query("WWW.Example.COM.", RecordType::AAAA);
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.key, "www.example.com");
        assert_eq!(q.qtype(), RecordType::AAAA);
        assert_eq!(q.name().to_ascii(), "WWW.Example.COM.");
        assert!(q.recursion_desired);
        assert_eq!(q.edns, None);
        assert_eq!(q.udp_limit(), 512);
    }

    #[test]
    fn edns_size_and_do_bit() {
        let mut message = client_message_edns("a.test.", RecordType::A, 4096);
        message.edns.as_mut().unwrap().set_dnssec_ok(true);
        let q = parse_message(&message).unwrap();
        assert_eq!(
            q.edns,
            Some(ClientEdns {
                udp_size: 4096,
                dnssec_ok: true
            })
        );
        assert_eq!(q.udp_limit(), 4096);
        let q = parse_message(&client_message_edns("a.test.", RecordType::A, 100)).unwrap();
        assert_eq!(q.udp_limit(), 512, "below 512 counts as 512");
    }

    #[test]
    fn rd_clear_and_other_types() {
        let mut message = client_message("_svc._tcp.test.", RecordType::SRV);
        message.metadata.recursion_desired = false;
        let q = parse_message(&message).unwrap();
        assert!(!q.recursion_desired);
        assert_eq!(q.key, "_svc._tcp.test");
        for qtype in [RecordType::ANY, RecordType::HTTPS, RecordType::TXT] {
            assert_eq!(
                parse_message(&client_message("x.test.", qtype))
                    .unwrap()
                    .qtype(),
                qtype
            );
        }
    }

    fn reason_of(message: &Message) -> QueryError {
        parse_message(message).unwrap_err()
    }

    #[test]
    fn a_response_is_never_answered() {
        let mut message = client_message("a.test.", RecordType::A);
        message.metadata.message_type = MessageType::Response;
        let e = reason_of(&message);
        assert_eq!(e.reason, Reason::Response);
        assert_eq!(e.id(), Some(0x1234));
        assert_eq!(e.response_code(), None);
    }

    #[test]
    fn refusals_keep_id_and_question() {
        let mut notify = client_message("a.test.", RecordType::SOA);
        notify.metadata.op_code = OpCode::Notify;
        let mut chaos = client_message("version.bind.", RecordType::TXT);
        chaos.queries[0].set_query_class(DNSClass::CH);
        let mut badvers = client_message_edns("a.test.", RecordType::A, 1232);
        badvers.edns.as_mut().unwrap().set_version(1);
        let cases = [
            (notify, Reason::OpCode(OpCode::Notify), ResponseCode::NotImp),
            (chaos, Reason::Class(DNSClass::CH), ResponseCode::Refused),
            (
                client_message("a.test.", RecordType::AXFR),
                Reason::Type(RecordType::AXFR),
                ResponseCode::Refused,
            ),
            (badvers, Reason::EdnsVersion(1), ResponseCode::BADVERS),
            (
                client_message(".", RecordType::NS),
                Reason::Name(".".into()),
                ResponseCode::Refused,
            ),
        ];
        for (message, reason, rcode) in cases {
            let e = reason_of(&message);
            assert_eq!(e.reason, reason);
            assert_eq!(e.id(), Some(0x1234));
            assert_eq!(e.question(), Some(&message.queries[0]));
            assert_eq!(e.response_code(), Some(rcode), "{reason}");
        }
    }

    #[test]
    fn names_a_policy_cannot_allow() {
        for label in [&b"a b"[..], b"a.b", b"\0", b"*", b"caf\xc3\xa9"] {
            let mut name = Name::from_labels([label]).unwrap();
            name = name
                .append_domain(&Name::from_str("test.").unwrap())
                .unwrap();
            let e = reason_of(&{
                let mut m = client_message("x.test.", RecordType::A);
                m.queries[0].set_name(name);
                m
            });
            assert!(matches!(e.reason, Reason::Name(_)), "{label:?}: {e}");
        }
    }

    #[test]
    fn question_count() {
        let mut none = client_message("a.test.", RecordType::A);
        none.queries.clear();
        let mut two = client_message("a.test.", RecordType::A);
        two.add_query(Query::query(
            Name::from_str("b.test.").unwrap(),
            RecordType::A,
        ));
        for (message, count) in [(none, 0), (two, 2)] {
            let e = reason_of(&message);
            assert_eq!(e.reason, Reason::QuestionCount(count));
            assert_eq!(e.question(), None);
            assert_eq!(e.response_code(), Some(ResponseCode::FormErr));
        }
    }

    #[test]
    fn undecodable_bytes() {
        let good = client_message("a.test.", RecordType::A).to_vec().unwrap();
        // Too short for a header: no id, no answer.
        for bytes in [&[][..], &[0x12], &good[..11]] {
            let e = parse(bytes).unwrap_err();
            assert!(matches!(e.reason, Reason::Decode(_)));
            assert_eq!((e.id(), e.response_code()), (None, None));
        }
        // A header and a cut question: FORMERR with the id.
        let e = parse(&good[..good.len() - 2]).unwrap_err();
        assert!(matches!(e.reason, Reason::Decode(_)));
        assert_eq!(e.id(), Some(0x1234));
        assert_eq!(e.response_code(), Some(ResponseCode::FormErr));
        // Counts that promise more than there is, a compression pointer loop.
        let mut lying = good.clone();
        lying[6..8].copy_from_slice(&[0xff, 0xff]);
        assert!(parse(&lying).is_err());
        let mut looped = good[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse(&looped).is_err());
    }

    #[test]
    fn two_opt_records_are_formerr() {
        let good = client_message_edns("a.test.", RecordType::A, 1232)
            .to_vec()
            .unwrap();
        // Repeat the OPT record (the last 11 bytes) and count it.
        let mut bytes = good.clone();
        bytes.extend_from_slice(&good[good.len() - 11..]);
        bytes[11] = 2;
        let e = parse(&bytes).unwrap_err();
        assert!(matches!(e.reason, Reason::Decode(_)), "{e}");
        assert_eq!(e.response_code(), Some(ResponseCode::FormErr));
    }

    #[test]
    fn every_prefix_and_every_byte_flip_is_handled() {
        let good = client_message_edns("www.example.test.", RecordType::HTTPS, 1232)
            .to_vec()
            .unwrap();
        for end in 0..good.len() {
            let _ = parse(&good[..end]);
        }
        for i in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[i] ^= flip;
                let _ = parse(&bytes);
            }
        }
    }
}
