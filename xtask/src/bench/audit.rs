//! The manager's requests, read from the apiserver's audit log with capstan-testenv's reader
//! (rotated files, time windows): v1.20's `apiserver_request_total` has no client label, and the
//! controller-manager's requests land in the same counters.
use std::path::Path;

use anyhow::Context;
use k8s_openapi::jiff::Timestamp;

pub use capstan_testenv::audit::RequestCounts;

/// Requests whose user agent starts with `user_agent_prefix`, received in `[from, to]`.
pub fn count_requests(
    audit_log: &Path,
    user_agent_prefix: &str,
    from: Timestamp,
    to: Timestamp,
) -> anyhow::Result<RequestCounts> {
    capstan_testenv::audit::count_requests(audit_log, user_agent_prefix, from, to)
        .with_context(|| format!("reading the audit log {}", audit_log.display()))
}
