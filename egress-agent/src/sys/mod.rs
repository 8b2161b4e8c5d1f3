//! Thin wrappers over the kernel interfaces aya does not expose: bpffs and cgroup v2 mounts,
//! cgroup ids, forced link detach and the kernel's list of programs attached to a cgroup.

pub mod bpf;
pub mod cgroup;
pub mod mounts;
