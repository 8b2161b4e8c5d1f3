//! Cgroup paths as the `cgroup_mkdir` tracepoint names them, and the key a path is known by in
//! the maps ([`crate::maps::PATH_POLICY`], [`crate::maps::CONTAINER_PARENTS`]), computed the
//! same way in the kernel and in user space.
//!
//! The tracepoint's record holds the new cgroup's path relative to the cgroup v2 root (`/`,
//! `/docker/<id>`, `/system.slice/docker-<id>.scope`), made by the kernel in a buffer of
//! [`PATH_BUF`] bytes (`TRACE_CGROUP_PATH_LEN`): a longer path is cut to its first
//! `PATH_BUF - 1` bytes. The program copies the whole record path into a buffer of that size
//! and walks it once ([`walk`]), hashing as it goes, so it knows the key of the path, of its
//! parent and of its ancestors (`/a`, `/a/b` for `/a/b/c`) after one pass.
//!
//! A key is the FNV-1a hash (the `fnv` crate) of the path's bytes and the path's length. Two
//! different paths share a key with a probability of about 2^-64. Such a collision could only
//! *add* a restriction to the colliding cgroup (a policy, or the unclassified default), never
//! lift one: policies of existing cgroups are keyed by cgroup id, not by path.
//!
//! Written for the eBPF verifier: a fixed-size buffer, one bounded loop, no panicking index.

use core::hash::Hasher as _;

use fnv::FnvHasher;

/// Size of the tracepoint's path buffer (the kernel's `TRACE_CGROUP_PATH_LEN`), NUL included.
pub const PATH_BUF: usize = 1024;
/// The longest path a key can be registered for: a record of `PATH_BUF - 1` bytes may be a
/// longer path cut short, so that length never names a path exactly.
pub const MAX_REGISTERED_LEN: usize = PATH_BUF - 2;

const _: () = assert!(PATH_BUF.is_power_of_two());

/// [`crate::maps::CONTAINER_PARENTS`] value bits: why a path is one of this dockerd's cgroup
/// parents. An entry is removed when no bit is left.
///
/// A default parent of either cgroup driver (`/docker`, `/system.slice`), registered while the
/// agent does not know the daemon's driver yet.
pub const PARENT_DEFAULT: u32 = 1 << 0;
/// The default parent of the daemon's cgroup driver (`docker info`).
pub const PARENT_DRIVER: u32 = 1 << 1;
/// A container's `--cgroup-parent`.
pub const PARENT_CONFIGURED: u32 = 1 << 2;
/// The parent of a container's cgroup as the kernel shows it (`/proc/<pid>/cgroup`).
pub const PARENT_SEEN: u32 = 1 << 3;

/// Key of the path maps: the FNV-1a hash of a cgroup path and its length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathKey {
    pub hash: u64,
    pub len: u32,
    pub _pad: u32,
}

crate::user_pod!(PathKey);

impl PathKey {
    #[inline(always)]
    const fn new(hash: u64, len: usize) -> Self {
        Self {
            hash,
            len: len as u32,
            _pad: 0,
        }
    }

    /// The key of `path` (relative to the cgroup v2 root, as the tracepoint names it: `/a/b`,
    /// no trailing `/`; `/` is the root).
    pub fn of(path: &[u8]) -> Self {
        let mut h = FnvHasher::default();
        h.write(path);
        Self::new(h.finish(), path.len())
    }
}

/// Most ancestors below the root a [`walk`] records (`/a`, `/a/b`, ... down to this depth).
/// A path policed with everything below it must not be deeper (the agent refuses it); cgroups
/// below it may be at any depth.
pub const MAX_ANCESTORS: usize = 64;

const _: () = assert!(MAX_ANCESTORS.is_power_of_two());

/// What [`walk`] found in a path: the keys of its ancestors, its parent and itself.
///
/// Kept in a map by the program (it is too big for the stack, and the verifier does not track
/// what a map holds, so the walk's iterations look alike to it whatever they wrote).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathWalk {
    /// `ancestors[..count]`: the keys of the ancestors below the root, outermost first (`/a`,
    /// `/a/b` for `/a/b/c`), at most [`MAX_ANCESTORS`] of them.
    pub ancestors: [PathKey; MAX_ANCESTORS],
    pub count: u64,
    /// The key of the parent (`/` for a cgroup at the top).
    pub parent: PathKey,
    /// The key of the whole path.
    pub whole: PathKey,
}

impl PathWalk {
    pub const fn new() -> Self {
        const Z: PathKey = PathKey::new(0, 0);
        Self {
            ancestors: [Z; MAX_ANCESTORS],
            count: 0,
            parent: Z,
            whole: Z,
        }
    }

    /// The recorded ancestors, outermost first.
    pub fn ancestors(&self) -> &[PathKey] {
        let n = (self.count as usize).min(MAX_ANCESTORS);
        &self.ancestors[..n]
    }
}

impl Default for PathWalk {
    fn default() -> Self {
        Self::new()
    }
}

/// `path[i]`, with the index masked into the buffer so that the verifier sees every access in
/// bounds. Callers only pass in-range indices; the mask never changes a meaningful result.
#[inline(always)]
pub fn byte(path: &[u8; PATH_BUF], i: usize) -> u8 {
    path[i & (PATH_BUF - 1)]
}

/// Walks the path in `path[..len]` once, hashing as it goes, into `out`: the keys of its first
/// [`MAX_ANCESTORS`] ancestors below the root, of its parent and of itself. False (and `out`
/// undefined) for an empty or relative path.
///
/// `/a/b/c` gives the ancestors `/a`, `/a/b`, the parent `/a/b` and the whole `/a/b/c`. A path
/// cut short by the kernel (`PATH_BUF - 1` bytes) still gives its ancestors within the bytes it
/// has; its whole-path key matches no registered path ([`MAX_REGISTERED_LEN`]).
///
/// For the verifier: the loop has no state but its index and the hash; the count is read from
/// and written to `out` (volatile, so the compiler keeps it there), so the two ways through an
/// iteration (a `/` or not) meet again instead of splitting every later one.
#[inline(always)]
pub fn walk(path: &[u8; PATH_BUF], len: usize, out: &mut PathWalk) -> bool {
    // The mask keeps `len` below the buffer (the kernel's string never fills it) without a
    // branch, so the verifier sees one range for it, not one per side of a comparison.
    let len = len & (PATH_BUF - 1);
    if len == 0 || byte(path, 0) != b'/' {
        return false;
    }
    let mut h = FnvHasher::default();
    h.write_u8(b'/');
    out.parent = PathKey::new(h.finish(), 1);
    // SAFETY (all volatile accesses below): a field of `out`, which is valid for writes.
    unsafe { core::ptr::write_volatile(&mut out.count, 0) };
    let mut i = 1;
    while i < len {
        let c = byte(path, i);
        if c == b'/' {
            let key = PathKey::new(h.finish(), i);
            out.parent = key;
            let n = unsafe { core::ptr::read_volatile(&out.count) } as usize;
            if n < MAX_ANCESTORS {
                out.ancestors[n & (MAX_ANCESTORS - 1)] = key;
                unsafe { core::ptr::write_volatile(&mut out.count, n as u64 + 1) };
            }
        }
        h.write_u8(c);
        i += 1;
    }
    out.whole = PathKey::new(h.finish(), len);
    true
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, string::String};

    use super::*;

    fn buf(s: &str) -> [u8; PATH_BUF] {
        let mut b = [0u8; PATH_BUF];
        b[..s.len()].copy_from_slice(s.as_bytes());
        b
    }

    fn walked(s: &str) -> Option<PathWalk> {
        let mut w = PathWalk::new();
        walk(&buf(s), s.len(), &mut w).then_some(w)
    }

    fn key(s: &str) -> PathKey {
        PathKey::of(s.as_bytes())
    }

    #[test]
    fn the_walk_gives_the_keys_user_space_computes() {
        let w = walked("/a/bc/d").unwrap();
        assert_eq!(w.ancestors(), &[key("/a"), key("/a/bc")]);
        assert_eq!(w.parent, key("/a/bc"));
        assert_eq!(w.whole, key("/a/bc/d"));
        let w = walked("/x").unwrap();
        assert!(w.ancestors().is_empty());
        assert_eq!(w.parent, key("/"));
        assert_eq!(w.whole, key("/x"));
    }

    #[test]
    fn docker_layouts_give_their_parent() {
        let id = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
        for (path, parent) in [
            (format!("/docker/{id}"), String::from("/docker")),
            (
                format!("/system.slice/docker-{id}.scope"),
                String::from("/system.slice"),
            ),
            (
                format!("/docker/{id}/docker/{id}"),
                format!("/docker/{id}/docker"),
            ),
            (format!("/{id}"), String::from("/")),
        ] {
            assert_eq!(walked(&path).unwrap().parent, key(&parent), "{path}");
        }
    }

    #[test]
    fn a_prefix_ends_at_a_slash_only() {
        // `/svc2` is not below `/svc`.
        let w = walked("/svc2/x").unwrap();
        assert_eq!(w.ancestors(), &[key("/svc2")]);
        assert!(!w.ancestors().contains(&key("/svc")));
    }

    #[test]
    fn empty_and_relative_paths_give_nothing() {
        assert!(walked("").is_none());
        assert!(walked("a/b").is_none());
    }

    #[test]
    fn only_the_outermost_ancestors_are_recorded() {
        let deep: String = (0..100).map(|i| format!("/{i}")).collect();
        let w = walked(&deep).unwrap();
        assert_eq!(w.ancestors().len(), MAX_ANCESTORS);
        let first: String = (0..MAX_ANCESTORS).map(|i| format!("/{i}")).collect();
        assert_eq!(w.ancestors()[MAX_ANCESTORS - 1], key(&first));
        let parent: String = (0..99).map(|i| format!("/{i}")).collect();
        assert_eq!(w.parent, key(&parent), "the parent is exact at any depth");
        assert_eq!(w.whole, key(&deep));
    }

    #[test]
    fn a_path_cut_short_keeps_its_ancestors() {
        let long: String = std::iter::repeat_n('c', 600).collect();
        let full = format!("/p/{long}/{long}");
        let cut = &full[..PATH_BUF - 1];
        let mut w = PathWalk::new();
        assert!(walk(&buf(cut), cut.len(), &mut w));
        assert_eq!(w.ancestors(), &[key("/p"), key(&format!("/p/{long}"))]);
        assert_eq!(w.whole.len as usize, PATH_BUF - 1);
        assert!(w.whole.len as usize > MAX_REGISTERED_LEN);
        // A length past the buffer never reads beyond it.
        let mut b = [b'/'; PATH_BUF];
        b[1] = b'a';
        assert!(walk(&b, PATH_BUF + 10, &mut w));
        assert!((w.whole.len as usize) < PATH_BUF);
    }

    #[test]
    fn the_hash_is_fnv1a_64() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(PathKey::of(b"").hash, 0xcbf2_9ce4_8422_2325);
        assert_eq!(PathKey::of(b"a").hash, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(PathKey::of(b"foobar").hash, 0x8594_4171_f739_67e8);
        assert_eq!(key("/docker").len, 7);
    }
}
