//! `cargo xtask e2e --cluster kind|local|current`: install the chart on a cluster and run the shared
//! scenarios (`capstan_e2e::scenarios`) against it. The providers differ only in how they get a
//! cluster and an image; `--dry-run` prints every step without running any.
mod providers;

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, bail};
use capstan_e2e::scenarios::{self, PodAccess, SCENARIOS, ScenarioEnv};
use kube::{Api, api::PostParams};

use crate::cmd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterKind {
    /// A fresh kind cluster (needs docker, kind, helm, kubectl); deleted afterwards unless --keep.
    Kind,
    /// The local control plane and the local node (this repository's own; needs root).
    Local,
    /// The current kubeconfig context's cluster (asks before installing unless --yes).
    Current,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    pub cluster: ClusterKind,
    /// Print the steps without running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the cluster (kind), the control plane (local: until Ctrl-C) or the release (current).
    #[arg(long)]
    pub keep: bool,
    /// The manager image (default: localhost/capstan-manager:<version> for kind and local, the
    /// chart's default image for current).
    #[arg(long)]
    pub image: Option<String>,
    /// Do not ask before installing into the current cluster.
    #[arg(long)]
    pub yes: bool,
    /// Run only these scenarios (default: all).
    #[arg(long, value_delimiter = ',')]
    pub scenario: Vec<String>,
}

pub const RELEASE: &str = "capstan";
pub const RELEASE_NAMESPACE: &str = "capstan-system";

pub fn run(args: Args) -> anyhow::Result<()> {
    for name in &args.scenario {
        if !SCENARIOS.iter().any(|s| s.name == name) {
            bail!(
                "no scenario {name:?}; there are: {}",
                SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let plan = providers::plan(&args);
    if args.dry_run {
        println!(
            "cargo xtask e2e --cluster {}: the steps (dry run, nothing is run)",
            format!("{:?}", args.cluster).to_lowercase()
        );
        for (index, step) in plan.iter().enumerate() {
            println!("{:>2}. {step}", index + 1);
        }
        println!("scenarios:");
        for scenario in selected(&args) {
            println!("    - {}: {}", scenario.name, scenario.checks);
        }
        return Ok(());
    }
    providers::run(&args)
}

fn selected(args: &Args) -> Vec<&'static scenarios::Scenario> {
    SCENARIOS
        .iter()
        .filter(|s| args.scenario.is_empty() || args.scenario.iter().any(|n| n == s.name))
        .collect()
}

/// The image repository and tag from `repository:tag`.
pub fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), capstan_e2e::MANAGER_VERSION.to_owned()),
    }
}

/// `helm install` of the bundled chart with this image; Helm installs crds/ first.
pub fn helm_install(helm: &std::path::Path, kubeconfig: Option<&std::path::Path>, image: &str) -> anyhow::Result<()> {
    let (repository, tag) = split_image(image);
    let mut command = std::process::Command::new(helm);
    command
        .args(["upgrade", "--install", RELEASE])
        .arg(capstan_e2e::chart::chart_dir())
        .args(["--namespace", RELEASE_NAMESPACE, "--create-namespace"])
        .args(["--set", &format!("image.repository={repository}")])
        .args(["--set", &format!("image.tag={tag}")])
        .args(["--set", "image.pullPolicy=IfNotPresent"]);
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    cmd::run(&mut command)
}

/// Runs the selected scenarios, each in a fresh namespace; prints a summary and fails if any did.
pub async fn run_scenarios(
    client: kube::Client,
    args: &Args,
    access: PodAccess,
    sleep_image: &str,
) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for scenario in selected(args) {
        println!("==> scenario {}: {}", scenario.name, scenario.checks);
        let namespace = format!("e2e-{}-{}", scenario.name, std::process::id());
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let object: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))?;
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating namespace {namespace}"))?;
        wait_service_account(&client, &namespace).await?;
        let env = ScenarioEnv {
            client: client.clone(),
            namespace: namespace.clone(),
            access: access.clone(),
            sleep_image: sleep_image.to_owned(),
        };
        let started = Instant::now();
        let outcome = scenarios::run(scenario.name, &env).await;
        match &outcome {
            Ok(took) => println!("==> scenario {}: passed in {:.1}s", scenario.name, took.as_secs_f64()),
            Err(error) => println!(
                "==> scenario {}: FAILED after {:.1}s: {error:#}",
                scenario.name,
                started.elapsed().as_secs_f64()
            ),
        }
        if !args.keep {
            let _ = namespaces.delete(&namespace, &Default::default()).await;
        }
        results.push((scenario.name, outcome));
    }
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| *n).collect();
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Pods are refused until the namespace's default ServiceAccount exists.
async fn wait_service_account(client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), namespace);
    scenarios::wait_for(
        &format!("namespace {namespace} has its default ServiceAccount"),
        std::time::Duration::from_secs(60),
        || {
            let accounts = accounts.clone();
            async move { Ok(accounts.get_opt("default").await?.map(|_| ())) }
        },
    )
    .await
}

/// Where a tool is, or a clear error naming what to install.
pub fn require(tool: &str, install: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("`{tool}` is not installed: {install}"))
}
