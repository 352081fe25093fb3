//! capstan's workflows: `cargo xtask <task>`. A thin layer over cargo and `capstan-testenv`.

mod bench;
mod cmd;
mod crds;
mod dev;
mod envtest;
mod prerequisites;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(bin_name = "cargo xtask", about = "capstan's development workflows")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make sure the local control plane's binaries (etcd, kube-apiserver,
    /// kube-controller-manager v1.20.2) are provisioned.
    Envtest,
    /// The one test command: fmt check, clippy -D warnings, provisioning when needed, all tests.
    Test,
    /// Regenerate deploy/charts/capstan/crds/ from `capstan-manager crds`.
    Crds,
    /// Run a local control plane with the CRDs, the manager and samples/; Ctrl-C stops it all.
    Dev(dev::Args),
    /// Measure the manager at scale against the floor (the same requests from one client) and
    /// show the targets of issue 7 next to the measured values; JSON lands in target/bench/.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Envtest => envtest::ensure().map(|_| ()),
        Task::Test => test::run(),
        Task::Crds => crds::run(),
        Task::Dev(args) => dev::run(args),
        Task::Bench(args) => bench::run(args),
    };
    // Printed by hand: anyhow's own report would add a backtrace of xtask whenever
    // RUST_BACKTRACE is set, which only buries the message.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
