use std::path::PathBuf;

/// Everything the local node can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("capstan-localnode needs root (network namespaces, mounts, nftables); running as uid {0}")]
    NotRoot(u32),
    #[error("missing prerequisites: {}", .0.join("; "))]
    Prerequisites(Vec<String>),
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("no Pod {namespace}/{pod} runs on this node")]
    NoSuchPod { namespace: String, pod: String },
    #[error("no running container {container} in Pod {namespace}/{pod}")]
    NoSuchContainer {
        namespace: String,
        pod: String,
        container: String,
    },
    #[error(
        "another capstan-localnode agent runs on this host: it holds {lock} (one agent per host; stop it, \
         or wait for it)"
    )]
    AlreadyRunning { lock: PathBuf },
    #[error(
        "the apiserver {server} (kubeconfig {kubeconfig}) is not on loopback: capstan-localnode runs a \
         cluster's Pods as root on this machine and is for the local control plane only (pass \
         --dangerously-allow-remote-apiserver if you really mean it)"
    )]
    RemoteApiserver { server: String, kubeconfig: PathBuf },
    #[error("the agent stopped: {0}")]
    Stopped(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}
