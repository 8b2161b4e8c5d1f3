//! Test harness shared by the privileged tests.

pub mod dns;
