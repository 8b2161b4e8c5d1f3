use clap::Parser;
use egress_agent::{
    cli::{Cli, Command},
    cmd, logging,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Run(args) => cmd::run::main(&args).await,
        Command::Status(args) => cmd::status::main(&args),
        Command::Cleanup(args) => cmd::cleanup::main(&args),
    }
}
