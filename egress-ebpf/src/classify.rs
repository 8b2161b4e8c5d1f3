//! `cgroup:cgroup_mkdir` / `cgroup:cgroup_rmdir`: police a container's cgroup the moment runc
//! makes it, before any process runs in it, and forget a cgroup when it is removed.

use aya_ebpf::{
    EbpfContext, helpers::bpf_probe_read_kernel_str_bytes, programs::TracePointContext,
};
use egress_common::{
    container::{PATH_SCAN, find_container_id, key_at},
    maps::{CONFIG_UNCLASSIFIED, UNCLASSIFIED_ALLOW},
    policy::{CgroupPolicy, FLAG_UNPOLICED},
};

use crate::maps::{CGROUP_POLICY, CONFIG, CONTAINERS, PATH_SCRATCH};

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

/// Gives a new container cgroup its container's policy (or the unclassified default).
#[inline(always)]
pub fn on_mkdir(ctx: &TracePointContext) -> u32 {
    let Some(cgroup_id) = v2_cgroup_id(ctx) else {
        return 0;
    };
    // SAFETY: as above; __data_loc is (len << 16 | offset from the record start).
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(PATH_LOC_OFF) }) else {
        return 0;
    };
    let Some(buf) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU slot nothing else uses during this program run.
    let buf = unsafe { &mut *buf };
    // __data_loc: length (with the NUL) in the high half, offset in the low half. Read the
    // last PATH_SCAN - 1 bytes: the container id is the last component.
    let path_len = ((loc >> 16) as usize).saturating_sub(1);
    let skip = path_len.saturating_sub(PATH_SCAN - 1);
    // SAFETY: an offset within the tracepoint record; the helper bounds the read.
    let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize + skip) };
    let len = match unsafe { bpf_probe_read_kernel_str_bytes(src, buf) } {
        Ok(s) => s.len(),
        Err(_) => return 0,
    };
    let Some(at) = find_container_id(buf, len) else {
        return 0;
    };
    let key = key_at(buf, at);
    // SAFETY: values are copied out at once.
    let policy = match unsafe { CONTAINERS.get(key) } {
        Some(p) if p.flags & FLAG_UNPOLICED != 0 => return 0,
        Some(p) => *p,
        None => {
            let unclassified = CONFIG.get(CONFIG_UNCLASSIFIED).copied().unwrap_or(0);
            if unclassified == UNCLASSIFIED_ALLOW {
                return 0;
            }
            CgroupPolicy::unclassified()
        }
    };
    let _ = CGROUP_POLICY.insert(cgroup_id, policy, 0);
    0
}

/// Drops the policy entry of a removed cgroup so that dead containers leave nothing behind.
#[inline(always)]
pub fn on_rmdir(ctx: &TracePointContext) -> u32 {
    if let Some(cgroup_id) = v2_cgroup_id(ctx) {
        let _ = CGROUP_POLICY.remove(cgroup_id);
    }
    0
}
