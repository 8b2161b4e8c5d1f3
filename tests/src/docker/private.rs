//! A dockerd of the test's own, for the tests that restart or kill the daemon under a running
//! agent without touching the shared one.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{
    Docker, dockerd::START_TIMEOUT, dockerd::wait_answering, host_state::umount_below, ping,
};
use crate::process::{self, alive, become_subreaper, reap_children, reap_for};

/// A dockerd of the test's own: socket, data and exec roots under a temporary directory, no
/// default bridge, no iptables or forwarding changes (its containers use the host network).
/// Restarted with [`PrivateDockerd::restart`]; stopped and removed on drop.
pub struct PrivateDockerd {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl PrivateDockerd {
    #[track_caller]
    pub fn start(tag: &str) -> Self {
        let dir = PathBuf::from(format!(
            "/tmp/egress-e2e-{tag}-{}-{}",
            std::process::id(),
            crate::nanos_now() % 1_000_000
        ));
        fs::create_dir_all(&dir).expect("creating the private dockerd's directory");
        fs::write(dir.join("daemon.json"), "{}\n").expect("daemon.json");
        // Orphans (its containerd) are reaped by us.
        become_subreaper();
        let mut d = Self { dir, child: None };
        d.spawn();
        d
    }

    pub fn docker(&self) -> Docker {
        Docker::new(&self.host())
    }

    /// Its `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Starts the daemon (again, after [`PrivateDockerd::kill`]) and waits until it answers.
    #[track_caller]
    pub fn spawn(&mut self) {
        let dockerd = crate::tools::require(
            "dockerd",
            "docker.io",
            "the restart test (it runs a dockerd of its own)",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("dockerd.log");
        // A dockerd started with `--bridge none` deletes the host's `docker0` (moby's
        // removeDefaultBridgeInterface), which the host's own dockerd and later tests need.
        let docker0 = docker0_addrs();
        let d = &self.dir;
        let child = Command::new(dockerd)
            .arg("--host")
            .arg(self.host())
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting the private dockerd");
        let sock = self.sock();
        let child = self.child.insert(child);
        if let Err(e) = wait_answering(&sock, child, START_TIMEOUT) {
            panic!("the private dockerd {e:#}: {}", self.log_tail());
        }
        if let Some(addrs) = &docker0 {
            restore_docker0(addrs);
        }
    }

    /// SIGTERM, wait for a clean exit (its containers stop), start it again; returns how long
    /// the daemon was away.
    #[track_caller]
    pub fn restart(&mut self) -> Duration {
        let t0 = Instant::now();
        self.terminate();
        self.spawn();
        t0.elapsed()
    }

    /// SIGKILL, as in a crash. Its managed containerd dies with it (parent-death signal); as
    /// our subreaper child it is reaped here: a zombie left to an init that does not reap (as
    /// on these test machines) would look alive to the next dockerd, which would then wait for
    /// it forever.
    pub fn kill(&mut self) {
        let containerd = self.containerd_pid();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = containerd {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                let mut status = 0;
                // SAFETY: waits for one specific pid, adopted by this process as subreaper.
                let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if rc == pid || rc < 0 {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn containerd_pid(&self) -> Option<i32> {
        process::read_pid_file(self.dir.join("exec/containerd/containerd.pid"))
    }

    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::signal(c.id() as i32, libc::SIGTERM);
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if t0.elapsed() > Duration::from_secs(60) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        reap_children();
    }

    pub fn log_tail(&self) -> String {
        process::tail(&self.dir.join("dockerd.log"), 20)
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if ping(&self.sock()) {
            self.docker().remove_containers(None);
        }
        self.terminate();
        // A containerd left over from our directory.
        if let Some(pid) = self.containerd_pid()
            && alive(pid)
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*self.dir.to_string_lossy()) {
                process::signal(pid, libc::SIGKILL);
                thread::sleep(Duration::from_millis(100));
                reap_children();
            }
        }
        umount_below(Path::new(&self.dir));
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup: removing {}: {e}", self.dir.display());
        }
        reap_for(Duration::from_millis(500));
    }
}

/// The IPv4 addresses of the host's `docker0` (`a.b.c.d/len`), None if there is none.
fn docker0_addrs() -> Option<Vec<String>> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", "docker0"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|t| *t == "inet")?;
                w.next().map(str::to_owned)
            })
            .collect(),
    )
}

/// Makes `docker0` again, with `addrs`, if the private dockerd deleted it (the host's dockerd
/// finds its default bridge by name, so it works on as before).
fn restore_docker0(addrs: &[String]) {
    let exists = Command::new("ip")
        .args(["link", "show", "dev", "docker0"])
        .output()
        .is_ok_and(|o| o.status.success());
    if exists {
        return;
    }
    let ip = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "restoring docker0: ip {args:?} failed");
    };
    ip(&["link", "add", "docker0", "type", "bridge"]);
    for a in addrs {
        ip(&["addr", "add", a, "dev", "docker0"]);
    }
    ip(&["link", "set", "docker0", "up"]);
}
