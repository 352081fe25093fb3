//! The capstan manager: every controller in one process, on one shared runtime.
use anyhow::Context as _;
use capstan_runtime::{BoundAddrs, ControllerEntry, Manager, RuntimeArgs, client_from_environment, init_logging};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The user agent of the manager's requests, so audit logs and apiserver metrics can single
/// them out.
pub const USER_AGENT: &str = concat!("capstan-manager/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, clap::Parser)]
#[command(name = "capstan-manager", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run`'s arguments, so that `capstan-manager --namespace x` runs too.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the controllers (the default).
    Run(Box<RunArgs>),
    /// Print every CRD as multi-document YAML.
    Crds,
}

/// Every controller this binary can run: adding one is one line here.
pub const CONTROLLERS: &[ControllerEntry] = &[
    capstan_foo::CONTROLLER,
    capstan_memcached::CONTROLLER,
    capstan_redis_ha::CONTROLLER,
];

/// The names `--controllers` accepts.
pub fn controller_names() -> Vec<&'static str> {
    CONTROLLERS.iter().map(|c| c.name).collect()
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Controllers to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(controller_names()))]
    pub controllers: Vec<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl RunArgs {
    /// The selected table entries, in table order, each once.
    pub fn selected(&self) -> Vec<ControllerEntry> {
        CONTROLLERS
            .iter()
            .filter(|c| self.controllers.is_empty() || self.controllers.iter().any(|name| name == c.name))
            .copied()
            .collect()
    }
}

/// Every CRD the manager serves controllers for.
pub fn crds() -> Vec<CustomResourceDefinition> {
    CONTROLLERS.iter().flat_map(|c| (c.crds)()).collect()
}

/// The CRDs as multi-document YAML, as `capstan-manager crds` prints them.
pub fn crds_yaml() -> anyhow::Result<String> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).context("serializing a CRD")?);
    }
    Ok(out)
}

/// Runs the selected controllers until SIGTERM/SIGINT. The bound admin addresses go to
/// `on_bound`; an error (also a controller that stopped on its own) means exit non-zero.
pub async fn run(args: RunArgs, on_bound: impl FnOnce(BoundAddrs)) -> anyhow::Result<()> {
    init_logging(args.runtime.log_format);
    let client = client_from_environment(USER_AGENT)
        .await
        .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
    let mut manager = Manager::new(client, args.runtime.clone())
        .await
        .context("setting up the manager")?;
    for controller in args.selected() {
        (controller.add)(&mut manager);
    }
    manager.shutdown().listen_for_signals();
    manager.run(on_bound).await.context("running the manager")
}
