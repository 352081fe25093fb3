//! Status writes the cache has not shown yet.
//!
//! A reconcile compares the status it wants with the one on the cached object. Right after a
//! status write, a reconcile woken by another event (a child, a Pod) still sees the cached object
//! from before that write, finds the status missing or old, and would write the same status
//! again. So each write is remembered with the `resourceVersion`s known to precede it: the one it
//! was computed from and those this controller's own earlier writes produced (a lagging watch
//! shows them one by one). While the cache shows one of those, the remembered status stands in
//! for the cached one. Any other version (the write itself, or someone else's change) drops the
//! memory and the cache decides, so nothing relies on ordering `resourceVersion`s.
//!
//! A status built on a stale base stamps `lastTransitionTime` afresh on conditions the base
//! lacks; a condition whose type and status match the remembered write keeps the remembered time,
//! or every second boundary a slow watch spans would cost a write.
use std::{collections::HashMap, sync::Mutex};

use serde_json::Value;

use crate::lock;

/// `(kind, namespace, name)`.
pub(crate) type StatusKey = (String, String, String);

/// Versions remembered per object: a chain longer than this (writes piling up faster than one
/// watch event) is dropped, costing at most one more write.
const MAX_VERSIONS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    /// Versions of the object that precede the write: the one the status was computed from and
    /// the results of earlier writes the cache had not shown.
    before: Vec<String>,
    /// The version the write produced, if the response said.
    result: Option<String>,
    /// The status as written (compact JSON: kept only until the cache shows the write).
    status: Box<str>,
}

#[derive(Default)]
pub(crate) struct StatusWrites {
    written: Mutex<HashMap<StatusKey, Written>>,
}

impl StatusWrites {
    /// Whether `status` is what this controller last wrote to `key` while the cache still shows
    /// `version`, from before that write (then writing it again changes nothing). On such a stale
    /// base, `status` first takes the remembered `lastTransitionTime` of each condition that did
    /// not change, so a write that does go out keeps them. Forgets a write the cache has shown or
    /// overtaken.
    pub(crate) fn already_written(&self, key: &StatusKey, version: Option<&str>, status: &mut Value) -> bool {
        let mut written = lock(&self.written);
        let Some(w) = written.get(key) else { return false };
        if version.is_some_and(|v| w.before.iter().any(|b| b == v)) {
            let Ok(last) = serde_json::from_str::<Value>(&w.status) else {
                return false;
            };
            keep_transition_times(status, &last);
            return *status == last;
        }
        written.remove(key);
        false
    }

    /// Remembers that `status`, computed from the object at `from_version`, was written and
    /// produced `result`.
    pub(crate) fn record(&self, key: StatusKey, from_version: Option<String>, result: Option<String>, status: &Value) {
        let mut written = lock(&self.written);
        let Some(from_version) = from_version else {
            written.remove(&key);
            return;
        };
        // Written again from a version still known to precede the last write: the last write's
        // result precedes this one too.
        let mut before = match written.remove(&key) {
            Some(last) if last.before.contains(&from_version) => {
                let mut before = last.before;
                before.extend(last.result);
                before
            }
            _ => vec![from_version],
        };
        before.retain(|v| Some(v) != result.as_ref());
        if before.is_empty() || before.len() > MAX_VERSIONS {
            return;
        }
        written.insert(
            key,
            Written {
                before,
                result,
                status: status.to_string().into_boxed_str(),
            },
        );
    }

    /// The cache now holds `key` at `version`: unless that version precedes the remembered write,
    /// the write is shown there (or overtaken) and the memory is dropped now rather than at the
    /// next reconcile. A converged controller then remembers nothing.
    pub(crate) fn observe(&self, key: &StatusKey, version: Option<&str>) {
        let mut written = lock(&self.written);
        if written
            .get(key)
            .is_some_and(|w| !version.is_some_and(|v| w.before.iter().any(|b| b == v)))
        {
            written.remove(key);
        }
    }

    /// Drops what is remembered of a deleted object.
    pub(crate) fn forget(&self, key: &StatusKey) {
        lock(&self.written).remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.written).len()
    }
}

/// Each condition in `desired` whose type and status match a condition in `last` takes that
/// condition's `lastTransitionTime` (a stale base stamped it afresh).
fn keep_transition_times(desired: &mut Value, last: &Value) {
    let Some(last_conditions) = last.get("conditions").and_then(Value::as_array) else {
        return;
    };
    let Some(conditions) = desired.get_mut("conditions").and_then(Value::as_array_mut) else {
        return;
    };
    for condition in conditions {
        let same = last_conditions
            .iter()
            .find(|l| l.get("type") == condition.get("type") && l.get("status") == condition.get("status"));
        if let (Some(time), Some(condition)) = (
            same.and_then(|s| s.get("lastTransitionTime")),
            condition.as_object_mut(),
        ) {
            condition.insert("lastTransitionTime".to_owned(), time.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> StatusKey {
        ("Memcached".into(), "apps".into(), name.into())
    }

    fn status(nodes: &[&str], since: &str) -> Value {
        json!({
            "nodes": nodes,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "NotReady", "lastTransitionTime": since},
            ],
        })
    }

    fn record(writes: &StatusWrites, name: &str, from: &str, result: &str, status: &Value) {
        writes.record(key(name), Some(from.into()), Some(result.into()), status);
    }

    #[test]
    fn the_same_status_from_the_same_stale_version_is_already_written() {
        let writes = StatusWrites::default();
        let a = status(&[], "2026-01-01T00:00:00Z");
        assert!(!writes.already_written(&key("a"), Some("10"), &mut a.clone()));
        record(&writes, "a", "10", "11", &a);
        assert!(writes.already_written(&key("a"), Some("10"), &mut a.clone()));
        // Another status from that version is a real change.
        assert!(!writes.already_written(&key("a"), Some("10"), &mut status(&["p"], "2026-01-01T00:00:00Z")));
        assert!(!writes.already_written(&key("b"), Some("10"), &mut a.clone()));
    }

    #[test]
    fn a_condition_stamped_afresh_on_a_stale_base_keeps_the_written_time() {
        let writes = StatusWrites::default();
        record(&writes, "a", "10", "11", &status(&[], "2026-01-01T00:00:00Z"));
        // Built a second later from the same stale version: the condition did not change.
        assert!(writes.already_written(&key("a"), Some("10"), &mut status(&[], "2026-01-01T00:00:01Z")));
        // A condition whose status changed is a change, whatever its time.
        let flipped = json!({"nodes": [], "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]});
        assert!(!writes.already_written(&key("a"), Some("10"), &mut flipped.clone()));
        // A real change built on the stale base goes out with the unchanged condition's time.
        let mut listed = status(&["p"], "2026-01-01T00:00:01Z");
        assert!(!writes.already_written(&key("a"), Some("10"), &mut listed));
        assert_eq!(listed, status(&["p"], "2026-01-01T00:00:00Z"));
    }

    #[test]
    fn writes_chained_on_a_lagging_cache_stay_remembered_until_the_last_one_shows() {
        let writes = StatusWrites::default();
        let first = status(&[], "2026-01-01T00:00:00Z");
        let second = status(&["p"], "2026-01-01T00:00:00Z");
        // Written from 10 (→ 11), then again from 10, the cache not having shown 11 (→ 12).
        record(&writes, "a", "10", "11", &first);
        assert!(!writes.already_written(&key("a"), Some("10"), &mut second.clone()));
        record(&writes, "a", "10", "12", &second);
        // The cache shows the first write: still before the second, which stays remembered.
        writes.observe(&key("a"), Some("11"));
        assert!(writes.already_written(&key("a"), Some("11"), &mut second.clone()));
        assert!(writes.already_written(&key("a"), Some("10"), &mut second.clone()));
        // The second write arrives: the cache decides from now on.
        writes.observe(&key("a"), Some("12"));
        assert_eq!(writes.len(), 0);
    }

    #[test]
    fn any_other_version_forgets_the_write_and_lets_the_cache_decide() {
        let writes = StatusWrites::default();
        let a = status(&[], "2026-01-01T00:00:00Z");
        record(&writes, "a", "10", "11", &a);
        assert!(!writes.already_written(&key("a"), Some("13"), &mut a.clone()));
        assert_eq!(writes.len(), 0);
        // Seeing version 10 again later (it cannot be trusted to be older) does not revive it.
        assert!(!writes.already_written(&key("a"), Some("10"), &mut a.clone()));
        // Nor is a write remembered that came from an object without a version.
        writes.record(key("a"), None, Some("11".into()), &a);
        assert_eq!(writes.len(), 0);
    }

    #[test]
    fn a_deleted_object_is_forgotten() {
        let writes = StatusWrites::default();
        let a = status(&[], "2026-01-01T00:00:00Z");
        record(&writes, "a", "10", "11", &a);
        record(&writes, "b", "10", "11", &a);
        writes.forget(&key("a"));
        assert_eq!(writes.len(), 1);
        assert!(writes.already_written(&key("b"), Some("10"), &mut a.clone()));
    }

    #[test]
    fn a_write_is_forgotten_once_the_cache_shows_another_version() {
        let writes = StatusWrites::default();
        let a = status(&[], "2026-01-01T00:00:00Z");
        record(&writes, "a", "10", "11", &a);
        record(&writes, "b", "10", "11", &a);
        // A late event of the version the status was computed from changes nothing.
        writes.observe(&key("a"), Some("10"));
        assert!(writes.already_written(&key("a"), Some("10"), &mut a.clone()));
        // The write itself (or anything after it) arrives.
        writes.observe(&key("a"), Some("11"));
        writes.observe(&key("c"), Some("11"));
        assert_eq!(writes.len(), 1, "only b is still remembered");
        assert!(writes.already_written(&key("b"), Some("10"), &mut a.clone()));
    }
}
