use clap::Parser;
use egress_agent::{
    cli::{Cli, Command},
    cmd, logging,
};

fn main() -> anyhow::Result<()> {
    egress_agent::sys::memory::limit_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Run(args) => cmd::run::main(&args).await,
        Command::Status(args) => cmd::status::main(&args),
        Command::Cleanup(args) => cmd::cleanup::main(&args),
    }
}
