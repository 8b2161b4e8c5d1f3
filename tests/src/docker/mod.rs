//! Docker for the tests: the CLI ([`client`]), a test's containers ([`containers`]), the one
//! dockerd manager ([`dockerd`]: the shared daemon's start and stop with the undo of its host
//! changes ([`host_state`]), restarting it, and daemons of a test's own ([`private`])), and the
//! busybox test image ([`image`]) and the glibc probe image ([`probe_image`]).

pub mod client;
pub mod containers;
pub mod dockerd;
pub mod host_state;
pub mod image;
pub mod private;
pub mod probe_image;

pub use client::{DEFAULT_DOCKER_HOST, DEFAULT_IMAGE, Docker, image, ping, shared_docker_host};
pub use containers::Containers;
pub use dockerd::{DockerdProcess, SharedDockerdRestart, dockerd_processes, dockerd_socket};
pub use host_state::HostState;
pub use private::PrivateDockerd;
pub use probe_image::{BYPASS_PATH, PROBE_PATH, ensure_glibc_probe_image};
