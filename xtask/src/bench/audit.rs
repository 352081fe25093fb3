//! The manager's requests, read from the apiserver's audit log: v1.20's `apiserver_request_total`
//! has no client label, and the controller-manager's requests land in the same counters.
use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use anyhow::Context;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

/// A request is a write when it is a POST, PUT, PATCH or DELETE.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// One line of the audit log, as far as we read it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    stage: String,
    verb: String,
    #[serde(default)]
    user_agent: String,
    object_ref: Option<AuditObjectRef>,
    request_received_timestamp: String,
}

#[derive(Debug, Deserialize)]
struct AuditObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
}

/// Requests of one client in a time window, by verb and resource (e.g. `patch memcacheds/status`).
#[derive(Debug, Default, Clone)]
pub struct RequestCounts {
    pub by_kind: BTreeMap<String, usize>,
}

impl RequestCounts {
    pub fn total(&self) -> usize {
        self.by_kind.values().sum()
    }

    /// All writes.
    pub fn writes(&self) -> usize {
        self.matching(|verb, _| WRITE_VERBS.contains(&verb))
    }

    /// Writes to `resource` (`deployments`, `memcacheds/status`, `events`).
    pub fn writes_to(&self, resource: &str) -> usize {
        self.matching(|verb, r| WRITE_VERBS.contains(&verb) && r == resource)
    }

    /// Reads: get, list and (completed) watch requests.
    pub fn reads(&self) -> usize {
        self.total() - self.writes()
    }

    fn matching(&self, keep: impl Fn(&str, &str) -> bool) -> usize {
        self.by_kind
            .iter()
            .filter(|(key, _)| {
                let (verb, resource) = key.split_once(' ').unwrap_or((key.as_str(), ""));
                keep(verb, resource)
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

/// Counts the requests whose user agent starts with `user_agent_prefix` and that the apiserver
/// received in `[from, to]`. Reads the rotated files too (the apiserver rotates at 100 MB).
pub fn count_requests(
    audit_log: &Path,
    user_agent_prefix: &str,
    from: Timestamp,
    to: Timestamp,
) -> anyhow::Result<RequestCounts> {
    let mut counts = RequestCounts::default();
    for file in audit_files(audit_log)? {
        let reader = BufReader::new(fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?);
        for line in reader.lines() {
            let line = line.with_context(|| format!("cannot read {}", file.display()))?;
            // Most lines are the controller-manager's; skip them before parsing any JSON.
            if !line.contains(user_agent_prefix) {
                continue;
            }
            let Ok(event) = serde_json::from_str::<AuditEvent>(&line) else {
                continue;
            };
            // Each request is logged once complete (watches also once when they start).
            if event.stage != "ResponseComplete" || !event.user_agent.starts_with(user_agent_prefix) {
                continue;
            }
            let Ok(received) = event.request_received_timestamp.parse::<Timestamp>() else {
                continue;
            };
            if received < from || received > to {
                continue;
            }
            *counts.by_kind.entry(kind_of(&event)).or_default() += 1;
        }
    }
    Ok(counts)
}

/// `verb resource[/subresource]`, e.g. `patch deployments` or `create events`.
fn kind_of(event: &AuditEvent) -> String {
    match &event.object_ref {
        Some(r) if !r.subresource.is_empty() => format!("{} {}/{}", event.verb, r.resource, r.subresource),
        Some(r) => format!("{} {}", event.verb, r.resource),
        None => format!("{} (non-resource)", event.verb),
    }
}

/// `audit.log` and its rotated siblings (`audit-<time>.log`), oldest first.
fn audit_files(audit_log: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = audit_log.parent().context("the audit log has no directory")?;
    let stem = audit_log
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the audit log's name is not UTF-8")?;
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(stem) && name.ends_with(".log") {
            let modified = fs::metadata(&path)?.modified()?;
            files.push((modified, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> AuditEvent {
        serde_json::from_str(line).expect("audit event")
    }

    #[test]
    fn requests_are_keyed_by_verb_resource_and_subresource() {
        let status = event(
            r#"{"stage":"ResponseComplete","verb":"patch","userAgent":"capstan-manager/0.1.0",
                "objectRef":{"resource":"memcacheds","subresource":"status","name":"a"},
                "requestReceivedTimestamp":"2026-01-01T00:00:00.000001Z"}"#,
        );
        assert_eq!(kind_of(&status), "patch memcacheds/status");
        let create = event(
            r#"{"stage":"ResponseComplete","verb":"create","userAgent":"x",
                "objectRef":{"resource":"events"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z"}"#,
        );
        assert_eq!(kind_of(&create), "create events");
    }

    #[test]
    fn writes_and_reads_are_told_apart() {
        let counts = RequestCounts {
            by_kind: [
                ("patch deployments".to_owned(), 3),
                ("patch memcacheds/status".to_owned(), 5),
                ("create events".to_owned(), 2),
                ("get deployments".to_owned(), 7),
            ]
            .into(),
        };
        assert_eq!(counts.writes(), 10);
        assert_eq!(counts.reads(), 7);
        assert_eq!(counts.writes_to("deployments"), 3);
        assert_eq!(counts.writes_to("memcacheds/status"), 5);
    }
}
