//! The capstan manager: every controller in one process, on one shared runtime.
use anyhow::Context as _;
use capstan_runtime::{Manager, RuntimeArgs, manager::BoundAddrs, telemetry};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

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

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Controllers to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = ControllerName::all())]
    pub controllers: Vec<ControllerName>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControllerName {
    Foo,
    Memcached,
}

impl ControllerName {
    pub fn all() -> Vec<ControllerName> {
        vec![ControllerName::Foo, ControllerName::Memcached]
    }
}

impl std::fmt::Display for ControllerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ControllerName::Foo => "foo",
            ControllerName::Memcached => "memcached",
        })
    }
}

/// Every CRD the manager serves controllers for.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![capstan_foo::Foo::crd(), capstan_memcached::crd()]
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

/// Runs the selected controllers until SIGTERM/SIGINT.
pub async fn run(args: RunArgs, on_bound: impl FnOnce(BoundAddrs)) -> anyhow::Result<()> {
    telemetry::init(args.runtime.log_format);
    let client = capstan_runtime::client::from_environment(USER_AGENT)
        .await
        .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
    let mut manager = Manager::new(client, args.runtime.clone()).context("setting up the manager")?;
    let mut enabled = args.controllers.clone();
    enabled.sort_by_key(|c| *c as u8);
    enabled.dedup();
    for controller in enabled {
        match controller {
            ControllerName::Foo => manager.add(capstan_foo::controller),
            ControllerName::Memcached => manager.add(capstan_memcached::controller),
        }
    }
    manager.shutdown().listen_for_signals();
    manager.run(on_bound).await.context("running the manager")
}
