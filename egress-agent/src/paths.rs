//! Every default path the agent uses, in one place.

/// Where the agent pins its maps and links. Everything it leaves in the kernel hangs off this
/// directory, so `cleanup` can find it all.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/egress-enforcer";
/// Subdirectory of the pin directory for maps.
pub const MAPS_SUBDIR: &str = "maps";
/// Subdirectory of the pin directory for program links.
pub const LINKS_SUBDIR: &str = "links";
