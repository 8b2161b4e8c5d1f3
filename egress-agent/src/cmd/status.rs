use crate::{cli::StatusArgs, status};

/// `egress-agent status`.
pub fn main(args: &StatusArgs) -> anyhow::Result<()> {
    let s = status::read(&args.pin.pin_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{s}");
    }
    Ok(())
}
