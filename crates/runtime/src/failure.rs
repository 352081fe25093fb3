//! The one classification of reconcile failures every controller shares: its spec is invalid, a
//! read it needed failed, an owned object could not be applied, or its status could not be
//! written. Each category decides the metric label, the Warning event's reason and whether a
//! retry on the backoff timer can help, so two controllers refusing the same thing report it the
//! same way.
use crate::{Error, controller::ReconcileError};

/// Why a reconcile failed; `S` is the controller's own error for a spec it cannot build from.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileFailure<S: std::error::Error + Send + Sync + 'static> {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] S),
    /// An object the reconcile reads by name (not from a cache) could not be read.
    #[error("reading {what}: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("applying an owned object: {0}")]
    Apply(#[source] Error),
    #[error("writing status: {0}")]
    Status(#[source] Error),
}

impl<S: std::error::Error + Send + Sync + 'static> ReconcileError for ReconcileFailure<S> {
    fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Read { .. } => "api_error",
            Self::Apply(Error::ForeignChild { .. }) => "resource_exists",
            Self::Apply(e) | Self::Status(e) => e.metric_label(),
        }
    }

    fn event_reason(&self) -> Option<&'static str> {
        Some(match self {
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::Apply(Error::ForeignChild { .. }) => "ResourceExists",
            Self::Apply(e) if e.invalid_message().is_some() => "Rejected",
            Self::Read { .. } | Self::Apply(_) | Self::Status(_) => "ReconcileFailed",
        })
    }

    /// An invalid spec waits for a change; a failed read is retried; a failed write is as
    /// permanent as the apiserver's refusal.
    fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidSpec(_) => true,
            Self::Read { .. } => false,
            Self::Apply(e) | Self::Status(e) => e.is_permanent(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("replicas must be positive")]
    struct BadSpec;

    type Failure = ReconcileFailure<BadSpec>;

    fn foreign() -> Error {
        Error::ForeignChild {
            kind: "Service".into(),
            name: "cache".into(),
            owner_kind: "Deployment".into(),
        }
    }

    #[test]
    fn an_invalid_spec_is_permanent_and_named_in_its_event() {
        let failure: Failure = BadSpec.into();
        assert_eq!(failure.metric_label(), "invalid_spec");
        assert_eq!(failure.event_reason(), Some("InvalidSpec"));
        assert!(failure.is_permanent());
        assert_eq!(failure.to_string(), "invalid spec: replicas must be positive");
    }

    #[test]
    fn a_foreign_child_is_reported_as_an_existing_resource() {
        let failure = Failure::Apply(foreign());
        assert_eq!(failure.metric_label(), "resource_exists");
        assert_eq!(failure.event_reason(), Some("ResourceExists"));
        let status = Failure::Status(Error::NotLeader);
        assert_eq!(status.metric_label(), "not_leader");
        assert_eq!(status.event_reason(), Some("ReconcileFailed"));
        assert!(!status.is_permanent());
    }
}
