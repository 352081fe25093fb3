//! `capstan-localnode run`: the local node as a process of its own, using KUBECONFIG like kubectl.

use std::path::PathBuf;

use anyhow::{Context, bail};
use capstan_localnode::{LocalNode, LocalNodeConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Pods on the local control plane as real processes (test and dev infrastructure)"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Register the node(s) and run Pods until interrupted (Ctrl-C or SIGTERM).
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, default_value = "capstan-local")]
    node_name: String,
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    #[arg(long, default_value = "10.244.0.0/16")]
    pod_cidr: String,
    /// Must match the apiserver's --service-cluster-ip-range.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    #[arg(long, default_value = "/run/capstan-localnode")]
    state_dir: PathBuf,
    /// Seconds of the first restart back-off (the kubelet uses 10).
    #[arg(long, default_value_t = 10.0)]
    backoff_initial: f64,
    /// Extra image table entries, `PREFIX=/path/to/binary` (repeatable).
    #[arg(long = "image", value_name = "PREFIX=BINARY")]
    images: Vec<String>,
    /// The local control plane's kubeconfig. Required (or KUBECONFIG): never ~/.kube/config, which
    /// may name a real cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Permit privileged containers and hostPath volumes (either one gives a Pod this machine).
    #[arg(long)]
    allow_privileged: bool,
    /// Start even though the apiserver is not on loopback: its Pods then run as root here.
    #[arg(long)]
    dangerously_allow_remote_apiserver: bool,
    /// Size of the tmpfs holding Pod roots, emptyDirs, claims and logs (MiB).
    #[arg(long, default_value_t = 2048)]
    state_size_mib: u64,
    /// A container's log is rotated past this many bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    log_max_bytes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let Commands::Run(args) = Cli::parse().command;
    let Some(kubeconfig) = args.kubeconfig.filter(|p| !p.as_os_str().is_empty()) else {
        bail!(
            "name the local control plane's kubeconfig with --kubeconfig or KUBECONFIG: capstan-localnode \
             never falls back to ~/.kube/config, which may point at a real cluster"
        );
    };
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "capstan-localnode needs root: it creates network namespaces, a bridge, mounts and nftables \
             rules. Run it with sudo (or in a privileged container)."
        );
    }
    let mut config = LocalNodeConfig::new(kubeconfig);
    config.node_name = args.node_name;
    config.nodes = args.nodes;
    config.pod_cidr = args.pod_cidr;
    config.service_cidr = args.service_cidr;
    config.cluster_domain = args.cluster_domain;
    config.state_dir = args.state_dir;
    config.allow_privileged = args.allow_privileged;
    config.dangerously_allow_remote_apiserver = args.dangerously_allow_remote_apiserver;
    config.state_size_mib = args.state_size_mib;
    config.log_max_bytes = args.log_max_bytes;
    config.backoff_initial = std::time::Duration::from_secs_f64(args.backoff_initial.max(0.1));
    for image in args.images {
        let (prefix, binary) = image.split_once('=').context("--image takes PREFIX=BINARY")?;
        let binary = std::fs::canonicalize(binary).with_context(|| format!("--image {image}"))?;
        config.images.push((prefix.to_owned(), binary));
    }
    let node = LocalNode::start(config).await.context("starting the local node")?;
    tracing::info!(nodes = ?node.node_names(), "running; Ctrl-C to stop");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    node.stop().await.context("stopping the local node")?;
    Ok(())
}
