//! What the programs tell user space: per-CPU counters and ring-buffer records.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use egress_common::{AF_INET, AF_INET6, event::Event, stats};

use crate::{
    dest::{Addr, Dest},
    maps::{EVENTS, STATS},
};

/// Puts `dest`'s family and address (and only those) into a record.
#[inline(always)]
pub fn set_destination(ev: &mut Event, dest: &Dest) {
    match dest.addr {
        Addr::V4(a) => {
            ev.family = AF_INET;
            ev.addr[..4].copy_from_slice(&a);
        }
        Addr::V6(a) => {
            ev.family = AF_INET6;
            ev.addr = a;
        }
    }
}

/// Adds one to the counter in `slot` (see `egress_common::stats`).
#[inline(always)]
pub fn count(slot: u32) {
    if let Some(p) = STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot; nothing else on this CPU runs a program concurrently.
        unsafe { *p += 1 };
    }
}

/// Sends one record: the calling task's pid, tid and comm, `cgroup_id` and `policy_id`, and
/// what `fill` adds. A full ring buffer is counted (`stats::EVENTS_LOST`), never waited on.
#[inline(always)]
pub fn send(cgroup_id: u64, policy_id: u32, fill: impl FnOnce(&mut Event)) {
    send_record(cgroup_id, policy_id, true, fill);
}

/// [`send`] from a program that runs outside the sending task (a packet at egress may leave
/// from a softirq): pid, tid and comm stay zero.
#[inline(always)]
pub fn send_without_task(cgroup_id: u64, policy_id: u32, fill: impl FnOnce(&mut Event)) {
    send_record(cgroup_id, policy_id, false, fill);
}

#[inline(always)]
fn send_record(cgroup_id: u64, policy_id: u32, task: bool, fill: impl FnOnce(&mut Event)) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(stats::EVENTS_LOST);
        return;
    };
    let mut ev = Event::zeroed();
    ev.cgroup_id = cgroup_id;
    ev.policy_id = policy_id;
    if task {
        let pid_tgid = bpf_get_current_pid_tgid();
        ev.pid = (pid_tgid >> 32) as u32;
        ev.tid = pid_tgid as u32;
        if let Ok(comm) = bpf_get_current_comm() {
            ev.comm = comm;
        }
    }
    fill(&mut ev);
    entry.write(ev);
    entry.submit(0);
}
