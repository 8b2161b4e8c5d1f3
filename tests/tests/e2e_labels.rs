//! End-to-end, whose labels count: an image cannot loosen its own policy, and a near-miss
//! label key never leaves a container unpoliced. Each test builds images of its own
//! `FROM egress-test-busybox:latest` with `LABEL`s (`DOCKER_BUILDKIT=0 docker build`, names
//! `lbl-<test>-<pid>-<n>`, removed at the end even on failure) and an
//! [`egress_tests::e2e::Lab`] on `10.231.<n>.0/24` (n = the test's number below): busybox
//! targets A (`.10`) and B (`.11`) answering `ok <role>` on TCP 8080, a test DNS server on the
//! gateway, and the agent. What a client may reach is judged by what answers: a probe that
//! reads `ok b` reached B; a denied one got EPERM at once and read nothing.
//!
//! 45. `image_audit_cannot_loosen_the_operators_allow`: image `egress.mode=audit`, operator
//!     `--label egress.allow=A`: A reached, B denied (also from the first instruction of a
//!     `docker run`); the warning names the container, the image and the label. Control: the
//!     operator's own `egress.mode=audit` on an image without egress labels is honoured from
//!     the first instruction (the fast path read the image's labels).
//! 46. `image_allow_cannot_widen_the_operators_policy`: image `egress.allow=0.0.0.0/0`; with the
//!     operator's `egress.allow=A` B is denied; with only the operator's `egress.mode=enforce`
//!     both are denied and the warning names the image's label and value.
//! 47. `image_allow_alone_polices_in_enforce_mode`: image `egress.allow=A` and no operator
//!     label: A reached, B denied (enforce), also from the first instruction.
//! 48. `trusted_image_keeps_its_labels`: a policy file trusts one image by reference and one by
//!     id: their `egress.mode=audit` is honoured (B reached, the would-be denial logged); an
//!     untrusted image's `egress.allow=0.0.0.0/0` beside a file rule that only adds A is
//!     ignored (B denied).
//! 49. `near_miss_label_keys_deny_everything`: `Egress.allow`, `EGRESS_ALLOW`, `egress-allow`,
//!     `egress.alow` (each alone, value A): A and B denied, the error line names the key.
//!
//! Needs root, a dockerd and the test image (`cargo xtask test --with-docker`); fails with the
//! reason without them. Run serially: `cargo test -p egress-tests --test e2e_labels --
//! --test-threads=1`.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use egress_tests::e2e::{
    Agent, AgentOpts, Check, Docker, Lab, PORT, Probe, alive, image, probe_script, probes_of,
};
use serde_json::Value;

const ALLOW: &str = "egress.allow";
const MODE: &str = "egress.mode";
const LOG_TIMEOUT: Duration = Duration::from_secs(15);
/// Label of every image these tests build (its value is the image's name), to sweep images
/// of killed runs.
const IMAGE_LABEL: &str = "test.egress-e2e.image";
const AUDITED: &str = "egress would be denied (audit mode)";

fn field<'a>(f: &'a Value, k: &str) -> &'a str {
    f[k].as_str().unwrap_or_default()
}

/// `10.231.<n>.<host>`, the address a lab's target gets (known before the lab exists, for
/// images that name it).
fn lab_ip(n: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 231, n, host))
}

// ---------------------------------------------------------------------------------------------
// Images of the test's own

static IMAGES: AtomicUsize = AtomicUsize::new(0);

/// An image built `FROM` the test image with `LABEL`s; removed (with its build directory) on
/// drop. Declare it before the [`Lab`], so that the lab's containers are gone first.
struct TestImage {
    docker: Docker,
    /// `lbl-<tag>-<pid>-<n>:latest`.
    name: String,
    dir: PathBuf,
}

impl TestImage {
    #[track_caller]
    fn build(docker: &Docker, tag: &str, labels: &[(&str, &str)]) -> Self {
        sweep_images(docker);
        let n = IMAGES.fetch_add(1, Ordering::Relaxed);
        let repo = format!("lbl-{tag}-{}-{n}", std::process::id());
        let img = Self {
            docker: docker.clone(),
            name: format!("{repo}:latest"),
            dir: PathBuf::from(format!("/tmp/egress-e2e-{repo}")),
        };
        let _ = fs::remove_dir_all(&img.dir);
        fs::create_dir_all(&img.dir).expect("the image's build directory");
        let mut dockerfile = format!("FROM {}\nLABEL \"{IMAGE_LABEL}\"=\"{repo}\"\n", image());
        for (k, v) in labels {
            dockerfile.push_str(&format!("LABEL {k:?}={v:?}\n"));
        }
        fs::write(img.dir.join("Dockerfile"), &dockerfile).expect("writing the Dockerfile");
        let out = Command::new("timeout")
            .args(["120", "docker", "--host", &docker.host, "build", "-q", "-t"])
            .arg(&img.name)
            .arg(&img.dir)
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::null())
            .output()
            .expect("running docker build");
        assert!(
            out.status.success(),
            "docker build of {} failed ({}): {}{}\nDockerfile:\n{dockerfile}",
            img.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("built {} with {labels:?}", img.name);
        img
    }

    /// `sha256:...`.
    #[track_caller]
    fn id(&self) -> String {
        self.docker
            .run(&["image", "inspect", "--format", "{{.Id}}", &self.name])
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        if let Err(e) = self.docker.try_run(&["rmi", "-f", &self.name]) {
            eprintln!("cleanup: {e}");
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Removes the images of runs that were killed before their cleanup (`lbl-<tag>-<pid>-<n>`
/// with a dead pid).
fn sweep_images(docker: &Docker) {
    let Ok(list) = docker.try_run(&[
        "images",
        "--filter",
        &format!("label={IMAGE_LABEL}"),
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]) else {
        return;
    };
    for name in list.lines() {
        let repo = name.split(':').next().unwrap_or_default();
        let pid = repo
            .strip_prefix("lbl-")
            .and_then(|r| r.rsplit('-').nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id() as i32
            && !alive(pid)
        {
            eprintln!("removing the leftover image {name}");
            let _ = docker.try_run(&["rmi", "-f", name]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Probes of A and B (TCP 8080).
fn checks(ip_a: IpAddr, ip_b: IpAddr) -> [Check; 2] {
    [Check::tcp("A", ip_a, PORT), Check::tcp("B", ip_b, PORT)]
}

/// What the probes of A and B must have got: reached, or denied at once.
#[track_caller]
fn assert_reach(p: &[Probe], a: bool, b: bool, context: &str) {
    println!("{context}: {p:?}");
    for (probe, (role, reachable)) in p.iter().zip([("a", a), ("b", b)]) {
        if reachable {
            assert!(
                probe.reached(role),
                "{context}: {role} should answer: {probe:?}"
            );
        } else {
            probe.assert_denied(&format!("{context}: to {role}"));
            assert!(
                !probe.reached(role),
                "{context}: {role} answered: {probe:?}"
            );
        }
    }
}

/// `docker run --rm` from `image` of a client that probes A and B as its very first
/// instructions (before the complete `Created` can have reached the agent).
#[track_caller]
fn first_instructions(
    lab: &Lab,
    image: &str,
    role: &str,
    labels: &[(&str, &str)],
    checks: &[Check],
) -> Vec<Probe> {
    let (out, wall) = lab.run_rm_from(image, role, labels, &probe_script(checks));
    println!("{role}: docker run --rm took {wall:?}:\n{out}");
    probes_of(&out, checks)
}

/// The warning about an image's label of this container.
#[track_caller]
fn image_warning(agent: &Agent, container: &str, label: &str) -> Value {
    agent.wait_for(
        &format!("a warning about {label} of {container}'s image"),
        LOG_TIMEOUT,
        |f| field(f, "container") == container && field(f, "label") == label,
    )
}

/// The status `mode` of a container (`enforce`, `audit`).
#[track_caller]
fn mode_of(lab: &Lab, id: &str) -> String {
    let c = lab
        .pin
        .container(id)
        .expect("the container is in the status");
    assert_eq!(c["policed"], true, "{c}");
    field(&c, "mode").to_owned()
}

// ---------------------------------------------------------------------------------------------
// The tests

/// 45. An image's `egress.mode=audit` does not survive the operator's allow list.
#[test]
fn image_audit_cannot_loosen_the_operators_allow() {
    const N: u8 = 45;
    let docker = Docker::require();
    let img = TestImage::build(&docker, "audit", &[(MODE, "audit")]);
    let plain = TestImage::build(&docker, "plain", &[("org.example.title", "plain")]);
    let mut lab = Lab::new("lbl-audit", N);
    let (a, b) = (lab.start_target("a", 10), lab.start_target("b", 11));
    let (ip_a, ip_b) = (a.ip.unwrap(), b.ip.unwrap());
    lab.start_agent(&AgentOpts::default());
    let allow_a = [(ALLOW, ip_a.to_string())];
    let allow_a: Vec<(&str, &str)> = allow_a.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let (run, p) = lab.probe_client_from(
        &img.name,
        "imgaudit",
        &allow_a,
        &checks(ip_a, ip_b),
        &[ip_a.to_string()],
    );
    assert_reach(&p, true, false, "image audit + operator allow A");
    assert_eq!(mode_of(&lab, &run.id), "enforce");
    let w = image_warning(lab.agent(), &run.name, MODE);
    println!("log: {w}");
    assert_eq!(field(&w, "image"), img.name, "{w}");
    assert_eq!(field(&w, "token"), "audit", "{w}");
    let msg = field(&w, "message");
    assert!(
        msg.contains(&img.name) && msg.contains("egress.mode=audit"),
        "the warning names the image and the label: {w}"
    );
    let audited = lab
        .agent()
        .messages(AUDITED)
        .into_iter()
        .any(|f| field(&f, "container") == run.name);
    assert!(
        !audited,
        "B was audited, not denied:\n{}",
        lab.agent().log_text()
    );

    // The same from the first instruction of `docker run` (the fast Created decides).
    let p = first_instructions(
        &lab,
        &img.name,
        "imgaudit_rm",
        &allow_a,
        &checks(ip_a, ip_b),
    );
    assert_reach(
        &p,
        true,
        false,
        "docker run, image audit + operator allow A",
    );

    // Control: the operator's own audit mode, on an image with other labels, from the first
    // instruction on.
    let mut own = allow_a.clone();
    own.push((MODE, "audit"));
    let p = first_instructions(&lab, &plain.name, "ownaudit_rm", &own, &checks(ip_a, ip_b));
    assert_reach(&p, true, true, "docker run, the operator's own audit");
    // (The only audit-mode container of this lab; it may be gone before its line is written.)
    lab.agent().wait_for(
        "auditing the operator's audit container",
        LOG_TIMEOUT,
        |f| field(f, "message") == AUDITED && field(f, "destination") == ip_b.to_string(),
    );
}

/// 46. An image's `egress.allow=0.0.0.0/0` widens nothing the operator labelled.
#[test]
fn image_allow_cannot_widen_the_operators_policy() {
    const N: u8 = 46;
    let docker = Docker::require();
    let img = TestImage::build(&docker, "wide", &[(ALLOW, "0.0.0.0/0")]);
    let mut lab = Lab::new("lbl-wide", N);
    let (a, b) = (lab.start_target("a", 10), lab.start_target("b", 11));
    let (ip_a, ip_b) = (a.ip.unwrap(), b.ip.unwrap());
    lab.start_agent(&AgentOpts::default());

    let a_only = ip_a.to_string();
    let (_, p) = lab.probe_client_from(
        &img.name,
        "wideallow",
        &[(ALLOW, &a_only)],
        &checks(ip_a, ip_b),
        std::slice::from_ref(&a_only),
    );
    assert_reach(&p, true, false, "image 0.0.0.0/0 + operator allow A");

    let (run, p) = lab.probe_client_from(
        &img.name,
        "wideenforce",
        &[(MODE, "enforce")],
        &checks(ip_a, ip_b),
        &[],
    );
    assert_reach(&p, false, false, "image 0.0.0.0/0 + operator mode=enforce");
    let w = image_warning(lab.agent(), &run.name, ALLOW);
    println!("log: {w}");
    assert_eq!(field(&w, "image"), img.name, "{w}");
    assert_eq!(field(&w, "token"), "0.0.0.0/0", "{w}");
    assert!(
        field(&w, "message").contains(&img.name),
        "the warning names the image: {w}"
    );
}

/// 47. An image's own allow list polices a container the operator did not label, in enforce
///     mode: stricter is fine.
#[test]
fn image_allow_alone_polices_in_enforce_mode() {
    const N: u8 = 47;
    let docker = Docker::require();
    let ip_a = lab_ip(N, 10);
    let img = TestImage::build(&docker, "own", &[(ALLOW, &ip_a.to_string())]);
    let mut lab = Lab::new("lbl-own", N);
    let (a, b) = (lab.start_target("a", 10), lab.start_target("b", 11));
    assert_eq!(a.ip, Some(ip_a));
    let ip_b = b.ip.unwrap();
    lab.start_agent(&AgentOpts::default());

    let (run, p) = lab.probe_client_from(
        &img.name,
        "own",
        &[],
        &checks(ip_a, ip_b),
        &[ip_a.to_string()],
    );
    assert_reach(&p, true, false, "image allow A, no operator label");
    assert_eq!(mode_of(&lab, &run.id), "enforce");
    let p = first_instructions(&lab, &img.name, "own_rm", &[], &checks(ip_a, ip_b));
    assert_reach(
        &p,
        true,
        false,
        "docker run, image allow A, no operator label",
    );
}

/// 48. Images the policy file trusts keep their labels; others do not, beside a file rule.
#[test]
fn trusted_image_keeps_its_labels() {
    const N: u8 = 48;
    let docker = Docker::require();
    let ip_a = lab_ip(N, 10);
    let by_name = TestImage::build(
        &docker,
        "trustname",
        &[(MODE, "audit"), (ALLOW, &ip_a.to_string())],
    );
    let by_id = TestImage::build(&docker, "trustid", &[(MODE, "audit")]);
    let untrusted = TestImage::build(&docker, "untrusted", &[(ALLOW, "0.0.0.0/0")]);
    let team = format!("lbl-team-{}", std::process::id());
    let dir = PathBuf::from(format!("/tmp/egress-e2e-lbl-trust-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("the policy file's directory");
    struct RmDir(PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    let file = dir.join("policy.toml");
    // By reference without the tag (normalized to :latest), and by id.
    let by_name_ref = by_name.name.trim_end_matches(":latest").to_owned();
    let policy = format!(
        "trusted_images = [\"{by_name_ref}\", \"{}\"]\n\n\
         [[container]]\n\
         label = \"test.egress-e2e.lbl-team={team}\"\n\
         allow = [\"{ip_a}\"]\n",
        by_id.id()
    );
    fs::write(&file, &policy).expect("writing the policy file");
    println!("policy file:\n{policy}");
    let mut lab = Lab::new("lbl-trust", N);
    let (a, b) = (lab.start_target("a", 10), lab.start_target("b", 11));
    assert_eq!(a.ip, Some(ip_a));
    let ip_b = b.ip.unwrap();
    lab.start_agent(&AgentOpts {
        policy_file: Some(file.clone()),
        ..AgentOpts::default()
    });

    // Trusted by reference: the image's audit mode and allow list, no operator label.
    let (run, p) = lab.probe_client_from(
        &by_name.name,
        "trustname",
        &[],
        &checks(ip_a, ip_b),
        &[ip_a.to_string()],
    );
    assert_reach(&p, true, true, "trusted by reference, image audit");
    assert_eq!(mode_of(&lab, &run.id), "audit");
    lab.agent()
        .wait_for("auditing the trusted image's container", LOG_TIMEOUT, |f| {
            field(f, "message") == AUDITED
                && field(f, "container") == run.name
                && field(f, "destination") == ip_b.to_string()
        });

    // Trusted by id: the image's audit mode beside the operator's allow list.
    let a_only = ip_a.to_string();
    let (run, p) = lab.probe_client_from(
        &by_id.name,
        "trustid",
        &[(ALLOW, &a_only)],
        &checks(ip_a, ip_b),
        std::slice::from_ref(&a_only),
    );
    assert_reach(
        &p,
        true,
        true,
        "trusted by id, image audit + operator allow A",
    );
    assert_eq!(mode_of(&lab, &run.id), "audit");

    // Not trusted: the image's 0.0.0.0/0 beside a file rule that only adds A.
    let team_label = format!("test.egress-e2e.lbl-team={team}");
    let (key, value) = team_label.split_once('=').unwrap();
    let (run, p) = lab.probe_client_from(
        &untrusted.name,
        "untrusted",
        &[(key, value)],
        &checks(ip_a, ip_b),
        std::slice::from_ref(&a_only),
    );
    assert_reach(
        &p,
        true,
        false,
        "untrusted image 0.0.0.0/0 + file rule adding A",
    );
    let w = image_warning(lab.agent(), &run.name, ALLOW);
    assert_eq!(field(&w, "image"), untrusted.name, "{w}");
}

/// 49. Label keys that nearly are the agent's deny everything and say which key.
#[test]
fn near_miss_label_keys_deny_everything() {
    const N: u8 = 49;
    let mut lab = Lab::new("lbl-nearmiss", N);
    let (a, b) = (lab.start_target("a", 10), lab.start_target("b", 11));
    let (ip_a, ip_b) = (a.ip.unwrap(), b.ip.unwrap());
    lab.start_agent(&AgentOpts::default());
    let a_only = ip_a.to_string();
    for (i, key) in [
        "Egress.allow",
        "EGRESS_ALLOW",
        "egress-allow",
        "egress.alow",
    ]
    .into_iter()
    .enumerate()
    {
        let (run, p) = lab.probe_client(
            &format!("nearmiss{i}"),
            &[(key, &a_only)],
            &checks(ip_a, ip_b),
            &[],
        );
        assert_reach(&p, false, false, &format!("`{key}={ip_a}`"));
        let f = lab
            .agent()
            .wait_for(&format!("the error about `{key}`"), LOG_TIMEOUT, |f| {
                field(f, "container") == run.name && field(f, "label") == key
            });
        println!("log: {f}");
        let msg = field(&f, "message");
        assert!(
            msg.starts_with("invalid egress policy, denying all egress of the container")
                && msg.contains(&format!("`{key}`")),
            "the error names the key: {f}"
        );
        assert_eq!(lab.pin.container(&run.id).unwrap()["policed"], true);
    }
}
