//! `cgroup:cgroup_mkdir` / `cgroup:cgroup_rmdir`: police a container's cgroup the moment runc
//! makes it, before any process runs in it, and forget a cgroup when it is removed.
//!
//! Every container cgroup that gets its registered container's policy, and every one whose
//! entry does not fit in `EG_CGRP_POLICY`, is reported to the agent as a notice in the event
//! ring buffer (`egress_common::event::NOTICE`): the first lets the agent keep the entry in step
//! with later changes of the policy, the second lets it fail the cgroup closed (the tracepoint
//! cannot deny anything itself). A failed insert is also counted
//! (`stats::CGROUP_MKDIR_INSERT_FAILED`).

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    programs::TracePointContext,
};
use egress_common::{
    container::{PATH_SCAN, find_container_id, key_at},
    event::{Event, NOTICE, Notice},
    maps::{CONFIG_UNCLASSIFIED, UNCLASSIFIED_ALLOW},
    policy::CgroupPolicy,
    stats,
};

use crate::maps::{CGROUP_POLICY, CONFIG, CONTAINERS, EVENTS, PATH_SCRATCH, STATS, UNPOLICED};

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
    let (policy, registered) = match unsafe { CONTAINERS.get(key) } {
        Some(p) => (*p, true),
        None => {
            // SAFETY: only presence is tested.
            if unsafe { UNPOLICED.get(key) }.is_some() {
                return 0;
            }
            let unclassified = CONFIG.get(CONFIG_UNCLASSIFIED).copied().unwrap_or(0);
            if unclassified == UNCLASSIFIED_ALLOW {
                return 0;
            }
            (CgroupPolicy::unclassified(), false)
        }
    };
    match CGROUP_POLICY.insert(cgroup_id, policy, 0) {
        Ok(()) if registered => notify(cgroup_id, &policy, Notice::Classified),
        Ok(()) => {}
        Err(_) => {
            count(stats::CGROUP_MKDIR_INSERT_FAILED);
            notify(cgroup_id, &policy, Notice::CgroupMapFull);
        }
    }
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

#[inline(always)]
fn count(slot: u32) {
    if let Some(p) = STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot; nothing else on this CPU runs a program concurrently.
        unsafe { *p += 1 };
    }
}

/// Sends a notice about `cgroup_id` to the agent (counted as lost if the ring buffer is full).
#[inline(always)]
fn notify(cgroup_id: u64, policy: &CgroupPolicy, notice: Notice) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(stats::EVENTS_LOST);
        return;
    };
    let mut ev = Event::zeroed();
    ev.cgroup_id = cgroup_id;
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.policy_id = policy.policy_id;
    ev.verdict = NOTICE;
    ev.reason = notice as u8;
    if let Ok(comm) = bpf_get_current_comm() {
        ev.comm = comm;
    }
    entry.write(ev);
    entry.submit(0);
}
