//! Docker: following containers through the Engine API, and finding their cgroups.

pub mod cgroup_path;
pub mod images;
pub mod privileges;
pub mod watch;
