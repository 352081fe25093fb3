//! Status writes the cache has not shown yet.
//!
//! A reconcile compares the status it wants with the one on the cached object. Right after a
//! status write, a reconcile woken by another event (a child, a Pod) still sees the cached object
//! from before that write, finds the status missing or old, and would write the same status
//! again. So each write is remembered with the `resourceVersion` of the object it was computed
//! from: the same status computed from that same version again is already written. Any other
//! version (the cache caught up, or someone changed the object) drops the memory and the cache
//! decides, so nothing relies on ordering `resourceVersion`s.
use std::{collections::HashMap, sync::Mutex};

use crate::lock;

/// `(kind, namespace, name)`.
pub(crate) type StatusKey = (String, String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    /// The `resourceVersion` of the object the status was computed from.
    from_version: Option<String>,
    /// FNV-1a of the status as written.
    fingerprint: u64,
}

#[derive(Default)]
pub(crate) struct StatusWrites {
    written: Mutex<HashMap<StatusKey, Written>>,
}

impl StatusWrites {
    /// Whether `fingerprint` was written for `key` from the object version `from_version` (then
    /// writing it again changes nothing). Forgets a write remembered for another version.
    pub(crate) fn already_written(&self, key: &StatusKey, from_version: Option<&str>, fingerprint: u64) -> bool {
        let mut written = lock(&self.written);
        match written.get(key) {
            Some(w) if w.from_version.as_deref() == from_version => w.fingerprint == fingerprint,
            Some(_) => {
                written.remove(key);
                false
            }
            None => false,
        }
    }

    pub(crate) fn record(&self, key: StatusKey, from_version: Option<String>, fingerprint: u64) {
        lock(&self.written).insert(
            key,
            Written {
                from_version,
                fingerprint,
            },
        );
    }

    /// The cache now holds `key` at `version`: a write remembered from another version is shown
    /// there (or overtaken), so the memory is dropped now rather than at the next reconcile. A
    /// converged controller then remembers nothing.
    pub(crate) fn observe(&self, key: &StatusKey, version: Option<&str>) {
        let mut written = lock(&self.written);
        if written.get(key).is_some_and(|w| w.from_version.as_deref() != version) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> StatusKey {
        ("Memcached".into(), "apps".into(), name.into())
    }

    #[test]
    fn the_same_status_from_the_same_stale_version_is_already_written() {
        let writes = StatusWrites::default();
        assert!(!writes.already_written(&key("a"), Some("10"), 7));
        writes.record(key("a"), Some("10".into()), 7);
        assert!(writes.already_written(&key("a"), Some("10"), 7));
        // Another status from that version is a real change.
        assert!(!writes.already_written(&key("a"), Some("10"), 8));
        assert!(!writes.already_written(&key("b"), Some("10"), 7));
    }

    #[test]
    fn any_other_version_forgets_the_write_and_lets_the_cache_decide() {
        let writes = StatusWrites::default();
        writes.record(key("a"), Some("10".into()), 7);
        assert!(!writes.already_written(&key("a"), Some("11"), 7));
        assert_eq!(writes.len(), 0);
        // Seeing version 10 again later (it cannot be trusted to be older) does not revive it.
        assert!(!writes.already_written(&key("a"), Some("10"), 7));
    }

    #[test]
    fn a_deleted_object_is_forgotten() {
        let writes = StatusWrites::default();
        writes.record(key("a"), Some("10".into()), 7);
        writes.record(key("b"), Some("10".into()), 7);
        writes.forget(&key("a"));
        assert_eq!(writes.len(), 1);
        assert!(writes.already_written(&key("b"), Some("10"), 7));
    }

    #[test]
    fn a_write_is_forgotten_once_the_cache_shows_another_version() {
        let writes = StatusWrites::default();
        writes.record(key("a"), Some("10".into()), 7);
        writes.record(key("b"), Some("10".into()), 7);
        // A late event of the version the status was computed from changes nothing.
        writes.observe(&key("a"), Some("10"));
        assert!(writes.already_written(&key("a"), Some("10"), 7));
        // The write itself (or anything after it) arrives.
        writes.observe(&key("a"), Some("11"));
        writes.observe(&key("c"), Some("11"));
        assert_eq!(writes.len(), 1, "only b is still remembered");
        assert!(writes.already_written(&key("b"), Some("10"), 7));
    }
}
