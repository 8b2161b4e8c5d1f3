//! Recognising a Docker container's cgroup by its path, in the kernel (the `cgroup_mkdir`
//! tracepoint) and in user space alike, so both agree on what a container cgroup is.
//!
//! A cgroup is a container's when the last component of its path is the container's full id
//! (64 lowercase hex digits; the cgroupfs driver: `/docker/<id>`, `/<cgroup-parent>/<id>`) or
//! `docker-<id>.scope` (the systemd driver: `/system.slice/docker-<id>.scope`,
//! `/<parent>.slice/docker-<id>.scope`).
//!
//! Only the last component is looked at: the check must stay small enough for the eBPF
//! verifier. Cgroups made *below* a container's own cgroup are not recognised; an unprivileged
//! container cannot make them (Docker mounts its cgroupfs read-only), and a privileged one
//! holds CAP_SYS_ADMIN and is beyond any cgroup policy (see the README's limits).
//!
//! Looking like a container is not enough to be denied as unclassified: other runtimes name
//! their cgroups the same way (Docker in Docker, rootless Docker, containerd). The tracepoint
//! applies the unclassified default only when the cgroup's parent is one of this dockerd's
//! cgroup parents ([`crate::maps::CONTAINER_PARENTS`], keyed by [`crate::cgroup_path::PathKey`]).
//!
//! Written for the eBPF verifier: fixed-size buffers, bounded loops, no panicking index.

#[cfg(feature = "user")]
mod id;

#[cfg(feature = "user")]
pub use id::{BadContainerId, ContainerId};

use crate::cgroup_path::byte;

/// Length of a full container id.
pub const CONTAINER_ID_LEN: usize = 64;
/// Bytes of a cgroup path the tracepoint reads and scans: the whole path of the record.
pub const PATH_SCAN: usize = crate::cgroup_path::PATH_BUF;

const SCOPE_PREFIX: &[u8; 7] = b"docker-";
const SCOPE_SUFFIX: &[u8; 6] = b".scope";
const SCOPE_LEN: usize = SCOPE_PREFIX.len() + CONTAINER_ID_LEN + SCOPE_SUFFIX.len();

/// Key of [`crate::maps::CONTAINERS`]: a container's full id in ASCII hex.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContainerKey {
    pub id: [u8; CONTAINER_ID_LEN],
}

crate::user_pod!(ContainerKey);

/// The value of every [`crate::maps::UNPOLICED`] entry (only the key's presence counts).
pub const UNPOLICED_MARK: u8 = 1;

#[inline(always)]
fn hex_run(path: &[u8; PATH_SCAN], at: usize) -> bool {
    let mut k = 0;
    while k < CONTAINER_ID_LEN {
        let c = byte(path, at + k);
        if !(c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return false;
        }
        k += 1;
    }
    true
}

#[inline(always)]
fn scope_at(path: &[u8; PATH_SCAN], at: usize) -> bool {
    let mut k = 0;
    while k < SCOPE_PREFIX.len() {
        if byte(path, at + k) != SCOPE_PREFIX[k] {
            return false;
        }
        k += 1;
    }
    let tail = at + SCOPE_PREFIX.len() + CONTAINER_ID_LEN;
    let mut k = 0;
    while k < SCOPE_SUFFIX.len() {
        if byte(path, tail + k) != SCOPE_SUFFIX[k] {
            return false;
        }
        k += 1;
    }
    hex_run(path, at + SCOPE_PREFIX.len())
}

/// Offset of the container id in `path[..len]` if the path's last component names a
/// container. `path` holds the path, `len` its length.
#[inline(always)]
pub fn find_container_id(path: &[u8; PATH_SCAN], len: usize) -> Option<usize> {
    if len > PATH_SCAN {
        return None;
    }
    // black_box: keep the compiler from folding `len` into the pointer arithmetic below, where
    // the verifier could no longer see the bounds checked above.
    let len = core::hint::black_box(len);
    // `<...>/<id>`
    if len > CONTAINER_ID_LEN {
        let at = core::hint::black_box(len - CONTAINER_ID_LEN);
        if byte(path, at.wrapping_sub(1)) == b'/' && hex_run(path, at) {
            return Some(at);
        }
    }
    // `<...>/docker-<id>.scope`
    if len > SCOPE_LEN {
        let at = core::hint::black_box(len - SCOPE_LEN);
        if byte(path, at.wrapping_sub(1)) == b'/' && scope_at(path, at) {
            return Some(at + SCOPE_PREFIX.len());
        }
    }
    None
}

/// The container id at `at` (from [`find_container_id`]) as a map key.
#[inline(always)]
pub fn key_at(path: &[u8; PATH_SCAN], at: usize) -> ContainerKey {
    let mut key = ContainerKey {
        id: [0; CONTAINER_ID_LEN],
    };
    let mut k = 0;
    while k < CONTAINER_ID_LEN {
        key.id[k] = byte(path, at + k);
        k += 1;
    }
    key
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn buf(s: &str) -> [u8; PATH_SCAN] {
        let mut b = [0u8; PATH_SCAN];
        b[..s.len()].copy_from_slice(s.as_bytes());
        b
    }

    fn found(s: &str) -> Option<[u8; CONTAINER_ID_LEN]> {
        let b = buf(s);
        find_container_id(&b, s.len()).map(|at| key_at(&b, at).id)
    }

    fn id() -> [u8; CONTAINER_ID_LEN] {
        ID.as_bytes().try_into().unwrap()
    }

    #[test]
    fn cgroupfs_driver() {
        assert_eq!(found(&format!("/docker/{ID}")), Some(id()));
    }

    #[test]
    fn systemd_driver() {
        assert_eq!(
            found(&format!("/system.slice/docker-{ID}.scope")),
            Some(id())
        );
    }

    #[test]
    fn custom_cgroup_parent() {
        assert_eq!(found(&format!("/my/parent/{ID}")), Some(id()));
        assert_eq!(found(&format!("/my.slice/docker-{ID}.scope")), Some(id()));
    }

    #[test]
    fn only_the_last_component_counts() {
        let other = ID.replace('3', "4");
        assert_eq!(found(&format!("/docker/{ID}/init.scope")), None);
        assert_eq!(
            found(&format!("/docker/{other}/docker/{ID}")),
            Some(id()),
            "the innermost container's own cgroup"
        );
    }

    #[test]
    fn a_bare_id_without_a_parent_is_not_a_container() {
        assert_eq!(found(ID), None);
    }

    #[test]
    fn non_container_paths() {
        assert_eq!(found("/"), None);
        assert_eq!(found("/docker"), None);
        assert_eq!(found("/system.slice/ssh.service"), None);
        assert_eq!(found(&format!("/docker/{}", &ID[..63])), None);
        assert_eq!(found(&format!("/docker/{ID}0")), None);
        assert_eq!(found(&format!("/docker/{}", ID.to_uppercase())), None);
        assert_eq!(found(&format!("/system.slice/podman-{ID}.scope")), None);
        assert_eq!(found(&format!("/system.slice/docker-{ID}.scop")), None);
    }

    #[test]
    fn lengths_at_and_past_the_buffer_are_safe() {
        let mut b = [b'a'; PATH_SCAN];
        b[0] = b'/';
        assert_eq!(find_container_id(&b, PATH_SCAN), None);
        assert_eq!(find_container_id(&b, PATH_SCAN + 1), None);
        let tail = format!("/{ID}");
        let start = PATH_SCAN - tail.len();
        b[start..].copy_from_slice(tail.as_bytes());
        assert_eq!(find_container_id(&b, PATH_SCAN), Some(start + 1));
    }
}
