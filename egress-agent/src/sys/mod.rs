//! Thin wrappers over the kernel interfaces aya does not expose: bpffs and cgroup v2 mounts,
//! cgroup ids and paths, forced link detach, the kernel's list of programs attached to a
//! cgroup, and killing the processes of a cgroup that cannot be policed.

pub mod bpf;
pub mod cgroup;
pub mod cgroup_kill;
pub mod kernel_path;
pub mod mounts;
