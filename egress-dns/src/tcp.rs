//! DNS over TCP framing (RFC 1035 4.2.2, RFC 7766): every message is preceded by its length as
//! a two-byte big-endian number. These helpers work on byte slices; the caller does the I/O.

/// Length of the prefix.
pub const PREFIX_LEN: usize = 2;

/// The largest message a frame carries.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

/// A message too long for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a DNS message of {0} bytes does not fit a TCP frame (at most {MAX_MESSAGE_LEN})")]
pub struct TooLong(pub usize);

/// The length prefix of a message of `len` bytes.
pub fn prefix(len: usize) -> Result<[u8; PREFIX_LEN], TooLong> {
    u16::try_from(len)
        .map(u16::to_be_bytes)
        .map_err(|_| TooLong(len))
}

/// `message` framed: its prefix, then the message.
pub fn frame(message: &[u8]) -> Result<Vec<u8>, TooLong> {
    let mut framed = Vec::with_capacity(PREFIX_LEN + message.len());
    framed.extend_from_slice(&prefix(message.len())?);
    framed.extend_from_slice(message);
    Ok(framed)
}

/// What the start of a TCP stream's buffered bytes holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole message; `consumed` bytes (prefix and message) can be dropped from the buffer.
    Message { message: &'a [u8], consumed: usize },
    /// Not yet a whole frame: at least `needed` more bytes are to be read.
    Incomplete { needed: usize },
}

/// The first frame of `buffer`. A zero-length frame is a `Message` of no bytes (which
/// [`crate::query::parse`] refuses).
pub fn next_frame(buffer: &[u8]) -> Frame<'_> {
    let Some((len, rest)) = buffer.split_first_chunk::<PREFIX_LEN>() else {
        return Frame::Incomplete {
            needed: PREFIX_LEN - buffer.len(),
        };
    };
    let len = usize::from(u16::from_be_bytes(*len));
    match rest.get(..len) {
        Some(message) => Frame::Message {
            message,
            consumed: PREFIX_LEN + len,
        },
        None => Frame::Incomplete {
            needed: len - rest.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_read_back() {
        let framed = frame(b"hello").unwrap();
        assert_eq!(framed, b"\x00\x05hello");
        let mut stream = framed.clone();
        stream.extend_from_slice(&frame(&[7; 300]).unwrap());
        let Frame::Message { message, consumed } = next_frame(&stream) else {
            panic!("one whole frame")
        };
        assert_eq!((message, consumed), (&b"hello"[..], 7));
        let Frame::Message { message, consumed } = next_frame(&stream[7..]) else {
            panic!("a second frame")
        };
        assert_eq!((message.len(), consumed), (300, 302));
        assert_eq!(prefix(300).unwrap(), [1, 44]);
    }

    #[test]
    fn partial_frames() {
        assert_eq!(next_frame(b""), Frame::Incomplete { needed: 2 });
        assert_eq!(next_frame(b"\x00"), Frame::Incomplete { needed: 1 });
        assert_eq!(next_frame(b"\x00\x05he"), Frame::Incomplete { needed: 3 });
        assert_eq!(
            next_frame(b"\xff\xff"),
            Frame::Incomplete { needed: 65_535 }
        );
        assert_eq!(
            next_frame(b"\x00\x00rest"),
            Frame::Message {
                message: b"",
                consumed: 2
            }
        );
    }

    #[test]
    fn too_long() {
        assert_eq!(frame(&vec![0; 65_536]), Err(TooLong(65_536)));
        assert_eq!(frame(&vec![0; 65_535]).unwrap().len(), 65_537);
    }
}
