//! The docker CLI against one daemon, and `GET /_ping` on a daemon's socket.

use std::{
    env,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

/// The image `cargo xtask test --with-docker` makes (busybox-static rootfs).
pub const DEFAULT_IMAGE: &str = "egress-test-busybox:latest";
/// The Docker socket used when `DOCKER_HOST` is not set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The test image: `$EGRESS_TEST_IMAGE`, else [`DEFAULT_IMAGE`].
pub fn image() -> String {
    env::var("EGRESS_TEST_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned())
}

/// The daemon the tests use: `$DOCKER_HOST`, else [`DEFAULT_DOCKER_HOST`].
pub fn shared_docker_host() -> String {
    env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
}

/// The docker CLI against one daemon.
#[derive(Debug, Clone)]
pub struct Docker {
    pub host: String,
}

impl Docker {
    pub fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
        }
    }

    /// The shared daemon, after checking that it answers and has the test image; panics with
    /// the reason (and how to get both) otherwise. Tests never skip.
    #[track_caller]
    pub fn require() -> Self {
        let d = Self::new(&shared_docker_host());
        if let Err(e) = d.try_run(&["version", "--format", "{{.Server.APIVersion}}"]) {
            panic!(
                "dockerd is not reachable at {}: {e}\nThe e2e tests need a running Docker daemon \
                 and the test image: run them with `cargo xtask test --with-docker` (it starts \
                 dockerd if none runs, imports the image and sets EGRESS_TEST_DOCKER=1), or \
                 start one yourself (`setsid dockerd >/tmp/dockerd.log 2>&1 &`).",
                d.host
            );
        }
        let image = image();
        if let Err(e) = d.try_run(&["image", "inspect", "--format", "{{.Id}}", &image]) {
            panic!(
                "the test image {image} is missing on {}: {e}\n`cargo xtask test --with-docker` \
                 imports it (a rootfs of Debian's busybox-static).",
                d.host
            );
        }
        d
    }

    /// `docker --host HOST ARGS`, killed after 120 s.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["120", "docker", "--host", &self.host])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs `docker ARGS`; the whole output, whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running the docker CLI: {e}"))
    }

    /// Runs `docker ARGS`; its trimmed stdout, or why it failed.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| format!("running the docker CLI (is it installed?): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`docker --host {} {}` failed ({}): {}{}",
                self.host,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs `docker ARGS`; panics unless it succeeds.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `docker inspect -f FORMAT C`.
    #[track_caller]
    pub fn inspect(&self, container: &str, format: &str) -> String {
        self.run(&["inspect", "--format", format, container])
    }

    /// The host pid of a running container's first process.
    #[track_caller]
    pub fn pid(&self, container: &str) -> u32 {
        let s = self.inspect(container, "{{.State.Pid}}");
        s.parse()
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("container {container} has no pid ({s:?}): not running?"))
    }

    /// True if the daemon answers `GET /_ping` on its unix socket.
    pub fn ping(&self) -> bool {
        match self.host.strip_prefix("unix://") {
            Some(sock) => ping(Path::new(sock)),
            None => self.try_run(&["version"]).is_ok(),
        }
    }

    /// `docker rm -f` of every container (`label`: `key=value`, only those with that label);
    /// errors are ignored. Returns how many it asked to remove.
    pub fn remove_containers(&self, label: Option<&str>) -> usize {
        let mut ps = vec!["ps", "-aq"];
        let filter = label.map(|l| format!("label={l}"));
        if let Some(f) = &filter {
            ps.extend(["--filter", f]);
        }
        let Ok(ids) = self.try_run(&ps) else {
            return 0;
        };
        if ids.is_empty() {
            return 0;
        }
        let mut args = vec!["rm", "-f"];
        args.extend(ids.lines());
        let _ = self.output(&args);
        args.len() - 2
    }
}

/// `GET /_ping` on a Docker socket: true if the daemon answers `200 OK`.
pub fn ping(sock: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let t = Some(Duration::from_secs(2));
    if s.set_read_timeout(t).is_err()
        || s.set_write_timeout(t).is_err()
        || s.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            .is_err()
    {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    ping_ok(&String::from_utf8_lossy(&resp))
}

fn ping_ok(resp: &str) -> bool {
    let status_ok = resp
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("200");
    status_ok && resp.trim_end().ends_with("OK")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_needs_200_and_ok() {
        assert!(ping_ok(
            "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK"
        ));
        assert!(!ping_ok("HTTP/1.1 500 Internal Server Error\r\n\r\nOK"));
        assert!(!ping_ok(""));
    }
}
