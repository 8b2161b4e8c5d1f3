//! The corpus on stable, without the fuzzer: every seed is in `corpus/` as
//! [`egress_fuzz::seeds`] makes it, and every file of `corpus/` (seeds, inputs a run found
//! worth keeping, regressions) runs through its target's driver without a panic.
//!
//! `EGRESS_FUZZ_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml` (re)writes the seeds.

use std::{fs, path::PathBuf};

use egress_fuzz::{dns, event, labels, policy_file, seeds};
use egress_policy::{labels::Capabilities, policy_file::PolicyFile};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn driver(target: &str) -> fn(&[u8]) {
    match target {
        "labels" => labels::run,
        "policy_file" => policy_file::run,
        "dns_query" => dns::query_target,
        "dns_answer" => dns::answer_target,
        "dns_exchange" => dns::exchange_target,
        "event" => event::run,
        other => panic!("corpus/{other}: no such target"),
    }
}

#[test]
fn seeds_are_in_the_corpus() {
    let write = std::env::var_os("EGRESS_FUZZ_WRITE_SEEDS").is_some();
    for seed in seeds::all() {
        let path = corpus().join(seed.target).join(seed.name);
        if write {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &seed.bytes).unwrap();
        }
        let stored = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (EGRESS_FUZZ_WRITE_SEEDS=1 writes the seeds)",
                path.display()
            )
        });
        assert_eq!(
            stored,
            seed.bytes,
            "{} differs from its seed",
            path.display()
        );
    }
}

#[test]
fn the_documented_policy_file_parses() {
    PolicyFile::parse(seeds::DOC_POLICY_FILE, Capabilities { wildcards: true }).unwrap();
}

#[test]
fn every_corpus_file_replays() {
    let mut n = 0;
    for dir in fs::read_dir(corpus()).unwrap() {
        let dir = dir.unwrap();
        let target = dir.file_name().into_string().unwrap();
        let run = driver(&target);
        for file in fs::read_dir(dir.path()).unwrap() {
            let path = file.unwrap().path();
            run(&fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "an empty corpus");
}
