//! `cgroup:cgroup_mkdir` / `cgroup:cgroup_rmdir`: police a new cgroup the moment it is made,
//! before any process runs in it, and forget a cgroup when it is removed.
//!
//! A new cgroup gets, in this order:
//! 1. if its last component names a container (`<id>`, `docker-<id>.scope`) that the agent
//!    knows: that container's policy, or nothing for an unpoliced container;
//! 2. if it names an unknown container and its parent is one of this dockerd's cgroup parents
//!    (`EG_CT_PARENTS`): the unclassified default (`--unclassified deny` denies everything);
//!    a look-alike anywhere else (another runtime's container) is not a container of ours;
//! 3. the policy of the deepest `--policy` path (`EG_PATH_POLICY`) that is the cgroup's own
//!    path or one of its ancestors: a re-made `--policy` cgroup and every cgroup below one.
//!
//! Every container cgroup that gets its registered container's policy, and every cgroup whose
//! entry does not fit in `EG_CGRP_POLICY`, is reported to the agent as a notice in the event
//! ring buffer (`egress_common::event::NOTICE`): the first lets the agent keep the entry in step
//! with later changes of the policy, the second lets it fail the cgroup closed (the tracepoint
//! cannot deny anything itself). A failed insert is also counted
//! (`stats::CGROUP_MKDIR_INSERT_FAILED`).

use aya_ebpf::{
    EbpfContext, helpers::bpf_probe_read_kernel_str_bytes, programs::TracePointContext,
};
use egress_common::{
    cgroup_path::{MAX_ANCESTORS, PATH_BUF, walk},
    container::{find_container_id, key_at},
    event::{NOTICE, Notice},
    maps::{CONFIG_UNCLASSIFIED, UNCLASSIFIED_ALLOW},
    policy::CgroupPolicy,
    stats,
};

use crate::{
    maps::{
        CGROUP_POLICY, CONFIG, CONTAINER_PARENTS, CONTAINERS, MKDIR_SCAN, MkdirScan, PATH_POLICY,
        PATH_SCRATCH, UNPOLICED,
    },
    report::{count, send},
};

// Offsets in the tracepoint record (tracefs events/cgroup/cgroup_mkdir/format, stable since
// 5.x): int root @8, int level @12, u64 id @16, __data_loc char[] path @24.
const ROOT_OFF: usize = 8;
const ID_OFF: usize = 16;
const PATH_LOC_OFF: usize = 24;
/// The cgroup v2 hierarchy's id in `root`.
const CGROUP2_HIERARCHY: i32 = 0;

#[inline(always)]
fn v2_cgroup_id(ctx: &TracePointContext) -> Option<u64> {
    // SAFETY: offsets within the tracepoint record, read with bpf_probe_read_kernel.
    let root: i32 = unsafe { ctx.read_at(ROOT_OFF) }.ok()?;
    if root != CGROUP2_HIERARCHY {
        return None;
    }
    unsafe { ctx.read_at(ID_OFF) }.ok()
}

/// Gives a new cgroup its policy (see the module docs), if it gets one.
#[inline(always)]
pub fn on_mkdir(ctx: &TracePointContext) -> u32 {
    let Some(cgroup_id) = v2_cgroup_id(ctx) else {
        return 0;
    };
    // SAFETY: as above; __data_loc is (len << 16 | offset from the record start).
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(PATH_LOC_OFF) }) else {
        return 0;
    };
    let (Some(buf), Some(scan)) = (PATH_SCRATCH.get_ptr_mut(0), MKDIR_SCAN.get_ptr_mut(0)) else {
        return 0;
    };
    // SAFETY: per-CPU slots nothing else uses during this program run.
    let (buf, scan) = unsafe { (&mut *buf, &mut *scan) };
    // The whole path: the kernel made it in a buffer of the same size (a longer path is cut
    // to its first bytes, which still name its ancestors).
    // SAFETY: an offset within the tracepoint record; the helper bounds the read.
    let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
    let len = match unsafe { bpf_probe_read_kernel_str_bytes(src, buf) } {
        Ok(s) => s.len(),
        Err(_) => return 0,
    };
    scan.len = len as u32;
    if !scan_path(buf, scan) {
        return 0;
    }
    if let Some(at) = find_container_id(buf, len) {
        let key = key_at(buf, at);
        // SAFETY: values are copied out at once.
        match unsafe { CONTAINERS.get(key) } {
            Some(p) => {
                let policy = *p;
                insert(cgroup_id, &policy, true);
                return 0;
            }
            None => {
                // SAFETY: only the presence is read, here and below.
                if unsafe { UNPOLICED.get(key) }.is_some() {
                    return 0;
                }
                let parent = scan.walk.parent;
                let ours = unsafe { CONTAINER_PARENTS.get(&parent) }.is_some();
                let unclassified = CONFIG.get(CONFIG_UNCLASSIFIED).copied().unwrap_or(0);
                if ours && unclassified != UNCLASSIFIED_ALLOW {
                    insert(cgroup_id, &CgroupPolicy::unclassified(), false);
                    return 0;
                }
            }
        }
    }
    if scan.found != 0 {
        let policy = scan.policy;
        insert(cgroup_id, &policy, false);
    }
    0
}

/// Writes the entry of a new cgroup; tells the agent of a registered container's cgroup
/// (`registered`), and of an entry that found no room (counted too).
#[inline(always)]
fn insert(cgroup_id: u64, policy: &CgroupPolicy, registered: bool) {
    match CGROUP_POLICY.insert(cgroup_id, *policy, 0) {
        Ok(()) if registered => notify(cgroup_id, policy, Notice::Classified),
        Ok(()) => {}
        Err(_) => {
            count(stats::CGROUP_MKDIR_INSERT_FAILED);
            notify(cgroup_id, policy, Notice::CgroupMapFull);
        }
    }
}

/// Sends a notice about `cgroup_id` to the agent (counted as lost if the ring buffer is full).
#[inline(always)]
fn notify(cgroup_id: u64, policy: &CgroupPolicy, notice: Notice) {
    send(cgroup_id, policy.policy_id, |ev| {
        ev.verdict = NOTICE;
        ev.reason = notice as u8;
    });
}

/// Walks the path in `buf[..scan.len]` once (`scan.walk`), then looks its ancestors and
/// itself up among the `--policy` paths: the deepest one's policy goes into `scan.policy`
/// (`scan.found`). False for a path that is no absolute path.
///
/// A function of its own (not inlined): the loops end at every possible length, each exit with
/// other bounds on its registers; after the call only the caller's registers are left, so the
/// verifier checks the rest of `on_mkdir` once instead of once per length.
#[inline(never)]
fn scan_path(buf: &[u8; PATH_BUF], scan: &mut MkdirScan) -> bool {
    scan.found = 0;
    if !walk(buf, scan.len as usize, &mut scan.walk) {
        return false;
    }
    // SAFETY: a field of the per-CPU slot; read as the map holds it (see `walk`).
    let n = unsafe { core::ptr::read_volatile(&scan.walk.count) } as usize;
    let mut j = 0;
    // Outermost first: a deeper path's policy replaces an outer one's.
    while j < n && j < MAX_ANCESTORS {
        let key = scan.walk.ancestors[j & (MAX_ANCESTORS - 1)];
        // SAFETY: the value is copied out at once.
        if let Some(p) = unsafe { PATH_POLICY.get(&key) } {
            scan.policy = *p;
            scan.found = 1;
        }
        j += 1;
    }
    let whole = scan.walk.whole;
    // SAFETY: as above.
    if let Some(p) = unsafe { PATH_POLICY.get(&whole) } {
        scan.policy = *p;
        scan.found = 1;
    }
    true
}

/// Drops the policy entry of a removed cgroup so that dead containers leave nothing behind.
#[inline(always)]
pub fn on_rmdir(ctx: &TracePointContext) -> u32 {
    if let Some(cgroup_id) = v2_cgroup_id(ctx) {
        let _ = CGROUP_POLICY.remove(cgroup_id);
    }
    0
}
