//! See `egress_fuzz::dns` (`dns_exchange`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egress_fuzz::dns::exchange_target(data));
