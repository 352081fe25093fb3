use thiserror::Error;

/// Errors of the runtime's own operations (applying objects, writing status, serving).
#[derive(Debug, Error)]
pub enum Error {
    #[error("kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("admin server: {0}")]
    Admin(#[from] std::io::Error),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("leader election: {0}")]
    LeaderElection(String),
    #[error("client configuration: {0}")]
    Config(String),
    #[error("not the leader: writes are refused")]
    NotLeader,
}

impl Error {
    /// A short, bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "kube_client",
            Error::Serialize { .. } => "serialize",
            Error::MissingField(_) => "missing_field",
            Error::Admin(_) => "admin",
            Error::Metrics(_) => "metrics",
            Error::LeaderElection(_) => "leader_election",
            Error::Config(_) => "config",
            Error::NotLeader => "not_leader",
        }
    }
}
