//! [`DaemonHandle`]: what can be asked of a running daemon. SIGHUP calls
//! [`DaemonHandle::reload`]; the coming control API calls the same.

use std::{path::PathBuf, sync::Arc};

use tokio::sync::mpsc;
use tracing::{error, info};

use egress_policy::{
    labels::Capabilities,
    policy_file::{FileError, PolicyFile},
};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The policy file at this path was loaded and handed to the reconciler.
    PolicyFile(PathBuf),
    /// There is no `--policy-file`.
    NoPolicyFile,
    /// The agent does not follow Docker: there is no container policy to reload.
    NotFollowingDocker,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file has errors; the previous one stays in force.
    #[error("policy file refused, the previous one stays in force: {0}")]
    Refused(#[from] FileError),
    /// The daemon is stopping.
    #[error("the daemon is stopping")]
    Stopping,
}

struct Inner {
    policy_file: Option<PathBuf>,
    caps: Capabilities,
    /// Where a reloaded file goes (the Docker follower); None without Docker.
    files: Option<mpsc::Sender<PolicyFile>>,
}

/// A cheap, clonable handle on the running daemon.
#[derive(Clone)]
pub struct DaemonHandle(Arc<Inner>);

impl DaemonHandle {
    /// A handle whose reloads of `policy_file` go into the returned receiver (when the daemon
    /// follows Docker, else there is none).
    pub fn new(
        policy_file: Option<PathBuf>,
        caps: Capabilities,
        follows_docker: bool,
    ) -> (Self, Option<mpsc::Receiver<PolicyFile>>) {
        let (files, rx) = if follows_docker {
            let (tx, rx) = mpsc::channel(8);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let inner = Inner {
            policy_file,
            caps,
            files,
        };
        (Self(Arc::new(inner)), rx)
    }

    /// Loads the policy file again and hands it to the reconciler; a file with errors is
    /// refused and the previous one stays. Logs what it did.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let Some(files) = &self.0.files else {
            info!("SIGHUP: not following Docker, there is no container policy to reload");
            return Ok(Reloaded::NotFollowingDocker);
        };
        let Some(path) = &self.0.policy_file else {
            info!("SIGHUP: no --policy-file to reload");
            return Ok(Reloaded::NoPolicyFile);
        };
        match PolicyFile::load(path, self.0.caps) {
            Ok(f) => {
                info!(path = %path.display(), "policy file reloaded");
                files.send(f).await.map_err(|_| ReloadError::Stopping)?;
                Ok(Reloaded::PolicyFile(path.clone()))
            }
            Err(e) => {
                let e = ReloadError::Refused(e);
                error!(path = %path.display(), "{e}");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reload_hands_the_file_over_or_refuses_it() {
        let path = std::env::temp_dir().join(format!("egress-reload-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[[container]]\nname = \"a\"\nallow = [\"10.0.0.1\"]\n",
        )
        .unwrap();
        let (h, rx) = DaemonHandle::new(Some(path.clone()), Capabilities::default(), true);
        let mut rx = rx.unwrap();
        assert_eq!(
            h.reload().await.unwrap(),
            Reloaded::PolicyFile(path.clone())
        );
        assert!(rx.try_recv().is_ok(), "the file was handed over");
        std::fs::write(&path, "[[container]]\ncolour = \"red\"\n").unwrap();
        let e = h.reload().await.unwrap_err();
        assert!(e.to_string().contains("previous one stays"), "{e}");
        assert!(rx.try_recv().is_err(), "nothing handed over");
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn without_docker_or_file_there_is_nothing_to_reload() {
        let (h, rx) = DaemonHandle::new(None, Capabilities::default(), false);
        assert!(rx.is_none());
        assert_eq!(h.reload().await.unwrap(), Reloaded::NotFollowingDocker);
        let (h, _rx) = DaemonHandle::new(None, Capabilities::default(), true);
        assert_eq!(h.reload().await.unwrap(), Reloaded::NoPolicyFile);
    }
}
