//! See `egress_fuzz::dns` (`dns_answer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egress_fuzz::dns::answer_target(data));
