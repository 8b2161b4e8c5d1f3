use tracing::info;

use crate::{cli::PinArgs, status};

/// `egress-agent cleanup`.
pub fn main(args: &PinArgs) -> anyhow::Result<()> {
    let r = status::cleanup(&args.pin_dir)?;
    info!(
        pin_dir = %args.pin_dir.display(),
        links_detached = r.links_detached,
        maps_unpinned = r.maps_unpinned,
        "cleanup done; nothing of the agent's is left attached or pinned"
    );
    Ok(())
}
