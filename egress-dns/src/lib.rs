//! egress-dns: the DNS messages of the agent's DNS proxy and the addresses it learns from them.
//! Pure Rust: every message is parsed and built with `hickory-proto`; no sockets, no runtime,
//! no clock (callers pass the time in). Every public function takes arbitrary bytes without
//! panicking, so fuzz targets can call them directly.
//!
//! - [`query`]: a client's question, checked ([`query::parse`]), and why one is refused;
//! - [`reply`]: the responses the proxy gives itself (NXDOMAIN, REFUSED, SERVFAIL, FORMERR, …);
//! - [`upstream`]: the query the proxy sends the resolver for a client's question;
//! - [`answer`]: the resolver's response checked against that question, its CNAME chain, the
//!   addresses to learn, and the response the client gets (addresses off the chain removed);
//! - [`tcp`]: the two-byte length prefix of DNS over TCP;
//! - [`learned`]: an owner's learned addresses, with their expiry and caps.

pub mod answer;
pub mod learned;
pub mod query;
pub mod reply;
pub mod tcp;
pub mod upstream;
mod wire;

/// The UDP payload size the proxy advertises in its EDNS records (to the resolver and to
/// clients): the DNS flag day 2020 value, which avoids IP fragmentation.
pub const EDNS_UDP_SIZE: u16 = 1232;

/// The largest UDP response a client that sent no EDNS record accepts (RFC 1035 4.2.1).
pub const PLAIN_UDP_SIZE: u16 = 512;

/// How a message travels to the client, which sets the size limit of the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// At most the client's UDP size ([`query::ClientQuery::udp_limit`]).
    Udp,
    /// At most 65,535 bytes (the length prefix's limit).
    Tcp,
}

/// A message that `hickory-proto` could not encode.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the DNS message: {0}")]
pub struct EncodeError(#[from] hickory_proto::ProtoError);
