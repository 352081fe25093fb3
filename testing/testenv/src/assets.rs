//! Where the control plane's binaries live.
//!
//! `KUBEBUILDER_ASSETS` (what `setup-envtest` fills) may supply etcd and kube-apiserver, but it never
//! holds a kube-controller-manager, so that one always comes from capstan's own cache.

use std::{
    env,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use crate::Error;

/// The Kubernetes version the cache is provisioned for, and the name of its directory.
pub const KUBERNETES_VERSION: &str = "v1.20.2";

/// Absolute paths of the three binaries a control plane runs.
#[derive(Debug, Clone)]
pub struct Assets {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
}

/// `$CAPSTAN_ENVTEST_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/capstan/envtest/v1.20.2`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_var("CAPSTAN_ENVTEST_DIR") {
        return PathBuf::from(dir);
    }
    let cache_home = non_empty_var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(non_empty_var("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache"));
    cache_home.join("capstan").join("envtest").join(KUBERNETES_VERSION)
}

/// Finds the binaries, or explains which are missing, where they were looked for, and how to
/// provision them.
pub fn locate() -> Result<Assets, Error> {
    let cache = cache_dir();
    let kubebuilder = non_empty_var("KUBEBUILDER_ASSETS").map(PathBuf::from);
    let base = kubebuilder.as_deref().unwrap_or(&cache);
    let assets = Assets {
        etcd: base.join("etcd"),
        kube_apiserver: base.join("kube-apiserver"),
        kube_controller_manager: cache.join("kube-controller-manager"),
    };

    let mut missing = Vec::new();
    for (path, note) in [
        (&assets.etcd, ""),
        (&assets.kube_apiserver, ""),
        (
            &assets.kube_controller_manager,
            if kubebuilder.is_some() {
                " (always taken from capstan's cache, even with KUBEBUILDER_ASSETS set: setup-envtest ships no kube-controller-manager)"
            } else {
                ""
            },
        ),
    ] {
        if !is_executable(path) {
            missing.push(format!("  {}{note}", path.display()));
        }
    }
    if missing.is_empty() {
        return Ok(assets);
    }
    Err(Error::AssetsMissing(format!(
        "the local control plane's binaries ({KUBERNETES_VERSION}) are missing:\n{}\n\
         Run `cargo xtask envtest` to provision them into {} (override with CAPSTAN_ENVTEST_DIR).",
        missing.join("\n"),
        cache.display()
    )))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn non_empty_var(name: &str) -> Option<std::ffi::OsString> {
    env::var_os(name).filter(|v| !v.is_empty())
}
