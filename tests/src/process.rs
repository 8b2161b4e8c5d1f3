//! Other processes of the host: the `/proc` look-ups, signals and reaping that stopping a
//! daemon the harness did not spawn itself (dockerd, containerd) needs. (Commands run to
//! completion: [`crate::command`]; daemons of the harness's own: [`crate::daemon`].)

use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

/// The `comm` of a live (not zombie) process, or None.
pub fn live_comm(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // PID (COMM) STATE ...; COMM may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let state = stat.get(close + 1..)?.split_whitespace().next()?;
    (state != "Z" && state != "X").then_some(comm)
}

/// True if `pid` is alive (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    live_comm(pid).is_some()
}

/// The pid in a pid file.
pub fn read_pid_file(path: impl AsRef<Path>) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `kill(pid, sig)`, errors ignored.
pub fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Sends SIGTERM to `pid` if it is still the process named `comm`, waits up to `grace` for it
/// to go, then SIGKILLs it. Exited children of ours are reaped while waiting.
pub fn terminate(pid: i32, comm: &str, grace: Duration) -> Result<()> {
    let is_it = || live_comm(pid).is_some_and(|c| c == comm);
    if !is_it() {
        return Ok(());
    }
    signal(pid, libc::SIGTERM);
    let gone = |d| {
        crate::wait::poll(d, Duration::from_millis(100), || {
            reap_children();
            (!is_it()).then_some(())
        })
        .is_some()
    };
    if gone(grace) {
        return Ok(());
    }
    eprintln!("{comm} (pid {pid}) did not exit within {grace:?} of SIGTERM; sending SIGKILL");
    signal(pid, libc::SIGKILL);
    if gone(Duration::from_secs(10)) {
        return Ok(());
    }
    bail!("{comm} (pid {pid}) survived SIGKILL")
}

/// Makes this process the reaper of its orphaned descendants (a killed daemon's containerd,
/// container shims), so that they are reaped here and do not stay zombies under an init that
/// does not reap.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Reaps any exited children (orphans adopted as subreaper) without blocking.
pub fn reap_children() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(-1, WNOHANG) only reaps our own exited children.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc <= 0 {
            break;
        }
    }
}

/// Reaps exited children for a while: container shims adopted as subreaper exit shortly after
/// their containers are removed.
pub fn reap_for(d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        reap_children();
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a text file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_comm() {
        let me = std::process::id() as i32;
        assert!(live_comm(me).is_some());
        assert!(alive(me));
        assert_eq!(live_comm(i32::MAX), None);
    }
}
