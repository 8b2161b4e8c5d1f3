//! See `egress_fuzz::dns` (`dns_query`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egress_fuzz::dns::query_target(data));
