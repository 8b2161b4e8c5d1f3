//! Encoding a message with hickory-proto, whole or within a size limit.

use hickory_proto::{
    ProtoError,
    op::{Edns, Message, emit_message_parts},
    serialize::binary::BinEncoder,
};

use crate::{EDNS_UDP_SIZE, EncodeError};

/// `message` on the wire.
pub(crate) fn encode(message: &Message) -> Result<Vec<u8>, EncodeError> {
    Ok(message.to_vec()?)
}

/// `message` on the wire if all its records fit in `max` bytes, else `None`.
pub(crate) fn encode_within(message: &Message, max: u16) -> Result<Option<Vec<u8>>, EncodeError> {
    let mut bytes = Vec::with_capacity(usize::from(max).min(4096));
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    let header = match emit_message_parts(
        &message.metadata,
        &mut message.queries.iter(),
        &mut message.answers.iter(),
        &mut message.authorities.iter(),
        &mut message.additionals.iter(),
        message.edns.as_ref(),
        message.signature.as_deref(),
        &mut encoder,
    ) {
        Ok(header) => header,
        Err(ProtoError::MaxBufferSizeExceeded(_) | ProtoError::NotAllRecordsWritten { .. }) => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    // A section that did not fit whole is cut short (and TC set): compare the counts.
    let counts = header.counts;
    let additionals = message.additionals.len()
        + usize::from(message.edns.is_some())
        + usize::from(message.signature.is_some());
    let whole = usize::from(counts.answers) == message.answers.len()
        && usize::from(counts.authorities) == message.authorities.len()
        && usize::from(counts.additionals) == additionals;
    Ok(whole.then_some(bytes))
}

/// The proxy's own EDNS record: version 0, UDP size [`EDNS_UDP_SIZE`], no flags, no options.
pub(crate) fn proxy_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_SIZE);
    edns
}
