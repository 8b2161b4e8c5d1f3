//! `event`: a ring-buffer record decoded as the agent decodes it (`egress-agent`'s
//! `observe::events`, on [`Event::from_bytes`] and [`Event::kind`]).
//!
//! Input: the record's bytes (64; shorter is refused, longer has its tail ignored).

use egress_common::{
    AF_INET,
    event::{Event, Kind, NOTICE},
};

pub fn run(data: &[u8]) {
    let Some(e) = Event::from_bytes(data) else {
        assert!(data.len() < Event::SIZE, "a whole record refused");
        return;
    };
    let bytes = e.to_bytes();
    assert_eq!(&bytes[..], &data[..Event::SIZE], "decoding loses bytes");
    assert_eq!(Event::from_bytes(&bytes), Some(e));
    match e.kind() {
        Some(Kind::Notice(n)) => {
            assert_eq!(e.verdict, NOTICE);
            assert_eq!(n as u8, e.reason);
        }
        Some(Kind::Egress {
            verdict,
            reason,
            hook,
        }) => {
            assert_eq!(
                (verdict as u8, reason as u8, hook as u8),
                (e.verdict, e.reason, e.hook)
            );
        }
        None => {}
    }
    let addr = e.destination();
    assert_eq!(addr.is_ipv4(), e.family == AF_INET);
    let comm = e.comm_bytes();
    assert!(comm.len() <= e.comm.len() && !comm.contains(&0));
    let _ = String::from_utf8_lossy(comm);
}
