//! Provisioning of the control plane's binaries. Where they are looked for is `capstan-testenv`'s
//! business (`assets`); this only fills the cache when they are missing.

use std::{fs, process::Command};

use anyhow::{Context, bail};
use capstan_testenv::assets::{self, Assets, KUBERNETES_VERSION};

use crate::cmd;

pub fn ensure() -> anyhow::Result<Assets> {
    let missing = match assets::locate() {
        Ok(found) => {
            eprintln!(
                "envtest {KUBERNETES_VERSION}: {}, {}, {}",
                found.etcd.display(),
                found.kube_apiserver.display(),
                found.kube_controller_manager.display()
            );
            return Ok(found);
        }
        Err(missing) => missing,
    };
    eprintln!("{missing}");

    let cache = assets::cache_dir();
    let script = cmd::workspace_root().join("xtask/scripts/provision-envtest.sh");
    if !is_root() || !cmd::on_path("apt-get") {
        bail!(
            "cannot provision automatically: that needs root on Debian (apt-get). Either\n\
             \n\
             1. use setup-envtest for etcd and kube-apiserver:\n\
             \x20    go install sigs.k8s.io/controller-runtime/tools/setup-envtest@latest\n\
             \x20    export KUBEBUILDER_ASSETS=\"$(setup-envtest use 1.20.2 -p path)\"\n\
             \x20  and put a kube-controller-manager {KUBERNETES_VERSION} (setup-envtest ships none) at\n\
             \x20    {cache}/kube-controller-manager\n\
             \x20  e.g. built from the Kubernetes {KUBERNETES_VERSION} source with Go 1.15:\n\
             \x20    CGO_ENABLED=0 make WHAT=cmd/kube-controller-manager\n\
             \n\
             2. or run the Debian recipe as root (etcd-server from bookworm; kube-apiserver and\n\
             \x20  kube-controller-manager built from bookworm's `kubernetes` source package with\n\
             \x20  bullseye's Go 1.15, about 5 minutes on 2 cores):\n\
             \x20    CAPSTAN_ENVTEST_DIR={cache} bash {script}",
            cache = cache.display(),
            script = script.display(),
        );
    }

    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    eprintln!(
        "provisioning envtest {KUBERNETES_VERSION} into {} (a fresh machine takes about 10 minutes)",
        cache.display()
    );
    cmd::run(Command::new("bash").arg(&script).env("CAPSTAN_ENVTEST_DIR", &cache))?;
    let found = assets::locate().context("the provisioning script finished, yet binaries are missing")?;
    Ok(found)
}

pub fn is_root() -> bool {
    // `Uid:` lists the real, effective, saved and filesystem uids; the effective one decides.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}
