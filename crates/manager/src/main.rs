use clap::Parser;

use capstan_manager::{Cli, Command, crds_yaml, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds) => {
            print!("{}", crds_yaml()?);
            Ok(())
        }
        Some(Command::Run(args)) => run(*args, |_| {}).await,
        None => run(cli.run, |_| {}).await,
    }
}
