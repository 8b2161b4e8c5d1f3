//! The query the proxy sends the resolver for a client's question. Nothing of the client's
//! message travels but the question (the name spelled as asked, type, class) and RD: a fresh
//! id, the proxy's own EDNS record (UDP size [`crate::EDNS_UDP_SIZE`], no options, DO and CD
//! clear), no other record.

use hickory_proto::op::{Message, MessageType, OpCode};

use crate::{EncodeError, query::ClientQuery, wire};

/// A random message id (hickory-proto's random source, the one its own queries use).
pub fn random_id() -> u16 {
    Message::query().metadata.id
}

/// The upstream query for `client`, with message id `id` ([`random_id`], or the caller's).
pub fn query(client: &ClientQuery, id: u16) -> Result<Vec<u8>, EncodeError> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = client.recursion_desired;
    message.add_query(client.question.clone());
    message.set_edns(wire::proxy_edns());
    wire::encode(&message)
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::Edns,
        rr::{
            RData, Record, RecordType,
            rdata::{
                A,
                opt::{ClientSubnet, EdnsOption},
            },
        },
    };

    use super::*;
    use crate::query::{self, tests::client_message_edns};

    #[test]
    fn only_the_question_and_rd_travel() {
        let mut message = client_message_edns("MiXed.Example.test.", RecordType::AAAA, 4096);
        message.metadata.checking_disabled = true;
        message.metadata.authentic_data = true;
        let mut edns = Edns::new();
        edns.set_max_payload(4096).set_dnssec_ok(true);
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                std::net::Ipv4Addr::new(10, 0, 0, 0).into(),
                24,
                0,
            )));
        message.set_edns(edns);
        message.add_additional(Record::from_rdata(
            "x.test.".parse().unwrap(),
            5,
            RData::A(A::new(10, 1, 2, 3)),
        ));
        let client = query::parse(&message.to_vec().unwrap()).unwrap();

        let sent = Message::from_vec(&query(&client, 0xbeef).unwrap()).unwrap();
        assert_eq!(sent.metadata.id, 0xbeef);
        assert_eq!(sent.metadata.message_type, MessageType::Query);
        assert_eq!(sent.metadata.op_code, OpCode::Query);
        assert!(sent.metadata.recursion_desired);
        assert!(!sent.metadata.checking_disabled && !sent.metadata.authentic_data);
        assert_eq!(sent.queries, vec![client.question.clone()]);
        assert_eq!(sent.queries[0].name().to_ascii(), "MiXed.Example.test.");
        assert!(sent.answers.is_empty() && sent.authorities.is_empty());
        assert!(sent.additionals.is_empty());
        let edns = sent.edns.expect("EDNS");
        assert_eq!(edns.max_payload(), 1232);
        assert!(!edns.flags().dnssec_ok);
        assert!(edns.options().as_ref().is_empty());
    }

    #[test]
    fn rd_clear_travels_and_ids_vary() {
        let mut message = client_message_edns("a.test.", RecordType::A, 512);
        message.metadata.recursion_desired = false;
        let client = query::parse(&message.to_vec().unwrap()).unwrap();
        let sent = Message::from_vec(&query(&client, 7).unwrap()).unwrap();
        assert!(!sent.metadata.recursion_desired);
        let ids: std::collections::HashSet<u16> = (0..64).map(|_| random_id()).collect();
        assert!(ids.len() > 1);
    }
}
