//! The cache of owned children, kept as compact JSON and indexed by controlling owner.
//!
//! A typed Kubernetes object in memory is several times its JSON: every optional field is inline
//! in its struct (a `Deployment` is 2.5 KB before its first string) and every label or selector
//! map allocates a B-tree node of about 540 bytes even for one entry. A cached Deployment took
//! ~8.5 KB and a headless Service ~5 KB, against ~2.4 KB and ~0.9 KB of JSON. LZ4 against a
//! dictionary, the first child's JSON, cuts that to what is an object's own: the children of one
//! kind share most of their text (keys, labels, the Pod template): a Deployment of 1.5 KB of JSON
//! is 745 bytes after LZ4 alone and 119 against a sibling. Children are read a few
//! times per reconcile, so they are stored compressed and decoded on read (tens of microseconds,
//! nearly all of it JSON), which keeps a manager with thousands of owners within a small memory
//! budget.
//!
//! The owner index answers "which children does this owner control" without scanning every
//! cached child (a prune per reconcile would otherwise be quadratic in the number of owners).
use futures::StreamExt;
use kube::{
    Api, Resource,
    core::{PartialObjectMeta, PartialObjectMetaExt},
    runtime::{reflector::ObjectRef, watcher},
};
use serde::{Serialize, de::DeserializeOwned};
use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};
use tokio::sync::watch;

use super::watch::{Informable, Subscribers, events, send};
use crate::{lock, process::readiness::Gate};

/// Namespace and name.
type Key = (Box<str>, Box<str>);

/// How long a child this manager created is read from its apply response while its watch event
/// has not arrived (normally milliseconds; seconds in a burst). After that, a miss costs a GET.
const CREATED_FOR: Duration = Duration::from_secs(30);

/// LZ4 reads at most the last 64 KiB of a dictionary.
const DICTIONARY_MAX: usize = 64 * 1024;

struct Stored {
    /// The object's JSON, LZ4-compressed against [`Objects::dictionary`].
    packed: Box<[u8]>,
    /// UID of the controlling owner, for [`Objects::by_owner`].
    controller: Option<Box<str>>,
}

#[derive(Default)]
pub(crate) struct Objects {
    /// The JSON of the first object stored (up to [`DICTIONARY_MAX`]), which every object here
    /// is compressed against; fixed once set, as every stored object depends on it.
    dictionary: Option<Box<[u8]>>,
    by_key: HashMap<Key, Stored>,
    /// An owner has one child of a kind or a few: a vector is a fraction of a B-tree's node.
    by_owner: HashMap<Box<str>, Vec<Key>>,
    /// Children created by this manager that the watch has not shown yet, as the apiserver
    /// answered the create (a reconcile woken by its sibling's event reads it from here).
    created: HashMap<Key, (Box<[u8]>, Instant)>,
    /// Children the watch showed deleted lately: a create answer that comes after its own
    /// deletion event is stale and is not remembered.
    deleted: HashMap<Key, Instant>,
    swept: Option<Instant>,
}

impl Objects {
    fn insert<C: Resource<DynamicType = ()> + Serialize>(&mut self, obj: &C) {
        let (Some(key), Some(packed)) = (key_of(obj), self.pack(obj)) else {
            return;
        };
        let controller: Option<Box<str>> = obj
            .meta()
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map(|r| Box::from(r.uid.as_str()));
        self.created.remove(&key);
        let old = self.by_key.insert(key.clone(), Stored { packed, controller });
        let old_controller = old.and_then(|old| old.controller);
        if old_controller != self.by_key[&key].controller {
            self.unindex(old_controller.as_deref(), &key);
            if let Some(owner) = &self.by_key[&key].controller {
                let keys = self
                    .by_owner
                    .entry(owner.clone())
                    .or_insert_with(|| Vec::with_capacity(1));
                keys.push(key);
            }
        }
    }

    fn remove(&mut self, key: Key) -> Option<Stored> {
        let now = Instant::now();
        self.sweep(now);
        self.created.remove(&key);
        self.deleted.insert(key.clone(), now);
        let old = self.by_key.remove(&key)?;
        self.unindex(old.controller.as_deref(), &key);
        Some(old)
    }

    fn unindex(&mut self, owner: Option<&str>, key: &Key) {
        if let Some(owner) = owner
            && let Some(keys) = self.by_owner.get_mut(owner)
        {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    fn remember_created<C: Resource<DynamicType = ()> + Serialize>(&mut self, obj: &C) {
        let Some(key) = key_of(obj) else {
            return;
        };
        let now = Instant::now();
        self.sweep(now);
        if self.by_key.contains_key(&key) || self.deleted.contains_key(&key) {
            return;
        }
        if let Some(packed) = self.pack(obj) {
            self.created.insert(key, (packed, now));
        }
    }

    fn get(&self, key: &Key, now: Instant) -> Option<&[u8]> {
        match self.by_key.get(key) {
            Some(stored) => Some(&stored.packed),
            None => self
                .created
                .get(key)
                .filter(|(_, at)| now.duration_since(*at) < CREATED_FOR)
                .map(|(packed, _)| &packed[..]),
        }
    }

    /// Forgets creations and deletions older than [`CREATED_FOR`] (every few seconds at most:
    /// a sweep per event would be quadratic).
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|swept| now.duration_since(swept) < CREATED_FOR / 6)
        {
            return;
        }
        self.created.retain(|_, (_, at)| now.duration_since(*at) < CREATED_FOR);
        self.deleted.retain(|_, at| now.duration_since(*at) < CREATED_FOR);
        self.swept = Some(now);
    }

    fn keys(&self) -> Vec<Key> {
        self.by_key.keys().cloned().collect()
    }

    /// An object as it is stored: its JSON, LZ4-compressed against the dictionary (which the
    /// first object packed becomes).
    fn pack<C: Resource<DynamicType = ()> + Serialize>(&mut self, obj: &C) -> Option<Box<[u8]>> {
        let json = match serde_json::to_vec(obj) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(%error, kind = %C::kind(&()), name = ?obj.meta().name, "cannot store a child as JSON");
                return None;
            }
        };
        let dictionary = self
            .dictionary
            .get_or_insert_with(|| json[..json.len().min(DICTIONARY_MAX)].into());
        Some(lz4_flex::block::compress_prepend_size_with_dict(&json, dictionary).into_boxed_slice())
    }

    fn decode<C: DeserializeOwned + Resource<DynamicType = ()>>(&self, packed: &[u8]) -> Option<Arc<C>> {
        let dictionary = self.dictionary.as_deref().unwrap_or_default();
        let json = match lz4_flex::block::decompress_size_prepended_with_dict(packed, dictionary) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(%error, kind = %C::kind(&()), "cannot decompress a cached child");
                return None;
            }
        };
        match serde_json::from_slice(&json) {
            Ok(obj) => Some(Arc::new(obj)),
            Err(error) => {
                // Only this module writes these bytes, from the same type: a bug, not bad input.
                tracing::error!(%error, kind = %C::kind(&()), "cannot decode a cached child");
                None
            }
        }
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
        objects.decode(objects.get(&(namespace.into(), reference.name.as_str().into()), Instant::now())?)
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
            .filter_map(|stored| objects.decode(&stored.packed))
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

    /// Remembers a child this manager has just created, as the apiserver answered, until the
    /// watch shows it (at most [`CREATED_FOR`]).
    pub(crate) fn remember_created(&self, obj: &C) {
        self.write().remember_created(obj);
    }

    pub(crate) fn delete(&self, obj: &C) {
        if let Some(key) = key_of(obj) {
            self.write().remove(key);
        }
    }

    /// Replaces everything with the objects of a completed list; returns the objects that were
    /// cached before and are not in it (deleted while the watch was down).
    pub(crate) fn replace(&self, listed: Objects) -> Vec<Arc<C>> {
        let old = std::mem::replace(&mut *self.write(), listed);
        let _ = self.shared.ready.send_replace(true);
        let current = self.read();
        old.by_key
            .iter()
            .filter(|(key, _)| !current.by_key.contains_key(*key))
            .filter_map(|(_, stored)| old.decode(&stored.packed))
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

/// An object's cache key: its namespace and name (`None` without either: not a namespaced child).
fn key_of<C: Resource<DynamicType = ()>>(obj: &C) -> Option<Key> {
    let meta = obj.meta();
    Some((meta.namespace.as_deref()?.into(), meta.name.as_deref()?.into()))
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

/// The watch behind a [`ChildCache`]: the events a typed informer sees, stored as JSON. After a
/// list every child is handed out decoded one at a time, so a relist never holds all of them
/// decoded at once.
pub(super) async fn drive_children<C: Informable + Serialize>(
    api: Api<C>,
    config: watcher::Config,
    cache: ChildCache<C>,
    subscribers: Subscribers<PartialObjectMeta<C>>,
    gate: Gate,
) {
    let mut events = std::pin::pin!(events(api, config, |_| {}));
    let mut listed = None;
    while let Some(event) = events.next().await {
        let senders: Vec<_> = lock(&subscribers).clone();
        match event {
            watcher::Event::Init => listed = Some(listing()),
            watcher::Event::InitApply(obj) => {
                list_insert(listed.get_or_insert_with(listing), &obj);
            }
            watcher::Event::InitDone => {
                let vanished = cache.replace(listed.take().unwrap_or_default());
                gate.ready();
                for key in cache.keys() {
                    if let Some(obj) = cache.get_key(&key) {
                        send(&senders, metadata_of(&obj)).await;
                    }
                }
                for obj in vanished {
                    send(&senders, metadata_of(&obj)).await;
                }
            }
            watcher::Event::Apply(obj) => {
                cache.apply(&obj);
                send(&senders, metadata_of(&obj)).await;
            }
            watcher::Event::Delete(obj) => {
                cache.delete(&obj);
                send(&senders, metadata_of(&obj)).await;
            }
        }
    }
}

fn metadata_of<C: Informable>(obj: &C) -> Arc<PartialObjectMeta<C>> {
    Arc::new(obj.meta().clone().into_request_partial::<C>())
}

#[cfg(test)]
mod tests;
