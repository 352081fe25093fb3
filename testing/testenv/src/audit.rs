//! Reading the apiserver's audit log ([`Options::audit_log`](crate::Options)): who sent which
//! request. v1.20's `apiserver_request_total` has no client label, so this is how tests and the
//! bench count one client's requests: [`mark`]/[`since`] for "what happened after this point",
//! [`count_requests`] for a time window across rotated files.
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

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
    #[serde(default)]
    pub request_received_timestamp: Option<String>,
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

/// Requests of one client in a time window, by verb and target (e.g. `patch memcacheds/status`).
#[derive(Debug, Default, Clone)]
pub struct RequestCounts {
    pub by_kind: BTreeMap<String, usize>,
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl RequestCounts {
    pub fn total(&self) -> usize {
        self.by_kind.values().sum()
    }

    /// All writes.
    pub fn writes(&self) -> usize {
        self.matching(|verb, _| WRITE_VERBS.contains(&verb))
    }

    /// Writes to `target` (`deployments`, `memcacheds/status`, `events`).
    pub fn writes_to(&self, target: &str) -> usize {
        self.matching(|verb, t| WRITE_VERBS.contains(&verb) && t == target)
    }

    /// Reads: get, list and (completed) watch requests.
    pub fn reads(&self) -> usize {
        self.total() - self.writes()
    }

    fn matching(&self, keep: impl Fn(&str, &str) -> bool) -> usize {
        self.by_kind
            .iter()
            .filter(|(key, _)| {
                let (verb, target) = key.split_once(' ').unwrap_or((key.as_str(), ""));
                keep(verb, target)
            })
            .map(|(_, count)| count)
            .sum()
    }

    /// The counts divided by `n`, for "requests per object".
    pub fn per_object(&self, n: usize) -> BTreeMap<String, f64> {
        self.by_kind
            .iter()
            .map(|(key, count)| (key.clone(), *count as f64 / n as f64))
            .collect()
    }

    pub fn describe(&self) -> String {
        self.by_kind
            .iter()
            .map(|(key, count)| format!("{count} {key}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Counts the completed requests whose user agent starts with `user_agent_prefix` and that the
/// apiserver received in `[from, to]`, reading the rotated files too (`audit-<time>.log`).
pub fn count_requests(
    audit_log: &Path,
    user_agent_prefix: &str,
    from: Timestamp,
    to: Timestamp,
) -> io::Result<RequestCounts> {
    let mut counts = RequestCounts::default();
    for file in audit_files(audit_log)? {
        for line in BufReader::new(fs::File::open(&file)?).lines() {
            let line = line?;
            // Most lines are the controller-manager's; skip them before parsing any JSON.
            if !line.contains(user_agent_prefix) {
                continue;
            }
            let Ok(event) = serde_json::from_str::<AuditEvent>(&line) else {
                continue;
            };
            if event.stage != "ResponseComplete" || !event.from_user_agent(user_agent_prefix) {
                continue;
            }
            let Some(received) = event
                .request_received_timestamp
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
            else {
                continue;
            };
            if received < from || received > to {
                continue;
            }
            *counts
                .by_kind
                .entry(format!("{} {}", event.verb, event.target()))
                .or_default() += 1;
        }
    }
    Ok(counts)
}

/// `audit.log` and its rotated siblings, oldest first.
fn audit_files(audit_log: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = audit_log.parent().unwrap_or(Path::new("."));
    let stem = audit_log.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(stem) && name.ends_with(".log") {
            files.push((fs::metadata(&path)?.modified()?, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
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

    #[test]
    fn counts_one_agents_requests_in_a_window_across_rotated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = |verb: &str, ua: &str, at: &str| {
            format!(
                r#"{{"stage":"ResponseComplete","verb":"{verb}","requestURI":"/x","userAgent":"{ua}","objectRef":{{"resource":"deployments"}},"requestReceivedTimestamp":"{at}"}}"#
            )
        };
        std::fs::write(
            dir.path().join("audit-2026-01-01T00-00-00.000.log"),
            format!("{}\n", line("patch", "capstan-manager/0.1.0", "2026-01-01T00:00:01Z")),
        )
        .expect("write");
        let log = dir.path().join("audit.log");
        std::fs::write(
            &log,
            [
                line("get", "capstan-manager/0.1.0", "2026-01-01T00:00:02Z"),
                line("patch", "kube-controller-manager/v1.20.2", "2026-01-01T00:00:02Z"),
                line("patch", "capstan-manager/0.1.0", "2026-01-01T00:00:09Z"),
            ]
            .join("\n"),
        )
        .expect("write");
        let at = |s: &str| s.parse::<Timestamp>().expect("time");
        let counts = count_requests(
            &log,
            "capstan-manager/",
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:05Z"),
        )
        .expect("count");
        assert_eq!(counts.writes_to("deployments"), 1, "{}", counts.describe());
        assert_eq!(counts.reads(), 1);
        assert_eq!(counts.total(), 2, "the request after the window is left out");
    }
}
