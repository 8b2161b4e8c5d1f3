//! Thin wrappers over the kernel interfaces aya does not expose: bpffs and cgroup v2 mounts,
//! cgroup ids and paths, forced link detach and the kernel's list of programs attached to a
//! cgroup.

pub mod bpf;
pub mod cgroup;
pub mod kernel_path;
pub mod mounts;
