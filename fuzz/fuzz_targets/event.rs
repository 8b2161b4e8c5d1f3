//! See `egress_fuzz::event`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egress_fuzz::event::run(data));
