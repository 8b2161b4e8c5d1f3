//! The Docker watcher (`egress_agent::docker::watch`) and the cgroup lookup
//! (`egress_agent::docker::cgroup_path`) against a real dockerd.
//!
//! - a labelled container's create, start, rename and removal arrive in order, with the right
//!   labels, name and pid, and the fast `Created` arrives before the container's cgroup exists;
//! - a `Sync` lists existing containers completely, and `cgroup_path::find` finds their real
//!   cgroups on this host (default parent, `--cgroup-parent`, `--cgroupns=private`), whose
//!   inode is the kernel's cgroup id;
//! - a dockerd killed under the watcher and started again is followed by a reconnect and a new
//!   `Sync`.
//!
//! Needs a dockerd on `DOCKER_HOST` (else `/var/run/docker.sock`) and the image
//! `egress-test-busybox:latest` (`EGRESS_TEST_IMAGE`); `cargo xtask test --with-docker`
//! provides both. Without them the tests FAIL, with the reason. The shared daemon is never
//! restarted (other tests may be using it): the restart test starts a private dockerd of its
//! own (own socket, data and exec roots; no bridge, no iptables changes), kills it with SIGKILL
//! and starts it again, and removes every trace of it when it ends. Containers run with
//! `--network none`; every one is removed when its test ends, even on panic.
//!
//! Run as root, serially: `cargo test -p egress-tests --test docker_watch -- --test-threads=1`.

use std::{
    collections::HashMap,
    env,
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use egress_agent::{
    cli::LogFormat,
    docker::{
        cgroup_path::{self, CgroupDriver},
        watch::{self, ContainerInfo, DockerEvent},
    },
    sys::{cgroup, mounts},
};
use egress_common::container::ContainerId;
use egress_tests::e2e::PrivateDockerd;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::timeout,
};

const DEFAULT_IMAGE: &str = "egress-test-busybox:latest";
/// How long one expected event may take.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

fn init_logging() {
    egress_agent::logging::init(LogFormat::Text, "warn,egress_agent::docker=info");
}

fn image() -> String {
    env::var("EGRESS_TEST_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned())
}

fn shared_host() -> String {
    env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| watch::DEFAULT_HOST.to_owned())
}

/// `docker --host HOST ARGS...` (at most 60 s); its trimmed stdout, or why it failed.
fn docker_cli(host: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["60", "docker", "--host", host])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running the docker CLI: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`docker --host {host} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[track_caller]
fn docker_ok(host: &str, args: &[&str]) -> String {
    docker_cli(host, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The shared daemon's address, after checking that it answers and has the test image.
#[track_caller]
fn require_dockerd() -> String {
    let host = shared_host();
    if let Err(e) = docker_cli(&host, &["version", "--format", "{{.Server.APIVersion}}"]) {
        panic!(
            "dockerd is not reachable at {host}: {e}\nThese tests need a running Docker daemon: \
             run them with `cargo xtask test --with-docker` (which starts one and imports the \
             test image), or start one yourself (`setsid dockerd >/tmp/dockerd.log 2>&1 &`)."
        );
    }
    let image = image();
    if let Err(e) = docker_cli(&host, &["image", "inspect", "--format", "{{.Id}}", &image]) {
        panic!(
            "the test image {image} is missing on {host}: {e}\n`cargo xtask test --with-docker` \
             imports it (a rootfs of Debian's busybox-static)."
        );
    }
    host
}

fn nanos_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A container name no other run uses.
fn unique(tag: &str) -> String {
    format!(
        "egress-dw-{tag}-{}-{}",
        std::process::id(),
        nanos_now() % 1_000_000_000
    )
}

fn parse_id(s: &str) -> ContainerId {
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("docker printed no container id: {e}"))
}

/// Containers (and cgroup parents) of one test, removed on drop, also on panic.
struct Cleanup {
    host: String,
    containers: Mutex<Vec<String>>,
    /// cgroup parent names (relative to each hierarchy's root) to remove after the containers.
    cgroup_parents: Vec<String>,
}

impl Cleanup {
    fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            containers: Mutex::new(Vec::new()),
            cgroup_parents: Vec::new(),
        }
    }

    /// `docker <args>` that makes a container; the container is removed on drop.
    #[track_caller]
    fn container(&self, args: &[&str]) -> ContainerId {
        let id = parse_id(&docker_ok(&self.host, args));
        self.containers.lock().unwrap().push(id.to_string());
        id
    }

    /// Removes the container of this name (or id) on drop.
    fn add(&self, name_or_id: &str) {
        self.containers.lock().unwrap().push(name_or_id.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.containers.lock().unwrap());
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            if let Err(e) = docker_cli(&self.host, &args) {
                eprintln!("cleanup: {e}");
            }
        }
        for parent in &self.cgroup_parents {
            // Every hierarchy: the cgroupfs driver makes the parent in each v1 controller too.
            let mut dirs: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
                .map(|rd| rd.flatten().map(|e| e.path().join(parent)).collect())
                .unwrap_or_default();
            dirs.push(Path::new("/sys/fs/cgroup").join(parent));
            for dir in dirs.into_iter().filter(|d| d.is_dir()) {
                let t0 = Instant::now();
                while fs::remove_dir(&dir).is_err() && t0.elapsed() < Duration::from_secs(5) {
                    thread::sleep(Duration::from_millis(50));
                }
                if dir.exists() {
                    eprintln!("cleanup: could not remove {}", dir.display());
                }
            }
        }
    }
}

/// Removes the (empty) cgroup parents that runs killed before their cleanup left behind:
/// `egress-dw-parent-<pid>-*` of processes that are gone.
fn sweep_stale_cgroup_parents() {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let Ok(entries) = fs::read_dir(h.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("egress-dw-parent-")
                .and_then(|r| r.split('-').next())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}

fn event_id(ev: &DockerEvent) -> Option<ContainerId> {
    match ev {
        DockerEvent::Sync { .. } => None,
        DockerEvent::Created(i) | DockerEvent::Started(i) | DockerEvent::Renamed(i) => Some(i.id),
        DockerEvent::Died(id) | DockerEvent::Destroyed(id) => Some(*id),
    }
}

fn describe(ev: &DockerEvent) -> String {
    match ev {
        DockerEvent::Sync {
            containers,
            cgroup_driver,
        } => format!("Sync({} containers, {cgroup_driver})", containers.len()),
        DockerEvent::Created(i) => {
            format!("Created({}, {}, pid {:?})", i.name, i.id.short(), i.pid)
        }
        DockerEvent::Started(i) => {
            format!("Started({}, {}, pid {:?})", i.name, i.id.short(), i.pid)
        }
        DockerEvent::Renamed(i) => format!("Renamed({}, {})", i.name, i.id.short()),
        DockerEvent::Died(id) => format!("Died({})", id.short()),
        DockerEvent::Destroyed(id) => format!("Destroyed({})", id.short()),
    }
}

/// `watch::run` in a task, and what it sent.
struct Watcher {
    rx: mpsc::Receiver<DockerEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    seen: Vec<String>,
}

impl Watcher {
    async fn start(host: &str) -> Self {
        let docker = watch::connect_to(host)
            .await
            .unwrap_or_else(|e| panic!("connecting to {host}: {e}"));
        let (tx, rx) = mpsc::channel(1024);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(watch::run(docker, tx, async move {
            let _ = stopped.await;
        }));
        Self {
            rx,
            stop: Some(stop),
            task: Some(task),
            seen: Vec::new(),
        }
    }

    /// The next event and when it was received.
    async fn next(&mut self, what: &str) -> (SystemTime, DockerEvent) {
        match timeout(EVENT_TIMEOUT, self.rx.recv()).await {
            Ok(Some(ev)) => {
                let at = SystemTime::now();
                self.seen.push(describe(&ev));
                (at, ev)
            }
            Ok(None) => panic!("the watcher stopped while waiting for {what}"),
            Err(_) => panic!(
                "no {what} within {EVENT_TIMEOUT:?}; received so far: {:#?}",
                self.seen
            ),
        }
    }

    /// The next `Sync` (other containers' events before it are skipped).
    async fn sync(&mut self) -> (Vec<ContainerInfo>, CgroupDriver) {
        loop {
            if let (
                _,
                DockerEvent::Sync {
                    containers,
                    cgroup_driver,
                },
            ) = self.next("a Sync").await
            {
                return (containers, cgroup_driver);
            }
        }
    }

    /// The next event of container `id`; other containers' events are skipped, a `Sync` is
    /// a failure (nothing should have reconnected).
    async fn next_for(&mut self, id: &ContainerId, what: &str) -> (SystemTime, DockerEvent) {
        loop {
            let (at, ev) = self.next(what).await;
            match event_id(&ev) {
                Some(i) if i == *id => return (at, ev),
                Some(_) => continue,
                None => panic!(
                    "unexpected {} while waiting for {what}; received: {:#?}",
                    describe(&ev),
                    self.seen
                ),
            }
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            timeout(Duration::from_secs(5), t)
                .await
                .expect("the watcher stops within 5 s of its shutdown")
                .expect("the watcher task did not panic");
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[track_caller]
fn expect_info(ev: DockerEvent, kind: &str) -> ContainerInfo {
    match (kind, ev) {
        ("Created", DockerEvent::Created(i))
        | ("Started", DockerEvent::Started(i))
        | ("Renamed", DockerEvent::Renamed(i)) => i,
        (_, other) => panic!("expected {kind}, got {other:?}"),
    }
}

/// The kernel's id of a cgroup, from its file handle (kernfs encodes the node id, which is
/// the cgroup id): independent of `stat`.
fn kernel_cgroup_id(dir: &Path) -> u64 {
    #[repr(C)]
    struct Handle {
        bytes: libc::c_uint,
        kind: libc::c_int,
        id: [u8; 8],
    }
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut h = Handle {
        bytes: 8,
        kind: 0,
        id: [0; 8],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: the handle buffer holds `bytes` bytes after its header; the path is
    // NUL-terminated.
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&mut h as *mut Handle).cast::<libc::file_handle>(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at({}): {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    u64::from_ne_bytes(h.id)
}

fn inspect_pid(host: &str, id: &ContainerId) -> u32 {
    docker_ok(
        host,
        &["inspect", "--format", "{{.State.Pid}}", id.as_str()],
    )
    .parse()
    .expect("a pid")
}

/// Checks the cgroup `find` gives for a running container: it holds the init process, the
/// layout alone finds it too, and its inode is the kernel's cgroup id. Returns it.
#[track_caller]
fn check_cgroup(info: &ContainerInfo, driver: CgroupDriver) -> PathBuf {
    let mount = mounts::cgroup2_mount().expect("a cgroup v2 mount");
    let pid = info.pid.expect("a running container has a pid");
    let parent = info.cgroup_parent.as_deref();
    let dir = cgroup_path::find(&mount, &info.id, Some(pid), parent, driver).unwrap_or_else(|| {
        panic!(
            "no cgroup found for {} (pid {pid}, parent {parent:?}, {driver}); /proc/{pid}/cgroup: {:?}",
            info.name,
            fs::read_to_string(format!("/proc/{pid}/cgroup"))
        )
    });
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "{} holds the init process {pid}: {procs:?}",
        dir.display()
    );
    assert_eq!(
        cgroup_path::find(&mount, &info.id, None, parent, driver).as_ref(),
        Some(&dir),
        "the layout ({driver}, parent {parent:?}) gives the same directory as /proc"
    );
    let id = cgroup::id_of(&dir).unwrap();
    assert_eq!(
        kernel_cgroup_id(&dir),
        id,
        "the inode of {} is the kernel's cgroup id",
        dir.display()
    );
    let subtree = cgroup_path::subtree_ids(&dir);
    assert_eq!(
        subtree.first(),
        Some(&id),
        "subtree_ids starts with the directory"
    );
    dir
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `docker events` of one container from the daemon's log: (action, timeNano).
fn daemon_events(host: &str, id: &ContainerId, since_ns: u128) -> Vec<(String, u128)> {
    let now = nanos_now();
    let until = format!("{}.{:09}", now / 1_000_000_000, now % 1_000_000_000);
    let since = format!("{}", since_ns / 1_000_000_000 - 1);
    let out = docker_ok(
        host,
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            &format!("container={id}"),
            "--filter",
            "type=container",
            "--format",
            "{{.Action}} {{.TimeNano}}",
        ],
    );
    out.lines()
        .filter_map(|l| {
            let (a, t) = l.split_once(' ')?;
            Some((a.to_owned(), t.parse().ok()?))
        })
        .collect()
}

fn ns_of(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_labelled_container_from_create_to_removal() {
    init_logging();
    let host = require_dockerd();
    let mut w = Watcher::start(&host).await;
    let (_, driver) = w.sync().await;
    let cleanup = Cleanup::new(&host);
    let name = unique("life");
    let image = image();

    let label = format!("test.name={name}");
    let id = cleanup.container(&[
        "create",
        "--name",
        &name,
        "--network",
        "none",
        "--dns",
        "127.0.0.1",
        "--label",
        "egress.allow=127.0.0.1:9",
        "--label",
        &label,
        &image,
        "sleep",
        "60",
    ]);
    let want_labels = HashMap::from([
        ("egress.allow".to_owned(), "127.0.0.1:9".to_owned()),
        ("test.name".to_owned(), name.clone()),
    ]);

    // 1. The fast Created, from the event's attributes.
    let fast = expect_info(w.next_for(&id, "the fast Created").await.1, "Created");
    assert_eq!(fast.name, name);
    assert_eq!(fast.image, image);
    assert_eq!(fast.labels, want_labels);
    assert_eq!((fast.pid, fast.running), (None, false));

    // 2. The complete Created, from inspect.
    let full = expect_info(w.next_for(&id, "the complete Created").await.1, "Created");
    assert_eq!(full.name, name);
    assert_eq!(full.labels, want_labels);
    assert_eq!(
        full.dns,
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(full.network_mode, "none");
    assert_eq!(full.networks, vec!["none".to_owned()]);
    assert_eq!(full.cgroup_parent, None);
    assert_eq!((full.pid, full.running), (None, false));

    // 3. Started, with the init pid; its cgroup is where this host puts it.
    docker_ok(&host, &["start", &name]);
    let started = expect_info(w.next_for(&id, "Started").await.1, "Started");
    assert!(started.running);
    assert_eq!(started.pid, Some(inspect_pid(&host, &id)));
    assert_eq!(started.labels, want_labels);
    let dir = check_cgroup(&started, driver);
    if driver == CgroupDriver::Cgroupfs {
        let mount = mounts::cgroup2_mount().unwrap();
        assert_eq!(dir, mount.join("docker").join(id.as_str()));
    }

    // 4. Renamed.
    let new_name = format!("{name}-renamed");
    docker_ok(&host, &["rename", &name, &new_name]);
    let renamed = expect_info(w.next_for(&id, "Renamed").await.1, "Renamed");
    assert_eq!(renamed.name, new_name);
    assert_eq!(renamed.pid, started.pid);

    // 5. Died, then Destroyed.
    docker_ok(&host, &["rm", "-f", id.as_str()]);
    assert_eq!(w.next_for(&id, "Died").await.1, DockerEvent::Died(id));
    assert_eq!(
        w.next_for(&id, "Destroyed").await.1,
        DockerEvent::Destroyed(id)
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_created_comes_before_the_cgroup() {
    init_logging();
    let host = require_dockerd();
    let mount = mounts::cgroup2_mount().expect("a cgroup v2 mount");
    let mut w = Watcher::start(&host).await;
    let (_, driver) = w.sync().await;
    let cleanup = Cleanup::new(&host);
    let image = image();
    let mut report = Vec::new();
    for round in 0..3 {
        let name = unique(&format!("fast{round}"));
        cleanup.add(&name);
        let since = nanos_now();
        // `docker run`: create, then start right away (runc makes the cgroup at start). The
        // CLI runs on another thread while this one receives.
        let run = {
            let (host, name, image) = (host.clone(), name.clone(), image.clone());
            tokio::task::spawn_blocking(move || {
                docker_cli(
                    &host,
                    &[
                        "run",
                        "-d",
                        "--name",
                        &name,
                        "--network",
                        "none",
                        "--label",
                        "egress.allow=127.0.0.1:9",
                        &image,
                        "sleep",
                        "60",
                    ],
                )
            })
        };
        let (fast_at, fast, cgroup_existed) = loop {
            let (at, ev) = w.next("the fast Created").await;
            if let DockerEvent::Created(info) = ev
                && info.name == name
            {
                let existed = cgroup_path::candidates(&mount, &info.id, None, driver)
                    .iter()
                    .any(|d| d.exists());
                break (at, info, existed);
            }
        };
        let id = fast.id;
        assert_eq!(
            parse_id(&run.await.unwrap().unwrap_or_else(|e| panic!("{e}"))),
            id
        );
        assert_eq!(
            fast.labels.get("egress.allow").map(String::as_str),
            Some("127.0.0.1:9")
        );
        let (full_at, full) = w.next_for(&id, "the complete Created").await;
        assert_eq!(expect_info(full, "Created").network_mode, "none");
        let started = expect_info(w.next_for(&id, "Started").await.1, "Started");
        check_cgroup(&started, driver);

        let events = daemon_events(&host, &id, since);
        let at = |action: &str| {
            events
                .iter()
                .find(|(a, _)| a == action)
                .map(|(_, t)| *t)
                .unwrap_or_else(|| panic!("no {action} event of {name} in {events:?}"))
        };
        let (create_ns, start_ns) = (at("create"), at("start"));
        let lag = |t: SystemTime| (ns_of(t) as f64 - create_ns as f64) / 1e6;
        report.push(format!(
            "round {round}: create event → fast Created {:.2} ms, → complete Created {:.2} ms; \
             create → start event {:.1} ms",
            lag(fast_at),
            lag(full_at),
            (start_ns as f64 - create_ns as f64) / 1e6
        ));
        assert!(
            ns_of(fast_at) < start_ns,
            "the fast Created arrived {:.2} ms after the create event, after the start event ({:.2} ms)",
            lag(fast_at),
            (start_ns as f64 - create_ns as f64) / 1e6
        );
        assert!(
            !cgroup_existed,
            "the container's cgroup already existed when the fast Created arrived"
        );
    }
    for line in &report {
        println!("{line}");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_lists_existing_containers_and_finds_their_cgroups() {
    init_logging();
    let host = require_dockerd();
    let image = image();
    let mount = mounts::cgroup2_mount().expect("a cgroup v2 mount");
    sweep_stale_cgroup_parents();
    let parent = unique("parent");
    let mut cleanup = Cleanup::new(&host);
    cleanup.cgroup_parents.push(parent.clone());
    let cgroup_parent = format!("/{parent}");

    let name_a = unique("parent-a");
    let a = cleanup.container(&[
        "run",
        "-d",
        "--name",
        &name_a,
        "--network",
        "none",
        "--dns",
        "127.0.0.53",
        "--dns",
        "::1",
        "--label",
        "egress.allow=127.0.0.1",
        "--cgroup-parent",
        &cgroup_parent,
        &image,
        "sleep",
        "60",
    ]);
    let name_b = unique("cgroupns-b");
    let b = cleanup.container(&[
        "run",
        "-d",
        "--name",
        &name_b,
        "--network",
        "none",
        "--cgroupns",
        "private",
        "--label",
        "egress.mode=audit",
        &image,
        "sleep",
        "60",
    ]);
    let name_c = unique("created-c");
    let c = cleanup.container(&[
        "create",
        "--name",
        &name_c,
        "--network",
        "none",
        "--label",
        "egress.allow=",
        &image,
    ]);

    let mut w = Watcher::start(&host).await;
    let (containers, driver) = w.sync().await;
    let find = |id: &ContainerId| {
        containers
            .iter()
            .find(|i| i.id == *id)
            .unwrap_or_else(|| panic!("{} is not in the Sync", id.short()))
            .clone()
    };

    let ia = find(&a);
    assert_eq!(ia.name, name_a);
    assert_eq!(ia.image, image);
    assert!(ia.running);
    assert_eq!(ia.pid, Some(inspect_pid(&host, &a)));
    assert_eq!(ia.cgroup_parent.as_deref(), Some(cgroup_parent.as_str()));
    assert_eq!(
        ia.dns,
        vec![
            "127.0.0.53".parse::<std::net::IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    assert_eq!(
        ia.labels.get("egress.allow").map(String::as_str),
        Some("127.0.0.1")
    );
    let dir_a = check_cgroup(&ia, driver);
    if driver == CgroupDriver::Cgroupfs {
        assert_eq!(dir_a, mount.join(&parent).join(a.as_str()));
    }

    let ib = find(&b);
    assert!(ib.running);
    assert_eq!(ib.pid, Some(inspect_pid(&host, &b)));
    assert_eq!(
        ib.labels.get("egress.mode").map(String::as_str),
        Some("audit")
    );
    // Inside its private cgroup namespace the container sees itself at the root ...
    let inside = docker_ok(&host, &["exec", b.as_str(), "cat", "/proc/self/cgroup"]);
    assert_eq!(
        cgroup_path::parse_proc_cgroup(&inside).as_deref(),
        Some("/"),
        "inside view: {inside:?}"
    );
    // ... while the host reads its real path, and `find` uses that.
    let dir_b = check_cgroup(&ib, driver);
    if driver == CgroupDriver::Cgroupfs {
        assert_eq!(dir_b, mount.join("docker").join(b.as_str()));
    }

    let ic = find(&c);
    assert_eq!(ic.name, name_c);
    assert_eq!((ic.pid, ic.running), (None, false));
    assert_eq!(ic.labels.get("egress.allow").map(String::as_str), Some(""));
    assert_eq!(
        cgroup_path::find(&mount, &c, None, None, driver),
        None,
        "a container that never started has no cgroup"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resyncs_after_dockerd_restarts() {
    init_logging();
    let shared = require_dockerd();
    let image = image();
    let mut daemon = PrivateDockerd::start("dw");
    let host = daemon.host();
    // The test image, from the shared daemon.
    let tar = daemon.dir.join("image.tar");
    docker_ok(
        &shared,
        &["save", "--output", &tar.to_string_lossy(), &image],
    );
    docker_ok(
        &host,
        &["load", "--quiet", "--input", &tar.to_string_lossy()],
    );

    let name = unique("kept");
    let kept = parse_id(&docker_ok(
        &host,
        &[
            "create",
            "--name",
            &name,
            "--network",
            "none",
            "--label",
            "egress.allow=127.0.0.1",
            &image,
        ],
    ));

    let mut w = Watcher::start(&host).await;
    let (before, driver) = w.sync().await;
    assert!(before.iter().any(|c| c.id == kept && c.name == name));

    // Crash the daemon under the watcher, let it retry a while, and start it again.
    daemon.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        w.rx.try_recv().is_err(),
        "nothing is sent while the daemon is down"
    );
    let restarted = Instant::now();
    daemon.spawn();
    let up = restarted.elapsed();
    let (after, driver_after) = w.sync().await;
    println!(
        "dockerd answered {:.0} ms after the restart began; the new Sync arrived {:.0} ms after it",
        ms(up),
        ms(restarted.elapsed())
    );
    assert_eq!(driver_after, driver);
    let k = after
        .iter()
        .find(|c| c.id == kept)
        .expect("the container that survived the restart is in the new Sync");
    assert_eq!(k.name, name);
    assert_eq!(
        k.labels.get("egress.allow").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(w.seen.iter().filter(|s| s.starts_with("Sync")).count(), 2);

    // The new event stream works.
    let name2 = unique("after");
    let id2 = parse_id(&docker_ok(
        &host,
        &["create", "--name", &name2, "--network", "none", &image],
    ));
    let created = expect_info(
        w.next_for(&id2, "Created after the reconnect").await.1,
        "Created",
    );
    assert_eq!(created.name, name2);
    docker_ok(&host, &["rm", id2.as_str()]);
    loop {
        if w.next_for(&id2, "Destroyed after the reconnect").await.1 == DockerEvent::Destroyed(id2)
        {
            break;
        }
    }
    w.stop().await;
}
