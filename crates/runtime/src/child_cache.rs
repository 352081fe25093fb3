//! The cache of owned children, kept as compact JSON and indexed by controlling owner.
//!
//! A typed Kubernetes object in memory is several times its JSON: every optional field is inline
//! in its struct (a `Deployment` is 2.5 KB before its first string) and every label or selector
//! map allocates a B-tree node of about 540 bytes even for one entry. A cached Deployment took
//! ~8.5 KB and a headless Service ~5 KB, against ~2 KB and ~1 KB of JSON. Children are read a
//! few times per reconcile, so they are stored as JSON and decoded on read (tens of
//! microseconds), which keeps a manager with thousands of owners within a small memory budget.
//!
//! The owner index answers "which children does this owner control" without scanning every
//! cached child (a prune per reconcile would otherwise be quadratic in the number of owners).
use kube::{Resource, runtime::reflector::ObjectRef};
use serde::{Serialize, de::DeserializeOwned};
use std::{
    collections::{BTreeSet, HashMap},
    marker::PhantomData,
    sync::{Arc, RwLock},
};
use tokio::sync::watch;

use crate::informer::Informable;

/// Namespace and name.
type Key = (Box<str>, Box<str>);

struct Stored {
    json: Box<[u8]>,
    /// UID of the controlling owner, for [`Objects::by_owner`].
    controller: Option<Box<str>>,
}

#[derive(Default)]
pub(crate) struct Objects {
    by_key: HashMap<Key, Stored>,
    by_owner: HashMap<Box<str>, BTreeSet<Key>>,
}

impl Objects {
    fn insert<C: Resource<DynamicType = ()> + Serialize>(&mut self, obj: &C) {
        let meta = obj.meta();
        let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
            return;
        };
        let json = match serde_json::to_vec(obj) {
            Ok(json) => json.into_boxed_slice(),
            Err(error) => {
                tracing::error!(%error, kind = %C::kind(&()), name, "cannot store a child as JSON");
                return;
            }
        };
        let controller: Option<Box<str>> = meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map(|r| Box::from(r.uid.as_str()));
        let key: Key = (namespace.into(), name.into());
        if let Some(owner) = &controller {
            self.by_owner.entry(owner.clone()).or_default().insert(key.clone());
        }
        if let Some(old) = self.by_key.insert(key.clone(), Stored { json, controller })
            && old.controller != self.by_key[&key].controller
        {
            self.unindex(old.controller.as_deref(), &key);
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) -> Option<Stored> {
        let key: Key = (namespace.into(), name.into());
        let old = self.by_key.remove(&key)?;
        self.unindex(old.controller.as_deref(), &key);
        Some(old)
    }

    fn unindex(&mut self, owner: Option<&str>, key: &Key) {
        if let Some(owner) = owner
            && let Some(keys) = self.by_owner.get_mut(owner)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    fn keys(&self) -> Vec<Key> {
        self.by_key.keys().cloned().collect()
    }
}

struct Shared {
    objects: RwLock<Objects>,
    ready: watch::Sender<bool>,
}

/// The cached children of one kind (`app.kubernetes.io/managed-by: capstan` objects), shared by
/// every controller that owns that kind. Cheap to clone.
pub struct ChildCache<C> {
    shared: Arc<Shared>,
    kind: PhantomData<fn() -> C>,
}

impl<C> Clone for ChildCache<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            kind: PhantomData,
        }
    }
}

impl<C: Informable + Serialize> ChildCache<C> {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                objects: RwLock::new(Objects::default()),
                ready: watch::channel(false).0,
            }),
            kind: PhantomData,
        }
    }

    /// The cached child `reference` names, decoded.
    pub fn get(&self, reference: &ObjectRef<C>) -> Option<Arc<C>> {
        let namespace = reference.namespace.as_deref()?;
        let objects = self.read();
        let stored = objects
            .by_key
            .get(&(namespace.into(), reference.name.as_str().into()))?;
        decode(&stored.json)
    }

    /// The cached children in `namespace` whose controller is the object with `owner_uid`.
    pub fn controlled_by(&self, owner_uid: &str, namespace: &str) -> Vec<Arc<C>> {
        let objects = self.read();
        let Some(keys) = objects.by_owner.get(owner_uid) else {
            return Vec::new();
        };
        keys.iter()
            .filter(|(ns, _)| ns.as_ref() == namespace)
            .filter_map(|key| objects.by_key.get(key))
            .filter_map(|stored| decode(&stored.json))
            .collect()
    }

    /// How many children are cached.
    pub fn len(&self) -> usize {
        self.read().by_key.len()
    }

    /// Whether no child is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first list has filled the cache.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.shared.ready.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    pub(crate) fn apply(&self, obj: &C) {
        self.write().insert(obj);
    }

    pub(crate) fn delete(&self, obj: &C) {
        let meta = obj.meta();
        if let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) {
            self.write().remove(namespace, name);
        }
    }

    /// Replaces everything with the objects of a completed list; returns the objects that were
    /// cached before and are not in it (deleted while the watch was down).
    pub(crate) fn replace(&self, listed: Objects) -> Vec<Arc<C>> {
        let old = std::mem::replace(&mut *self.write(), listed);
        let _ = self.shared.ready.send_replace(true);
        let current = self.read();
        old.by_key
            .into_iter()
            .filter(|(key, _)| !current.by_key.contains_key(key))
            .filter_map(|(_, stored)| decode(&stored.json))
            .collect()
    }

    /// The keys of every cached child, to hand them out one by one after a list.
    pub(crate) fn keys(&self) -> Vec<(Box<str>, Box<str>)> {
        self.read().keys()
    }

    pub(crate) fn get_key(&self, (namespace, name): &(Box<str>, Box<str>)) -> Option<Arc<C>> {
        self.get(&ObjectRef::new(name).within(namespace))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects> {
        self.shared
            .objects
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects> {
        self.shared
            .objects
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A list in progress: objects collected until the list completes and replaces the cache.
pub(crate) fn listing() -> Objects {
    Objects::default()
}

pub(crate) fn list_insert<C: Resource<DynamicType = ()> + Serialize>(listing: &mut Objects, obj: &C) {
    listing.insert(obj);
}

fn decode<C: DeserializeOwned + Resource<DynamicType = ()>>(json: &[u8]) -> Option<Arc<C>> {
    match serde_json::from_slice(json) {
        Ok(obj) => Some(Arc::new(obj)),
        Err(error) => {
            // Only this module writes these bytes, from the same type: a bug, not bad input.
            tracing::error!(%error, kind = %C::kind(&()), "cannot decode a cached child");
            None
        }
    }
}

/// A cache filled from an in-memory list, for unit tests (feature `testing`, dev-dependencies only).
#[cfg(any(test, feature = "testing"))]
pub fn child_cache_from<C: Informable + Serialize>(objects: impl IntoIterator<Item = C>) -> ChildCache<C> {
    let cache = ChildCache::new();
    let mut listed = listing();
    for obj in objects {
        list_insert(&mut listed, &obj);
    }
    cache.replace(listed);
    cache
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::{apps::v1::Deployment, core::v1::ConfigMap},
        apimachinery::pkg::apis::meta::v1::OwnerReference,
    };
    use kube::api::ObjectMeta;

    fn child(ns: &str, name: &str, owner_uid: Option<&str>, data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                owner_references: owner_uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "cache.capstan.dev/v1alpha1".into(),
                        kind: "Memcached".into(),
                        name: "owner".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                ..ObjectMeta::default()
            },
            data: Some([("k".to_owned(), data.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    fn names(children: &[Arc<ConfigMap>]) -> Vec<String> {
        let mut names: Vec<String> = children.iter().filter_map(|c| c.metadata.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_child_reads_back_as_stored_and_a_delete_removes_it() {
        let cache = child_cache_from([child("ns", "a", Some("u1"), "one")]);
        let stored = child("ns", "a", Some("u1"), "one");
        assert_eq!(cache.get(&ObjectRef::new("a").within("ns")).as_deref(), Some(&stored));
        assert!(cache.get(&ObjectRef::new("a").within("other")).is_none());
        cache.delete(&stored);
        assert!(cache.get(&ObjectRef::new("a").within("ns")).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn the_owner_index_follows_updates_that_change_hands_and_deletes() {
        let cache = child_cache_from([
            child("ns", "a", Some("u1"), ""),
            child("ns", "b", Some("u1"), ""),
            child("other", "c", Some("u1"), ""),
            child("ns", "d", None, ""),
        ]);
        assert_eq!(names(&cache.controlled_by("u1", "ns")), ["a", "b"]);
        assert_eq!(names(&cache.controlled_by("u1", "other")), ["c"]);
        cache.apply(&child("ns", "b", Some("u2"), ""));
        assert_eq!(names(&cache.controlled_by("u1", "ns")), ["a"]);
        assert_eq!(names(&cache.controlled_by("u2", "ns")), ["b"]);
        cache.apply(&child("ns", "a", Some("u1"), "changed"));
        assert_eq!(
            cache.controlled_by("u1", "ns")[0]
                .data
                .as_ref()
                .map(|d| d["k"].as_str()),
            Some("changed")
        );
        cache.delete(&child("ns", "a", Some("u1"), ""));
        assert!(cache.controlled_by("u1", "ns").is_empty());
        assert_eq!(names(&cache.controlled_by("u1", "other")), ["c"]);
        cache.delete(&child("other", "c", Some("u1"), ""));
        assert!(
            !cache.read().by_owner.contains_key("u1" as &str),
            "an owner with no children left is dropped"
        );
    }

    #[test]
    fn a_relist_replaces_everything_and_reports_what_vanished() {
        let cache = child_cache_from([child("ns", "a", Some("u1"), ""), child("ns", "b", Some("u1"), "")]);
        let mut listed = listing();
        list_insert(&mut listed, &child("ns", "b", Some("u1"), "new"));
        list_insert(&mut listed, &child("ns", "c", Some("u1"), ""));
        let vanished = cache.replace(listed);
        assert_eq!(names(&vanished), ["a"]);
        assert_eq!(names(&cache.controlled_by("u1", "ns")), ["b", "c"]);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_deployment_is_stored_in_a_fraction_of_its_typed_size() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "mc", "namespace": "ns", "labels": {"app.kubernetes.io/name": "memcached"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "memcached"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "memcached"}},
                    "spec": {"containers": [{"name": "memcached", "image": "memcached:1.6.38",
                        "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}}]}
                }
            }
        }))
        .expect("a Deployment");
        let json = serde_json::to_vec(&deployment).expect("JSON");
        // The struct alone, before any of its maps, strings and vectors.
        assert!(json.len() < std::mem::size_of::<Deployment>(), "{} bytes", json.len());
    }
}
