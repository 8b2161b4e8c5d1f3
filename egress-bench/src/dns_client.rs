//! The DNS operations of the load generator ([`crate::client`]): one A question for a name of
//! the bench's zone, sent as a libc resolver sends it, its answer read and checked. Messages
//! are built and parsed with hickory-proto.
//!
//! - [`udp_once`]: a new UDP socket, `connect` to the server, `send`, `recv` (the connected
//!   socket only takes an answer that comes from the address asked), `close`;
//! - [`tcp_once`]: a new TCP connection (`SO_LINGER` 0, as the connect client), the query with
//!   its two-byte length, the answer, `close`;
//! - [`udp_window`]: one connected UDP socket keeping `window` questions in flight, for the
//!   rate a loaded server (or proxy) sustains.
//!
//! Each latency is that of the whole exchange. An answer must carry the question's id and
//! NOERROR with at least one record; anything else is an error.

use std::{
    collections::HashMap,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RecordType},
};

/// How long an answer may take before the exchange fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The A questions a client asks, in turn, with fresh message ids.
pub struct Questions {
    names: Vec<Name>,
    next: usize,
    id: u16,
}

impl Questions {
    pub fn new(names: &[String]) -> io::Result<Self> {
        let names = names
            .iter()
            .map(|n| Name::from_ascii(n).map_err(|e| invalid(format!("name `{n}`: {e}"))))
            .collect::<io::Result<Vec<_>>>()?;
        if names.is_empty() {
            return Err(invalid("no name to ask (--names)".into()));
        }
        Ok(Self {
            names,
            next: 0,
            id: std::process::id() as u16,
        })
    }

    /// How many names there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Asks the last name again next time.
    pub fn back(&mut self) {
        self.next = self.next.wrapping_sub(1);
    }

    /// The next question: its id and its wire form.
    fn next(&mut self) -> io::Result<(u16, Vec<u8>)> {
        let name = self.names[self.next.wrapping_rem(self.names.len())].clone();
        self.next += 1;
        self.id = self.id.wrapping_add(1);
        let mut message = Message::new(self.id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name, RecordType::A));
        let bytes = message
            .to_vec()
            .map_err(|e| invalid(format!("encoding the question: {e}")))?;
        Ok((self.id, bytes))
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Checks that `bytes` answers question `id` with NOERROR and at least one record.
fn check_answer(bytes: &[u8], id: u16) -> io::Result<()> {
    let m = Message::from_vec(bytes).map_err(|e| invalid(format!("a malformed answer: {e}")))?;
    if m.metadata.id != id || m.metadata.message_type != MessageType::Response {
        return Err(invalid(format!(
            "an answer to another question (id {}, wanted {id})",
            m.metadata.id
        )));
    }
    if m.metadata.response_code != ResponseCode::NoError || m.answers.is_empty() {
        return Err(invalid(format!(
            "answer {} with {} records",
            m.metadata.response_code,
            m.answers.len()
        )));
    }
    Ok(())
}

/// A new UDP socket connected to `dst`.
fn udp_to(dst: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect(dst)?;
    sock.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    Ok(sock)
}

/// One question over a new connected UDP socket; returns the duration of the exchange.
pub fn udp_once(dst: SocketAddr, q: &mut Questions) -> io::Result<Duration> {
    let (id, query) = q.next()?;
    let t0 = Instant::now();
    let sock = udp_to(dst)?;
    sock.send(&query)?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf)?;
    drop(sock);
    let dt = t0.elapsed();
    check_answer(&buf[..n], id)?;
    Ok(dt)
}

/// One question over a new TCP connection made by `connect` (which closes with a RST);
/// returns the duration of the exchange.
pub fn tcp_once(
    connect: impl FnOnce() -> io::Result<std::net::TcpStream>,
    q: &mut Questions,
) -> io::Result<Duration> {
    let (id, query) = q.next()?;
    let t0 = Instant::now();
    let mut stream = connect()?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let len = u16::try_from(query.len()).map_err(|_| invalid("question too long".into()))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer)?;
    drop(stream);
    let dt = t0.elapsed();
    check_answer(&answer, id)?;
    Ok(dt)
}

/// `n` questions over one connected UDP socket, `window` of them in flight; returns each
/// answered question's time from its send to its answer, and the errors (questions not
/// answered within the timeout, wrong answers).
pub fn udp_window(
    dst: SocketAddr,
    q: &mut Questions,
    n: usize,
    window: usize,
) -> (Vec<Duration>, Vec<io::Error>) {
    let mut lat = Vec::with_capacity(n);
    let mut errors = Vec::new();
    let sock = match udp_to(dst) {
        Ok(s) => s,
        Err(e) => return (lat, vec![e]),
    };
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    let mut sent = 0;
    let mut buf = [0u8; 1500];
    while lat.len() + errors.len() < n {
        while sent < n && in_flight.len() < window.max(1) {
            match q.next().and_then(|(id, query)| {
                sock.send(&query)?;
                Ok(id)
            }) {
                Ok(id) => {
                    in_flight.insert(id, Instant::now());
                }
                Err(e) => errors.push(e),
            }
            sent += 1;
        }
        if in_flight.is_empty() {
            continue;
        }
        match sock.recv(&mut buf) {
            Ok(len) => {
                let id = buf.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                let Some(t0) = in_flight.remove(&id) else {
                    errors.push(invalid(format!("an answer to no open question (id {id})")));
                    continue;
                };
                match check_answer(&buf[..len], id) {
                    Ok(()) => lat.push(t0.elapsed()),
                    Err(e) => errors.push(e),
                }
            }
            // Whatever is still open is lost.
            Err(e) => {
                for _ in in_flight.drain() {
                    errors.push(io::Error::new(e.kind(), format!("no answer: {e}")));
                }
            }
        }
    }
    (lat, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_take_turns_with_fresh_ids() {
        let mut q = Questions::new(&["a.bench.test".into(), "b.bench.test".into()]).unwrap();
        let (id1, m1) = q.next().unwrap();
        let (id2, m2) = q.next().unwrap();
        assert_eq!(id2, id1.wrapping_add(1));
        let m1 = Message::from_vec(&m1).unwrap();
        let m2 = Message::from_vec(&m2).unwrap();
        assert_eq!(m1.queries[0].name().to_ascii(), "a.bench.test.");
        assert_eq!(m2.queries[0].name().to_ascii(), "b.bench.test.");
        assert!(m1.metadata.recursion_desired);
        assert!(Questions::new(&[]).is_err());
    }

    #[test]
    fn answers_are_checked() {
        let mut q = Questions::new(&["a.bench.test".into()]).unwrap();
        let (id, bytes) = q.next().unwrap();
        let mut m = Message::from_vec(&bytes).unwrap();
        m.metadata.message_type = MessageType::Response;
        let empty = m.to_vec().unwrap();
        assert!(
            check_answer(&empty, id)
                .unwrap_err()
                .to_string()
                .contains("0 records")
        );
        m.add_answer(hickory_proto::rr::Record::from_rdata(
            m.queries[0].name().clone(),
            5,
            hickory_proto::rr::RData::A("127.81.0.1".parse().unwrap()),
        ));
        let good = m.to_vec().unwrap();
        check_answer(&good, id).unwrap();
        assert!(check_answer(&good, id.wrapping_add(1)).is_err());
        m.metadata.response_code = ResponseCode::NXDomain;
        assert!(check_answer(&m.to_vec().unwrap(), id).is_err());
    }
}
