//! The agent's names in bpffs: the default pin directory and its subdirectories. The host's
//! files the agent reads are in [`crate::host`].

/// Where the agent pins its maps and links. Everything it leaves in the kernel hangs off this
/// directory, so `cleanup` can find it all.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/egress-enforcer";
/// Subdirectory of the pin directory for maps.
pub const MAPS_SUBDIR: &str = "maps";
/// Subdirectory of the pin directory for program links.
pub const LINKS_SUBDIR: &str = "links";
