//! See `egress_fuzz::labels`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egress_fuzz::labels::run(data));
