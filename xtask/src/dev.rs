//! `cargo xtask dev`: a local control plane with the CRDs installed, the manager running against it
//! and the samples applied, until Ctrl-C. Works before the manager exists: the control plane then
//! simply stays up on its own.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context, bail};
use capstan_localnode::{LocalNode, LocalNodeConfig};
use capstan_testenv::{ControlPlane, Options, process};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, Discovery, ResourceExt,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery::Scope,
};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::{cmd, envtest};

const MANAGER_STOP_GRACE: Duration = Duration::from_secs(10);
const SAMPLES_FIELD_MANAGER: &str = "capstan-dev";

#[derive(clap::Args)]
pub struct Args {
    /// Run this manager binary instead of building `capstan-manager`.
    #[arg(long, env = "CAPSTAN_MANAGER")]
    manager: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:8080")]
    metrics_addr: String,
    #[arg(long, default_value = "127.0.0.1:8081")]
    health_addr: String,
    /// Write the apiserver's audit log (its path is printed).
    #[arg(long)]
    audit_log: bool,
    /// Do not start the local node (Pods then stay Pending, as on a bare control plane).
    #[arg(long)]
    no_local_node: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    let manager = match &args.manager {
        Some(path) => Some(path.clone()),
        None => build_manager(&root),
    };
    envtest::ensure()?;
    let control_plane = ControlPlane::start(Options {
        audit_log: args.audit_log,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(session(&control_plane, &root, manager, &args));
    eprintln!("stopping the control plane");
    drop(control_plane);
    result
}

/// Builds the manager; on failure says why and goes on, so the control plane is still usable.
fn build_manager(root: &Path) -> Option<PathBuf> {
    if let Err(e) = cmd::run(cmd::cargo().args(["build", "-p", "capstan-manager"])) {
        eprintln!("warning: no manager this time: {e:#}");
        return None;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Some(target.join("debug/capstan-manager"))
}

async fn session(
    control_plane: &ControlPlane,
    root: &Path,
    manager: Option<PathBuf>,
    args: &Args,
) -> anyhow::Result<()> {
    let client = control_plane.client().await;
    let kubeconfig = control_plane.kubeconfig_path();

    let crds = read_crds(&root.join(crate::crds::CRDS_DIR))?;
    if crds.is_empty() {
        eprintln!(
            "no CRDs in {}/ (run `cargo xtask crds` once the manager has some)",
            crate::crds::CRDS_DIR
        );
    } else {
        control_plane.apply_crds(&client, &crds).await?;
        eprintln!("installed {} CRDs from {}/", crds.len(), crate::crds::CRDS_DIR);
    }

    let mut manager = match manager {
        Some(path) if path.is_file() => Some(start_manager(&path, kubeconfig, args)?),
        Some(path) => {
            eprintln!(
                "warning: no manager at {}; the control plane runs alone",
                path.display()
            );
            None
        }
        None => None,
    };

    let local_node = if args.no_local_node {
        None
    } else {
        start_local_node(kubeconfig).await
    };

    if let Err(e) = apply_samples(&client, &root.join("samples"), kubeconfig).await {
        eprintln!("warning: the samples were not applied: {e:#}");
    }
    if local_node.is_some() {
        print_pods(&client).await;
    }

    let dir = kubeconfig.parent().unwrap_or(kubeconfig);
    eprintln!(
        "\nThe control plane is up at {url}. In another shell:\n\
         \n    export KUBECONFIG={kubeconfig}\n    kubectl get ns\n    kubectl get all -A\n\
         \nComponent logs: {dir}/{{etcd,kube-apiserver,kube-controller-manager}}.log{audit}\
         \n{pods}\nCtrl-C stops everything.\n",
        url = control_plane.server_url(),
        kubeconfig = kubeconfig.display(),
        dir = dir.display(),
        pods = if local_node.is_some() {
            "Pods run as real processes on the local node `capstan-local`: `kubectl get pods -o wide`\n\
             shows their IPs, reachable from this host (e.g. `printf 'version\\r\\n' | nc <pod-ip> 11211`)."
        } else {
            "No local node runs, so Pods stay Pending."
        },
        audit = control_plane
            .audit_log_path()
            .map(|p| format!("\nAudit log: {}", p.display()))
            .unwrap_or_default(),
    );

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = tick.tick() => {
                if let Some(child) = manager.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    eprintln!("the manager exited ({status}); the control plane stays up until Ctrl-C");
                    manager = None;
                }
            }
        }
    }
    if let Some(mut child) = manager {
        eprintln!("stopping the manager");
        tokio::task::spawn_blocking(move || process::terminate(&mut [&mut child], MANAGER_STOP_GRACE)).await?;
    }
    if let Some(node) = local_node {
        eprintln!("stopping the local node");
        if let Err(e) = node.stop().await {
            eprintln!("warning: the local node did not stop cleanly: {e}");
        }
    }
    Ok(())
}

/// The local node, when this machine can run it; otherwise says what is missing and goes on.
async fn start_local_node(kubeconfig: &Path) -> Option<LocalNode> {
    if let Err(missing) = capstan_localnode::check_prerequisites() {
        eprintln!(
            "warning: no local node (Pods stay Pending): {}\n  (`cargo xtask test` installs the packages when run as root)",
            missing.join("; ")
        );
        return None;
    }
    match LocalNode::start(LocalNodeConfig::new(kubeconfig)).await {
        Ok(node) => {
            eprintln!("local node `capstan-local` is running Pods");
            Some(node)
        }
        Err(e) => {
            eprintln!("warning: the local node did not start, Pods stay Pending: {e}");
            None
        }
    }
}

/// Lists the Pods (with their IPs) once the samples' Pods had a moment to start.
async fn print_pods(client: &Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = pods
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let running = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
            .count();
        if (!list.is_empty() && running == list.len()) || tokio::time::Instant::now() >= deadline {
            eprintln!("\n{:<20} {:<28} {:<10} IP", "NAMESPACE", "NAME", "PHASE");
            for pod in &list {
                let status = pod.status.as_ref();
                eprintln!(
                    "{:<20} {:<28} {:<10} {}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any(),
                    status.and_then(|s| s.phase.clone()).unwrap_or_default(),
                    status.and_then(|s| s.pod_ip.clone()).unwrap_or_else(|| "-".into()),
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn start_manager(path: &Path, kubeconfig: &Path, args: &Args) -> anyhow::Result<Child> {
    let mut command = Command::new(path);
    command
        .args([
            "run",
            "--metrics-addr",
            &args.metrics_addr,
            "--health-addr",
            &args.health_addr,
        ])
        .env("KUBECONFIG", kubeconfig);
    eprintln!("$ KUBECONFIG={} {}", kubeconfig.display(), cmd::display(&command));
    // Through the supervisor so the manager dies with us even if we are killed.
    process::spawn(command).with_context(|| format!("cannot start {}", path.display()))
}

fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")));
    files.sort();
    Ok(files)
}

fn yaml_documents<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document)
            .with_context(|| format!("{} is not valid YAML", path.display()))?;
        if !value.is_null() {
            documents.push(
                serde_yaml::from_value(value).with_context(|| format!("unexpected content in {}", path.display()))?,
            );
        }
    }
    Ok(documents)
}

fn read_crds(dir: &Path) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let mut crds = Vec::new();
    for file in yaml_files(dir)? {
        crds.extend(yaml_documents::<CustomResourceDefinition>(&file)?);
    }
    Ok(crds)
}

/// With kubectl when there is one (what a user would do), else server-side apply through the client.
async fn apply_samples(client: &Client, dir: &Path, kubeconfig: &Path) -> anyhow::Result<()> {
    let files = yaml_files(dir)?;
    if files.is_empty() {
        return Ok(());
    }
    if cmd::on_path("kubectl") {
        let mut command = Command::new("kubectl");
        command.arg("apply").arg("-f").arg(dir).env("KUBECONFIG", kubeconfig);
        return tokio::task::spawn_blocking(move || cmd::run(&mut command)).await?;
    }
    let discovery = Discovery::new(client.clone()).run().await?;
    for file in files {
        for object in yaml_documents::<DynamicObject>(&file)? {
            let Some(types) = object.types.as_ref() else {
                bail!("an object in {} has no apiVersion/kind", file.display());
            };
            let gvk = GroupVersionKind::try_from(types)?;
            let Some((resource, capabilities)) = discovery.resolve_gvk(&gvk) else {
                bail!("the API server does not serve {gvk:?} (from {})", file.display());
            };
            let api: Api<DynamicObject> = match capabilities.scope {
                Scope::Namespaced => Api::namespaced_with(
                    client.clone(),
                    object.namespace().as_deref().unwrap_or("default"),
                    &resource,
                ),
                Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            let name = object.name_any();
            api.patch(
                &name,
                &PatchParams::apply(SAMPLES_FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("cannot apply {} {name}", gvk.kind))?;
            eprintln!("applied {}/{name}", resource.plural);
        }
    }
    Ok(())
}
