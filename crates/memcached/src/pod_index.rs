//! The live memcached Pods of each Memcached, kept up to date from the Pod stream, so a reconcile
//! reads its Pods with one map lookup instead of scanning every Pod in scope.
use capstan_runtime::labels;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    ResourceExt,
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
};
use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use crate::build::APP;

/// (namespace, Memcached name).
type Instance = (String, String);

#[derive(Default)]
struct Entries {
    /// Instance → names of its live (not terminating) Pods.
    pods: HashMap<Instance, BTreeSet<String>>,
    /// (namespace, Pod name) → the instance it is listed under, to move or drop it.
    owner_of: HashMap<(String, String), Instance>,
}

/// Memcached instance → its live Pods' names. Cloning shares the index.
#[derive(Clone, Default)]
pub struct PodsByInstance {
    entries: Arc<Mutex<Entries>>,
}

/// The Memcached instance a Pod belongs to, from the labels its Deployment's template gives it.
pub fn instance_of(pod: &PartialObjectMeta<Pod>) -> Option<(String, String)> {
    let pod_labels = pod.labels();
    if pod_labels.get(labels::NAME).map(String::as_str) != Some(APP) {
        return None;
    }
    Some((pod.namespace()?, pod_labels.get(labels::INSTANCE)?.clone()))
}

/// Keeps what the index reads of a Pod: its namespace, name, deletion mark and the two labels
/// naming its instance. The cache holds every capstan-managed Pod, and their other labels and
/// owner references would be most of it.
pub fn trim_pod(pod: &mut PartialObjectMeta<Pod>) {
    let metadata = std::mem::take(&mut pod.metadata);
    pod.metadata.name = metadata.name;
    pod.metadata.namespace = metadata.namespace;
    pod.metadata.deletion_timestamp = metadata.deletion_timestamp;
    pod.metadata.labels = metadata.labels.map(|all| {
        all.into_iter()
            .filter(|(key, _)| key == labels::NAME || key == labels::INSTANCE)
            .collect()
    });
}

impl PodsByInstance {
    /// Takes in a Pod from the Pod stream (applied or deleted): its entry follows what `pods`, the
    /// Pod cache, holds now — listed while it lives, dropped once it terminates or is gone.
    pub fn observe(&self, pod: &PartialObjectMeta<Pod>, pods: &Store<PartialObjectMeta<Pod>>) {
        let Some(namespace) = pod.namespace() else { return };
        let current = pods.get(&ObjectRef::from_obj(pod));
        self.set(namespace, pod.name_any(), current.as_deref());
    }

    /// Records `pod` (the cache's current copy; None when it is gone) under `(namespace, name)`.
    fn set(&self, namespace: String, name: String, pod: Option<&PartialObjectMeta<Pod>>) {
        let live_instance = pod
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .and_then(instance_of);
        let mut entries = self.lock();
        let key = (namespace, name);
        if let Some(previous) = entries.owner_of.remove(&key)
            && let Some(names) = entries.pods.get_mut(&previous)
        {
            names.remove(&key.1);
            if names.is_empty() {
                entries.pods.remove(&previous);
            }
        }
        if let Some(instance) = live_instance {
            entries.pods.entry(instance.clone()).or_default().insert(key.1.clone());
            entries.owner_of.insert(key, instance);
        }
    }

    /// The live Pods of Memcached `name` in `namespace`, sorted by name.
    pub fn pods_of(&self, namespace: &str, name: &str) -> Vec<String> {
        self.lock()
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many Pods the index holds (for tests and capacity checks).
    pub fn len(&self) -> usize {
        self.lock().owner_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        capstan_runtime::lock(&self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_runtime::informer::store_from;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn pod(ns: &str, name: &str, instance: Option<&str>) -> PartialObjectMeta<Pod> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                labels: instance.map(|i| labels::standard_labels(APP, i)),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn pods_are_listed_under_their_instance_and_namespace() {
        let pods = [
            pod("a", "cache-1", Some("cache")),
            pod("a", "cache-2", Some("cache")),
            pod("a", "other-1", Some("other")),
            pod("b", "cache-9", Some("cache")),
            pod("a", "unrelated", None),
        ];
        let store = store_from(pods.clone());
        let index = PodsByInstance::default();
        pods.iter().for_each(|p| index.observe(p, &store));
        assert_eq!(index.pods_of("a", "cache"), ["cache-1", "cache-2"]);
        assert_eq!(index.pods_of("b", "cache"), ["cache-9"]);
        assert_eq!(index.pods_of("a", "other"), ["other-1"]);
        assert!(index.pods_of("a", "nothing").is_empty());
        assert_eq!(index.len(), 4, "unlabelled Pods are not held");
    }

    #[test]
    fn a_trimmed_pod_lands_under_the_same_instance_and_terminates_the_same() {
        let mut full = pod("a", "cache-1", Some("cache"));
        full.metadata.uid = Some("uid".into());
        full.metadata.generate_name = Some("cache-".into());
        full.metadata.owner_references = Some(Vec::new());
        let mut trimmed = full.clone();
        trim_pod(&mut trimmed);
        assert_eq!(instance_of(&trimmed), instance_of(&full));
        assert_eq!(instance_of(&trimmed), Some(("a".to_owned(), "cache".to_owned())));
        assert_eq!(
            trimmed.metadata.labels.as_ref().map(|l| l.len()),
            Some(2),
            "only the name and instance labels are kept"
        );
        assert!(trimmed.metadata.uid.is_none() && trimmed.metadata.owner_references.is_none());

        full.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut terminating = full.clone();
        trim_pod(&mut terminating);
        let index = PodsByInstance::default();
        index.observe(&terminating, &store_from([terminating.clone()]));
        assert!(index.is_empty(), "a trimmed terminating Pod is still not listed");
    }

    #[test]
    fn deleted_terminating_and_relabelled_pods_are_dropped() {
        let index = PodsByInstance::default();
        let first = [pod("a", "cache-1", Some("cache")), pod("a", "cache-2", Some("cache"))];
        let store = store_from(first.clone());
        first.iter().for_each(|p| index.observe(p, &store));
        assert_eq!(index.len(), 2);

        // cache-1 deleted (gone from the cache), cache-2 terminating, then moved to "other".
        let mut terminating = pod("a", "cache-2", Some("cache"));
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let store = store_from([terminating.clone()]);
        index.observe(&first[0], &store);
        index.observe(&terminating, &store);
        assert!(index.pods_of("a", "cache").is_empty());
        assert!(index.is_empty(), "entries are dropped, not left empty");

        let relabelled = pod("a", "cache-2", Some("other"));
        let store = store_from([relabelled.clone()]);
        index.observe(&relabelled, &store);
        assert_eq!(index.pods_of("a", "other"), ["cache-2"]);
        let unlabelled = pod("a", "cache-2", None);
        index.observe(&unlabelled, &store_from([unlabelled.clone()]));
        assert!(index.is_empty());
    }
}
