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
        Command::Run(args) => {
            let shutdown = cmd::run::signals()?;
            let hup = cmd::run::hangups()?;
            cmd::run::run(args, shutdown, hup).await
        }
        Command::Status(args) => cmd::status::main(&args),
        Command::Cleanup(args) => cmd::cleanup::main(&args),
    }
}
