//! Reading the apiserver's audit log ([`Options::audit_log`](crate::Options)): who sent which
//! request. v1.20's `apiserver_request_total` has no client label, so this is how tests and the
//! bench count one client's requests.
use serde::Deserialize;
use std::path::Path;

/// One completed request, as the audit policy (level Metadata) records it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub verb: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
    pub stage: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub subresource: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResponseStatus {
    #[serde(default)]
    pub code: Option<u16>,
}

impl AuditEvent {
    /// A write is any POST, PUT, PATCH or DELETE.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    pub fn from_user_agent(&self, prefix: &str) -> bool {
        self.user_agent.as_deref().is_some_and(|ua| ua.starts_with(prefix))
    }

    /// `resource` or `resource/subresource`, e.g. `deployments` or `memcacheds/status`.
    pub fn target(&self) -> String {
        match &self.object_ref {
            Some(ObjectRef {
                resource: Some(r),
                subresource: Some(s),
                ..
            }) if !s.is_empty() => format!("{r}/{s}"),
            Some(ObjectRef { resource: Some(r), .. }) => r.clone(),
            _ => self.request_uri.clone(),
        }
    }
}

/// The current length of the log: remember it, act, then read what was logged [`since`] it.
pub fn mark(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// Completed requests logged after `offset` (from [`mark`]). Lines that are not audit events
/// (or are cut short while the apiserver writes them) are skipped.
pub fn since(log: &Path, offset: u64) -> std::io::Result<Vec<AuditEvent>> {
    let bytes = std::fs::read(log)?;
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[start..])
        .lines()
        .filter_map(|line| serde_json::from_str::<AuditEvent>(line).ok())
        .filter(|event| event.stage == "ResponseComplete")
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_after_the_mark_and_classifies_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("audit.log");
        let line = |verb: &str, ua: &str, sub: &str| {
            format!(
                r#"{{"stage":"ResponseComplete","verb":"{verb}","requestURI":"/x","userAgent":"{ua}","objectRef":{{"resource":"memcacheds","subresource":"{sub}"}}}}"#
            )
        };
        std::fs::write(&log, format!("{}\n", line("get", "kubectl/1", ""))).expect("write");
        let offset = mark(&log);
        let more = format!(
            "{}\n{}\nnot json\n",
            line("patch", "capstan-manager/0.1.0", "status"),
            line("list", "capstan-manager/0.1.0", "")
        );
        std::fs::write(&log, format!("{}\n{more}", line("get", "kubectl/1", ""))).expect("write");
        let events = since(&log, offset).expect("read");
        assert_eq!(events.len(), 2);
        assert!(events[0].is_write() && events[0].from_user_agent("capstan-manager/"));
        assert_eq!(events[0].target(), "memcacheds/status");
        assert!(!events[1].is_write());
    }
}
