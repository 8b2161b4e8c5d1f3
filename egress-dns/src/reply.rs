//! The responses the proxy gives itself, without asking a resolver: for a question the policy
//! refuses (NXDOMAIN or REFUSED), for a resolver that failed (SERVFAIL), and for a message
//! [`crate::query::parse`] refused ([`rejection`]: FORMERR, NOTIMP, REFUSED, BADVERS).
//!
//! Each echoes the question (when there is one), copies the id, opcode and RD, sets RA, and
//! carries the proxy's EDNS record when the query had one (or the code needs it).

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};

use crate::{
    EncodeError,
    query::{ClientQuery, QueryError},
    wire,
};

/// NXDOMAIN for `query`: the name does not exist (the default answer for a refused name).
pub fn nxdomain(query: &ClientQuery) -> Result<Vec<u8>, EncodeError> {
    respond(query, ResponseCode::NXDomain)
}

/// REFUSED for `query` (musl stops its search list on it).
pub fn refused(query: &ClientQuery) -> Result<Vec<u8>, EncodeError> {
    respond(query, ResponseCode::Refused)
}

/// SERVFAIL for `query`: the resolver did not answer in time, or answered unusably.
pub fn servfail(query: &ClientQuery) -> Result<Vec<u8>, EncodeError> {
    respond(query, ResponseCode::ServFail)
}

/// FORMERR for `query`.
pub fn formerr(query: &ClientQuery) -> Result<Vec<u8>, EncodeError> {
    respond(query, ResponseCode::FormErr)
}

/// A response with `code` and no records for `query`.
pub fn respond(query: &ClientQuery, code: ResponseCode) -> Result<Vec<u8>, EncodeError> {
    wire::encode(&build(
        Asked {
            id: query.id,
            op_code: OpCode::Query,
            recursion_desired: query.recursion_desired,
            question: Some(&query.question),
            edns: query.edns.is_some(),
        },
        code,
    ))
}

/// The answer to a message [`crate::query::parse`] refused, with
/// [`QueryError::response_code`] (and the question when it was read), or `None` when it gets
/// none: drop it.
pub fn rejection(error: &QueryError) -> Result<Option<Vec<u8>>, EncodeError> {
    let (Some(header), Some(code)) = (error.header(), error.response_code()) else {
        return Ok(None);
    };
    let asked = Asked {
        id: header.id,
        op_code: header.op_code,
        recursion_desired: header.recursion_desired,
        question: error.question(),
        edns: error.had_edns(),
    };
    wire::encode(&build(asked, code)).map(Some)
}

/// What a response copies of the message it answers.
struct Asked<'a> {
    id: u16,
    op_code: OpCode,
    recursion_desired: bool,
    question: Option<&'a Query>,
    edns: bool,
}

fn build(asked: Asked<'_>, code: ResponseCode) -> Message {
    let mut message = Message::error_msg(asked.id, asked.op_code, code);
    message.metadata.recursion_desired = asked.recursion_desired;
    message.metadata.recursion_available = true;
    if let Some(question) = asked.question {
        message.add_query(question.clone());
    }
    // An extended code (BADVERS) only exists in an EDNS record.
    if asked.edns || code.high() > 0 {
        message.set_edns(wire::proxy_edns());
    }
    message
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{MessageType, ResponseCode},
        rr::RecordType,
    };

    use super::*;
    use crate::query::{
        self,
        tests::{client_message, client_message_edns, client_query},
    };

    fn decode(bytes: &[u8]) -> Message {
        Message::from_vec(bytes).unwrap()
    }

    #[test]
    fn each_code_echoes_the_question() {
        let q = client_query("Blocked.Test.", RecordType::A);
        type Build = fn(&ClientQuery) -> Result<Vec<u8>, EncodeError>;
        let builders: [(Build, _); 4] = [
            (nxdomain, ResponseCode::NXDomain),
            (refused, ResponseCode::Refused),
            (servfail, ResponseCode::ServFail),
            (formerr, ResponseCode::FormErr),
        ];
        for (build, code) in builders {
            let r = decode(&build(&q).unwrap());
            assert_eq!(r.metadata.id, 0x1234);
            assert_eq!(r.metadata.message_type, MessageType::Response);
            assert_eq!(r.metadata.response_code, code);
            assert!(r.metadata.recursion_desired && r.metadata.recursion_available);
            assert_eq!(r.queries, vec![q.question.clone()]);
            assert_eq!(r.queries[0].name().to_ascii(), "Blocked.Test.");
            assert!(r.answers.is_empty() && r.authorities.is_empty() && r.additionals.is_empty());
            assert!(r.edns.is_none());
        }
    }

    #[test]
    fn rd_clear_is_copied_and_edns_echoed() {
        let mut message = client_message_edns("a.test.", RecordType::AAAA, 4096);
        message.metadata.recursion_desired = false;
        let q = query::parse(&message.to_vec().unwrap()).unwrap();
        let r = decode(&nxdomain(&q).unwrap());
        assert!(!r.metadata.recursion_desired);
        let edns = r.edns.expect("EDNS echoed");
        assert_eq!(edns.max_payload(), crate::EDNS_UDP_SIZE);
        assert!(edns.options().as_ref().is_empty());
    }

    #[test]
    fn rejections() {
        // Two questions: FORMERR, no question echoed.
        let mut two = client_message("a.test.", RecordType::A);
        two.add_query(two.queries[0].clone());
        let e = query::parse(&two.to_vec().unwrap()).unwrap_err();
        let r = decode(&rejection(&e).unwrap().unwrap());
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert_eq!((r.metadata.id, r.queries.len()), (0x1234, 0));

        // Another opcode: NOTIMP with that opcode.
        let mut status = client_message("a.test.", RecordType::A);
        status.metadata.op_code = OpCode::Status;
        let e = query::parse(&status.to_vec().unwrap()).unwrap_err();
        let r = decode(&rejection(&e).unwrap().unwrap());
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(r.metadata.op_code, OpCode::Status);

        // EDNS version 1: BADVERS, which needs the EDNS record.
        let mut v1 = client_message_edns("a.test.", RecordType::A, 1232);
        v1.edns.as_mut().unwrap().set_version(1);
        let e = query::parse(&v1.to_vec().unwrap()).unwrap_err();
        let r = decode(&rejection(&e).unwrap().unwrap());
        // 16 is both BADVERS and BADSIG; hickory decodes it as the latter.
        assert_eq!(
            u16::from(r.metadata.response_code),
            u16::from(ResponseCode::BADVERS)
        );
        assert_eq!(r.queries, v1.queries);

        // A cut message with a header: FORMERR with the id and RD.
        let bytes = client_message("a.test.", RecordType::A).to_vec().unwrap();
        let e = query::parse(&bytes[..14]).unwrap_err();
        let r = decode(&rejection(&e).unwrap().unwrap());
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert!(r.metadata.recursion_desired);

        // No header, or a response: nothing.
        let e = query::parse(&bytes[..5]).unwrap_err();
        assert!(rejection(&e).unwrap().is_none());
        let mut response = client_message("a.test.", RecordType::A);
        response.metadata.message_type = MessageType::Response;
        let e = query::parse(&response.to_vec().unwrap()).unwrap_err();
        assert!(rejection(&e).unwrap().is_none());
    }
}
