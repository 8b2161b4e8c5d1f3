//! `egress-bench`: run by `cargo xtask bench [--quick] [--only PARTS]`, which builds the agent
//! first and makes sure dockerd runs; see the library for what it measures.

use std::process::ExitCode;

use clap::Parser;
use egress_bench::BenchArgs;

fn main() -> ExitCode {
    match egress_bench::run(BenchArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            if egress_tests::interrupt::raised() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
