//! Builds the eBPF programs (`egress-ebpf`) and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`. The build flags live in aya-build; the toolchain pieces it needs
//! (the pinned nightly, its rust-src, a bpf-linker matching its LLVM) come from egress-toolchain,
//! which installs them on first use and says so.

use std::env;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../egress-common/src");
    let mut say = |msg: &str| println!("cargo:warning={msg}");
    let nightly = egress_toolchain::ensure_nightly(&mut say)?;
    egress_toolchain::ensure_rust_src(&nightly, &mut say)?;
    let linker_dir = egress_toolchain::ensure_bpf_linker(&nightly, &mut say)?;
    // SAFETY: build scripts are single-threaded; aya-build spawns cargo with this PATH.
    unsafe { env::set_var("PATH", egress_toolchain::path_with(&linker_dir)) };
    let root = format!(
        "{}/../{}",
        env!("CARGO_MANIFEST_DIR"),
        egress_toolchain::EBPF_PACKAGE
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: egress_toolchain::EBPF_PACKAGE,
            root_dir: &root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(egress_toolchain::NIGHTLY),
    )
}
