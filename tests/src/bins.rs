//! Finding the binaries the tests run: `egress-probe` (built with the tests) and `egress-agent`
//! (built by `cargo build -p egress-agent`, which `cargo xtask test` does first).

use std::path::PathBuf;

/// `target/<profile>/`, from the running executable's path (`target/<profile>/deps/<test>-<hash>`
/// or `target/<profile>/<bin>`).
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("target/<profile>").to_owned()
    } else {
        deps.to_owned()
    }
}

#[track_caller]
fn find(env: &str, name: &str, how_to_build: &str) -> PathBuf {
    let path = match std::env::var_os(env) {
        Some(p) => PathBuf::from(p),
        None => target_profile_dir().join(name),
    };
    assert!(
        path.is_file(),
        "{name} not found at {} (set {env} to its path, or build it: {how_to_build})",
        path.display()
    );
    path
}

/// The probe binary: `$EGRESS_PROBE_BIN`, or `target/<profile>/egress-probe`.
#[track_caller]
pub fn probe() -> PathBuf {
    find(
        "EGRESS_PROBE_BIN",
        "egress-probe",
        "cargo build -p egress-tests",
    )
}

/// The agent binary: `$EGRESS_AGENT_BIN`, or `target/<profile>/egress-agent`.
#[track_caller]
pub fn agent() -> PathBuf {
    find(
        "EGRESS_AGENT_BIN",
        "egress-agent",
        "cargo build -p egress-agent",
    )
}

/// The bypass binary: `$EGRESS_BYPASS_BIN`, or `target/<profile>/egress-bypass`.
#[track_caller]
pub fn bypass() -> PathBuf {
    find(
        "EGRESS_BYPASS_BIN",
        "egress-bypass",
        "cargo build -p egress-tests",
    )
}
