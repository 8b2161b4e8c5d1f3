//! `egress-agent run`: the flags, validated into a [`Config`], run the daemon until SIGINT or
//! SIGTERM (see [`crate::daemon`]).

use crate::{cli::RunArgs, config::Config, daemon};

/// `egress-agent run`.
pub async fn main(args: &RunArgs) -> anyhow::Result<()> {
    // First, so that a SIGINT/SIGTERM during the start is not lost (nor fatal).
    let shutdown = daemon::signals::shutdown()?;
    let config = Config::from_args(args)?;
    daemon::run(config, shutdown).await
}
