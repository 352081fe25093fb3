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
    /// A same-named object exists and its owner is not the object being reconciled: capstan
    /// leaves it untouched rather than taking it over.
    #[error(
        "{kind} {name} exists and is not controlled by this {owner_kind}; it is left untouched (delete or rename it)"
    )]
    ForeignChild {
        kind: String,
        name: String,
        owner_kind: String,
    },
    #[error("{what} did not answer within {after:?}")]
    Timeout {
        what: &'static str,
        after: std::time::Duration,
    },
    #[error("{0} stopped while the manager was running")]
    Stopped(String),
}

impl Error {
    /// A short, bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 422 => "invalid",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "kube_client",
            Error::Serialize { .. } => "serialize",
            Error::MissingField(_) => "missing_field",
            Error::Admin(_) => "admin",
            Error::Metrics(_) => "metrics",
            Error::LeaderElection(_) => "leader_election",
            Error::Config(_) => "config",
            Error::NotLeader => "not_leader",
            Error::ForeignChild { .. } => "foreign_child",
            Error::Timeout { .. } => "timeout",
            Error::Stopped(_) => "stopped",
        }
    }

    /// The apiserver's message when it refused an object as invalid (HTTP 422): the object as
    /// built cannot be stored, so sending it again changes nothing until the spec changes.
    pub fn invalid_message(&self) -> Option<&str> {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 422 => Some(&status.message),
            _ => None,
        }
    }

    /// Whether retrying without a change to the objects involved cannot help: the object is
    /// invalid, or a same-named object belongs to someone else.
    pub fn is_permanent(&self) -> bool {
        self.invalid_message().is_some() || matches!(self, Error::ForeignChild { .. } | Error::MissingField(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "message": message, "reason": "Invalid", "code": code
        }))
        .expect("status");
        Error::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn a_422_is_permanent_and_carries_the_servers_message() {
        let invalid = api_error(422, "spec.template.spec.containers[0].image: Invalid value");
        assert_eq!(
            invalid.invalid_message(),
            Some("spec.template.spec.containers[0].image: Invalid value")
        );
        assert!(invalid.is_permanent());
        assert_eq!(invalid.metric_label(), "invalid");
        let conflict = api_error(409, "conflict");
        assert!(conflict.invalid_message().is_none());
        assert!(!conflict.is_permanent(), "a conflict may clear on retry");
        assert!(
            Error::ForeignChild {
                kind: "Deployment".into(),
                name: "x".into(),
                owner_kind: "Memcached".into()
            }
            .is_permanent()
        );
        assert!(!Error::NotLeader.is_permanent());
    }
}
