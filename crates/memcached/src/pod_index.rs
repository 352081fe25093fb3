//! The live memcached Pods of each Memcached, kept by the runtime's Pod informer in place of a
//! cache of Pods, so a reconcile reads its Pods with one map lookup instead of scanning every Pod
//! in scope.
use capstan_runtime::{MetadataIndex, key, labels, split_keys};
use kube::api::ObjectMeta;
use std::collections::{BTreeSet, HashMap};

use crate::build::APP;

/// `namespace/name`, see [`key`].
type Key = Box<str>;

/// Memcached instance → its live Pods' names, fed by the Pod watch.
#[derive(Debug, Default)]
pub struct PodsByInstance {
    /// Instance (`namespace/memcached`) → names of its live (not terminating) Pods.
    pods: HashMap<Key, BTreeSet<Box<str>>>,
    /// Pod (`namespace/pod`) → the instance it is listed under, to move or drop it.
    owner_of: HashMap<Key, Key>,
}

/// The Memcached instance a Pod belongs to, from the labels its Deployment's template gives it.
pub fn instance_of(pod: &ObjectMeta) -> Option<(String, String)> {
    let pod_labels = pod.labels.as_ref()?;
    if pod_labels.get(labels::NAME).map(String::as_str) != Some(APP) {
        return None;
    }
    Some((pod.namespace.clone()?, pod_labels.get(labels::INSTANCE)?.clone()))
}

/// Keeps what the index reads of a Pod: its namespace, name, deletion mark and the two labels
/// naming its instance (all a changed Pod's metadata waiting for the controller needs to say).
pub fn trim_pod(pod: &mut kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Pod>) {
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
    /// The live Pods of Memcached `name` in `namespace`, sorted by name.
    pub fn pods_of(&self, namespace: &str, name: &str) -> Vec<String> {
        self.pods
            .get(&key(namespace, name))
            .map(|names| names.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default()
    }

    /// How many Pods the index holds.
    pub fn len(&self) -> usize {
        self.owner_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the Pod `pod_key` (named `pod_name`) from the instance it is listed under; returns
    /// that instance.
    fn unlist(&mut self, pod_key: &str, pod_name: &str) -> Option<Key> {
        let instance = self.owner_of.remove(pod_key)?;
        if let Some(names) = self.pods.get_mut(&instance) {
            names.remove(pod_name);
            if names.is_empty() {
                self.pods.remove(&instance);
            }
        }
        Some(instance)
    }
}

impl MetadataIndex for PodsByInstance {
    /// Lists a live Pod under its instance (moving it if its labels changed); a terminating or
    /// unlabelled one is dropped.
    fn apply(&mut self, pod: &ObjectMeta) {
        let (Some(namespace), Some(name)) = (&pod.namespace, &pod.name) else {
            return;
        };
        let pod_key = key(namespace, name);
        let live_instance = Some(pod)
            .filter(|p| p.deletion_timestamp.is_none())
            .and_then(instance_of)
            .map(|(namespace, instance)| key(&namespace, &instance));
        if live_instance.is_some() && self.owner_of.get(&pod_key) == live_instance.as_ref() {
            return;
        }
        self.unlist(&pod_key, name);
        if let Some(instance) = live_instance {
            self.pods
                .entry(instance.clone())
                .or_default()
                .insert(name.as_str().into());
            self.owner_of.insert(pod_key, instance);
        }
    }

    /// Drops a Pod; returns its metadata as far as the index knew it (name and instance labels),
    /// so the instance hears of a deletion the watch missed.
    fn delete(&mut self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let instance = self.unlist(&key(namespace, name), name)?;
        let (_, instance) = instance.split_once('/')?;
        Some(ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels::selector_labels(APP, instance)),
            ..ObjectMeta::default()
        })
    }

    fn keys(&self) -> Vec<(String, String)> {
        split_keys(self.owner_of.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time};
    use kube::core::{PartialObjectMeta, PartialObjectMetaExt};

    fn pod(ns: &str, name: &str, instance: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: instance.map(|i| labels::standard_labels(APP, i)),
            ..Default::default()
        }
    }

    #[test]
    fn pods_are_listed_under_their_instance_and_namespace() {
        let mut index = PodsByInstance::default();
        for p in [
            pod("a", "cache-1", Some("cache")),
            pod("a", "cache-2", Some("cache")),
            pod("a", "other-1", Some("other")),
            pod("b", "cache-9", Some("cache")),
            pod("a", "unrelated", None),
        ] {
            index.apply(&p);
        }
        assert_eq!(index.pods_of("a", "cache"), ["cache-1", "cache-2"]);
        assert_eq!(index.pods_of("b", "cache"), ["cache-9"]);
        assert_eq!(index.pods_of("a", "other"), ["other-1"]);
        assert!(index.pods_of("a", "nothing").is_empty());
        assert_eq!(index.len(), 4, "unlabelled Pods are not held");
        let mut keys = index.keys();
        keys.sort();
        assert_eq!(keys[0], ("a".to_owned(), "cache-1".to_owned()));
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn a_trimmed_pod_lands_under_the_same_instance_and_terminates_the_same() {
        let mut full = pod("a", "cache-1", Some("cache"));
        full.uid = Some("uid".into());
        full.generate_name = Some("cache-".into());
        full.owner_references = Some(Vec::new());
        let mut trimmed: PartialObjectMeta<Pod> = full.clone().into_request_partial();
        trim_pod(&mut trimmed);
        assert_eq!(instance_of(&trimmed.metadata), instance_of(&full));
        assert_eq!(
            instance_of(&trimmed.metadata),
            Some(("a".to_owned(), "cache".to_owned()))
        );
        assert_eq!(
            trimmed.metadata.labels.as_ref().map(|l| l.len()),
            Some(2),
            "only the name and instance labels are kept"
        );
        assert!(trimmed.metadata.uid.is_none() && trimmed.metadata.owner_references.is_none());

        full.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut terminating: PartialObjectMeta<Pod> = full.into_request_partial();
        trim_pod(&mut terminating);
        let mut index = PodsByInstance::default();
        index.apply(&terminating.metadata);
        assert!(index.is_empty(), "a trimmed terminating Pod is still not listed");
    }

    #[test]
    fn deleted_terminating_and_relabelled_pods_are_dropped() {
        let mut index = PodsByInstance::default();
        index.apply(&pod("a", "cache-1", Some("cache")));
        index.apply(&pod("a", "cache-2", Some("cache")));
        assert_eq!(index.len(), 2);

        // cache-1 deleted: what the index returns still names its instance.
        let deleted = index.delete("a", "cache-1").expect("it was listed");
        assert_eq!(instance_of(&deleted), Some(("a".to_owned(), "cache".to_owned())));
        assert_eq!(deleted.name.as_deref(), Some("cache-1"));
        assert!(index.delete("a", "cache-1").is_none());

        // cache-2 terminating, then moved to "other", then unlabelled.
        let mut terminating = pod("a", "cache-2", Some("cache"));
        terminating.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        index.apply(&terminating);
        assert!(index.pods_of("a", "cache").is_empty());
        assert!(index.is_empty(), "entries are dropped, not left empty");
        assert!(index.pods.is_empty(), "no instance is left with an empty set");

        index.apply(&pod("a", "cache-2", Some("other")));
        assert_eq!(index.pods_of("a", "other"), ["cache-2"]);
        index.apply(&pod("a", "cache-2", Some("cache")));
        assert!(index.pods_of("a", "other").is_empty());
        assert_eq!(index.pods_of("a", "cache"), ["cache-2"]);
        index.apply(&pod("a", "cache-2", None));
        assert!(index.is_empty() && index.pods.is_empty());
    }
}
