//! Running the workspace's own cargo.

use std::{
    collections::BTreeMap,
    env,
    ffi::OsString,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{say, sys, workspace_root};

/// The cargo that runs this xtask (same toolchain), in the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    c.current_dir(workspace_root()).stdin(Stdio::null());
    c
}

fn describe(cmd: &Command) -> String {
    let mut s = String::from("cargo");
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a cargo command with inherited output; Ok(status) whatever the exit code.
pub fn status(mut cmd: Command) -> Result<ExitStatus> {
    let line = describe(&cmd);
    say(&format!("running `{line}`"));
    let st = cmd.status().with_context(|| format!("running `{line}`"))?;
    sys::check_interrupted()?;
    Ok(st)
}

/// Builds with `args` and returns the executables cargo reported, by target name.
pub fn build_executables(args: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    let mut cmd = cargo();
    cmd.arg("build")
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let line = describe(&cmd);
    say(&format!("running `{line}`"));
    let mut child = cmd.spawn().with_context(|| format!("running `{line}`"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut exes = BTreeMap::new();
    for l in BufReader::new(stdout).lines() {
        let l = l?;
        if let Some((name, path)) = executable(&l) {
            exes.insert(name, path);
        }
    }
    let st = child.wait()?;
    sys::check_interrupted()?;
    if !st.success() {
        bail!("`{line}` failed ({st})");
    }
    Ok(exes)
}

/// (target name, executable) from a `compiler-artifact` message that has an executable.
fn executable(json_line: &str) -> Option<(String, PathBuf)> {
    let v: serde_json::Value = serde_json::from_str(json_line).ok()?;
    if v.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let exe = v.get("executable")?.as_str()?;
    let name = v.get("target")?.get("name")?.as_str()?;
    Some((name.to_owned(), PathBuf::from(exe)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_executables_from_cargo_messages() {
        let bin = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"egress-probe"},"executable":"/t/debug/egress-probe","fresh":true}"#;
        let lib = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["lib"],"name":"egress_common"},"executable":null,"fresh":true}"#;
        let done = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable(bin),
            Some((
                "egress-probe".into(),
                PathBuf::from("/t/debug/egress-probe")
            ))
        );
        assert_eq!(executable(lib), None);
        assert_eq!(executable(done), None);
        assert_eq!(executable("not json"), None);
    }
}
