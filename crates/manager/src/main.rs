use clap::Parser;

use capstan_manager::{Cli, Command, crds_yaml, run};

/// The bound admin addresses, as one JSON line on stdout (logs go to stderr), so that whatever
/// started the manager with port 0 learns them without parsing logs.
fn print_bound(addrs: capstan_runtime::BoundAddrs) {
    if let Ok(line) = serde_json::to_string(&serde_json::json!({ "bound": addrs })) {
        println!("{line}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds) => {
            print!("{}", crds_yaml()?);
            Ok(())
        }
        Some(Command::Run(args)) => run(*args, print_bound).await,
        None => run(cli.run, print_bound).await,
    }
}
