//! Thin wrappers over the kernel interfaces aya does not expose: bpffs and cgroup v2 mounts,
//! cgroup ids and paths, forced link detach, the kernel's list of programs attached to a
//! cgroup, killing the processes of a cgroup that cannot be policed, and handing freed heap
//! back to the kernel.

pub mod bpf;
pub mod cgroup;
pub mod cgroup_kill;
pub mod kernel_path;
pub mod memory;
pub mod mounts;
