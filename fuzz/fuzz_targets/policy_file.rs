//! See `egress_fuzz::policy_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egress_fuzz::policy_file::run(data));
