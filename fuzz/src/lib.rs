//! The drivers of the fuzz targets, one module per target: each takes the fuzzer's bytes and
//! drives the library the way the agent does, checking what must hold whatever the bytes. A
//! driver panics only on a broken property (a bug); the libraries never may.
//!
//! The targets (`fuzz_targets/*.rs`) are one-line wrappers, so the same drivers also replay
//! the corpus in a plain `cargo test` (tests/corpus.rs) and make its seeds ([`seeds`]).

pub mod dns;
pub mod event;
pub mod labels;
pub mod policy_file;
pub mod seeds;

/// The fuzzer's bytes as text (the label and policy targets read only UTF-8: Docker labels and
/// TOML files are strings).
pub(crate) fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
