use std::{io, path::PathBuf, time::Duration};

/// Why the control plane or one of its helpers failed. Process failures name the binary and carry
/// the tail of its log, because that tail is nearly always the whole diagnosis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    AssetsMissing(String),

    #[error("cannot write {what} at {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("no free port on 127.0.0.1: {0}")]
    Port(#[source] io::Error),

    #[error("cannot generate the control plane's certificates: {0}")]
    Certs(#[from] rcgen::Error),

    #[error("cannot start {component} ({}): {source}", binary.display())]
    Spawn {
        component: &'static str,
        binary: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{component} exited during startup ({status}); last lines of {}:\n{tail}", log.display())]
    Exited {
        component: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{component} was not ready after {waited:.1?} ({detail}); last lines of {}:\n{tail}", log.display())]
    NotReady {
        component: &'static str,
        waited: Duration,
        detail: String,
        log: PathBuf,
        tail: String,
    },

    #[error("timed out after {waited:.1?} waiting for {what} (last seen: {last})")]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },

    #[error("invalid input: {0}")]
    Invalid(String),

    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Free ports are picked by binding and releasing them, so another process can take one in
    /// between; such a failure is worth one retry with fresh ports.
    pub(crate) fn is_port_clash(&self) -> bool {
        match self {
            Error::Exited { tail, .. } | Error::NotReady { tail, .. } => tail.contains("address already in use"),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bind_failure_counts_as_a_port_clash() {
        let exited = |tail: &str| Error::Exited {
            component: "etcd",
            status: "exit status: 1".into(),
            log: PathBuf::from("/tmp/etcd.log"),
            tail: tail.into(),
        };
        assert!(exited("listen tcp 127.0.0.1:2380: bind: address already in use").is_port_clash());
        assert!(!exited("unknown flag: --frobnicate").is_port_clash());
    }
}
