//! The kernel's own run time of BPF programs (`run_time_ns / run_cnt`).

use std::{os::fd::OwnedFd, time::Duration};

use anyhow::{Context, Result, bail};

/// The kernel's run-time statistics of BPF programs are on while this lives. It uses
/// `BPF_ENABLE_STATS` (the switch behind `sysctl kernel.bpf_stats_enabled`): the kernel turns
/// the statistics off again when the descriptor closes, even if the bench is killed, so the
/// sysctl's own setting is never changed.
pub struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (the run-time statistics of BPF programs)")?;
        Ok(Self { _fd: fd })
    }
}

/// Run time and run count of a loaded program (kernel statistics).
pub fn prog_stats(id: u32) -> Result<(Duration, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info.context("listing loaded BPF programs")?;
        if info.id() == id {
            return Ok((info.run_time(), info.run_count()));
        }
    }
    bail!("BPF program {id} is not loaded")
}
