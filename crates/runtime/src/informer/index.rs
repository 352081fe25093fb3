//! Informers that keep an index instead of a cache.
//!
//! A controller that watches Pods only to learn which exist, or whose they are, needs a name or
//! an owner per Pod, not the Pod. A cached object's metadata costs ~650 bytes however much of it
//! is trimmed away (the struct, its `Arc`, kube's key), a name in a set a tenth of that. A
//! [`MetadataIndex`] is fed by the watch itself, before any subscriber hears of the change, so a
//! reconcile woken by a change reads an index that already holds it, as it would a cache.
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    api::ObjectMeta,
    core::{PartialObjectMeta, PartialObjectMetaExt},
    runtime::watcher,
};
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};
use tokio::sync::{mpsc, watch};

use super::watch::{Informable, Subscribers, events, send};
use crate::{lock, process::readiness::Gate};

/// What a controller derives from the metadata of one kind's objects, kept by an informer in
/// place of a cache (see [`Watches::index`](crate::Watches::index)).
pub trait MetadataIndex: Default + Send + 'static {
    /// Records an object as `meta` shows it now (created, changed or listed).
    fn apply(&mut self, meta: &ObjectMeta);

    /// Forgets the object `namespace/name`, returning what it had recorded of it (enough to say
    /// whose it was) when subscribers should hear of it; `None` when it held nothing.
    fn delete(&mut self, namespace: &str, name: &str) -> Option<ObjectMeta>;

    /// The (namespace, name) of everything recorded: after a re-list, those not listed again
    /// were deleted while the watch was down.
    fn keys(&self) -> Vec<(String, String)>;
}

/// An index shared by its informer (the writer) and the controllers reading it. Cloning shares it.
pub struct SharedIndex<I> {
    index: Arc<Mutex<I>>,
    ready: Arc<watch::Sender<bool>>,
}

impl<I> Clone for SharedIndex<I> {
    fn clone(&self) -> Self {
        Self {
            index: self.index.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<I: MetadataIndex> Default for SharedIndex<I> {
    fn default() -> Self {
        Self {
            index: Arc::default(),
            ready: Arc::new(watch::channel(false).0),
        }
    }
}

impl<I: MetadataIndex> SharedIndex<I> {
    /// Runs `read` on the index; complete once the informer has listed everything.
    pub fn read<R>(&self, read: impl FnOnce(&I) -> R) -> R {
        read(&lock(&self.index))
    }

    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// An index filled from `objects`, for unit tests of mappers and readers.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_metadata(objects: impl IntoIterator<Item = ObjectMeta>) -> Self {
        let shared = Self::default();
        objects.into_iter().for_each(|meta| lock(&shared.index).apply(&meta));
        shared
    }
}

/// A controller's view of an indexed informer: the index, and a stream of changed objects'
/// (trimmed) metadata.
pub struct IndexSubscription<K: Informable, I> {
    index: SharedIndex<I>,
    changes: mpsc::Receiver<Arc<PartialObjectMeta<K>>>,
}

impl<K: Informable, I: MetadataIndex> IndexSubscription<K, I> {
    pub(super) fn new(index: SharedIndex<I>, changes: mpsc::Receiver<Arc<PartialObjectMeta<K>>>) -> Self {
        Self { index, changes }
    }

    pub fn index(&self) -> SharedIndex<I> {
        self.index.clone()
    }

    /// Every object created, changed or deleted after the first list (a deleted one as last
    /// seen). The first list wakes no one: every controller reconciles all its objects on start.
    pub fn into_stream(self) -> impl futures::Stream<Item = Arc<PartialObjectMeta<K>>> + Send + 'static {
        futures::stream::unfold(
            self.changes,
            |mut rx| async move { rx.recv().await.map(|obj| (obj, rx)) },
        )
    }
}

/// Which objects of a kind exist, by namespace and name: the index of a controller that only
/// asks "is there a Pod called X here?".
#[derive(Debug, Default)]
pub struct Names {
    /// `namespace/name`; neither part can hold a `/`.
    names: HashSet<Box<str>>,
}

impl Names {
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.names.contains(&key(namespace, name))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The one-allocation key of an object: `namespace/name` (neither part can hold a `/`), where a
/// pair of Strings would take two allocations.
pub fn key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

/// The (namespace, name) pairs of [`key`]s, for [`MetadataIndex::keys`].
pub fn split_keys<'a>(keys: impl Iterator<Item = &'a Box<str>>) -> Vec<(String, String)> {
    keys.filter_map(|k| k.split_once('/'))
        .map(|(namespace, name)| (namespace.to_owned(), name.to_owned()))
        .collect()
}

impl MetadataIndex for Names {
    fn apply(&mut self, meta: &ObjectMeta) {
        if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name)
            && !self.contains(namespace, name)
        {
            self.names.insert(key(namespace, name));
        }
    }

    fn delete(&mut self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        self.names.remove(&key(namespace, name)).then(|| ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        })
    }

    fn keys(&self) -> Vec<(String, String)> {
        split_keys(self.names.iter())
    }
}

/// Applies one watch's events to an index and says who to tell: what the driver does, without
/// the watch (unit-tested on its own).
struct Feed<K: Informable, I> {
    index: SharedIndex<I>,
    /// Keys listed so far while a (re-)list is under way.
    listed: Option<HashSet<(String, String)>>,
    /// Whether a list has completed: the first one notifies no one.
    listed_once: bool,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: Informable, I: MetadataIndex> Feed<K, I> {
    fn new(index: SharedIndex<I>) -> Self {
        Self {
            index,
            listed: None,
            listed_once: false,
            _kind: std::marker::PhantomData,
        }
    }

    /// Applies `event`; returns the metadata to hand to subscribers.
    fn handle(&mut self, event: watcher::Event<PartialObjectMeta<K>>) -> Vec<Arc<PartialObjectMeta<K>>> {
        match event {
            watcher::Event::Init => {
                self.listed = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                lock(&self.index.index).apply(&obj.metadata);
                self.listed
                    .get_or_insert_with(HashSet::new)
                    .insert((obj.namespace().unwrap_or_default(), obj.name_any()));
                self.after_first_list(vec![Arc::new(obj)])
            }
            watcher::Event::InitDone => {
                let listed = self.listed.take().unwrap_or_default();
                let vanished: Vec<ObjectMeta> = {
                    let mut index = lock(&self.index.index);
                    let keys = index.keys();
                    keys.into_iter()
                        .filter(|key| !listed.contains(key))
                        .filter_map(|(namespace, name)| index.delete(&namespace, &name))
                        .collect()
                };
                self.index.ready.send_replace(true);
                let vanished = vanished
                    .into_iter()
                    .map(|meta| Arc::new(meta.into_request_partial::<K>()))
                    .collect();
                let changed = self.after_first_list(vanished);
                self.listed_once = true;
                changed
            }
            watcher::Event::Apply(obj) => {
                lock(&self.index.index).apply(&obj.metadata);
                vec![Arc::new(obj)]
            }
            watcher::Event::Delete(obj) => {
                lock(&self.index.index).delete(&obj.namespace().unwrap_or_default(), &obj.name_any());
                vec![Arc::new(obj)]
            }
        }
    }

    fn after_first_list(&self, changed: Vec<Arc<PartialObjectMeta<K>>>) -> Vec<Arc<PartialObjectMeta<K>>> {
        if self.listed_once { changed } else { Vec::new() }
    }
}

/// The watch behind an indexed informer: metadata only, trimmed, applied to the index, then
/// handed to the subscribers.
pub(crate) async fn drive_index<K: Informable, I: MetadataIndex>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
    trim: fn(&mut PartialObjectMeta<K>),
    index: SharedIndex<I>,
    subscribers: Subscribers<PartialObjectMeta<K>>,
    gate: Gate,
) {
    let mut feed = Feed::<K, I>::new(index);
    let mut events = std::pin::pin!(events(api, config, trim));
    while let Some(event) = events.next().await {
        let done = matches!(event, watcher::Event::InitDone);
        let changed = feed.handle(event);
        if done {
            gate.ready();
        }
        if changed.is_empty() {
            continue;
        }
        let senders: Vec<_> = lock(&subscribers).clone();
        for obj in changed {
            send(&senders, obj).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(ns: &str, name: &str) -> PartialObjectMeta<Pod> {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..ObjectMeta::default()
        }
        .into_request_partial::<Pod>()
    }

    fn names_of(changed: &[Arc<PartialObjectMeta<Pod>>]) -> Vec<String> {
        changed
            .iter()
            .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
            .collect()
    }

    #[test]
    fn names_record_and_forget_by_namespace_and_name() {
        let mut names = Names::default();
        names.apply(&pod("a", "x").metadata);
        names.apply(&pod("a", "x").metadata);
        names.apply(&pod("b", "x").metadata);
        assert_eq!(names.len(), 2);
        assert!(names.contains("a", "x") && names.contains("b", "x") && !names.contains("a", "y"));
        let mut keys = names.keys();
        keys.sort();
        assert_eq!(keys, [("a".into(), "x".into()), ("b".into(), "x".into())]);
        let forgotten = names.delete("a", "x").expect("recorded");
        assert_eq!(
            (forgotten.namespace.as_deref(), forgotten.name.as_deref()),
            (Some("a"), Some("x"))
        );
        assert!(
            names.delete("a", "x").is_none(),
            "a second delete has nothing to report"
        );
        assert!(!names.contains("a", "x") && names.contains("b", "x"));
    }

    #[tokio::test]
    async fn the_first_list_fills_the_index_quietly_and_later_changes_are_handed_out() {
        let index = SharedIndex::<Names>::default();
        let mut feed = Feed::<Pod, Names>::new(index.clone());
        assert!(feed.handle(watcher::Event::Init).is_empty());
        assert!(feed.handle(watcher::Event::InitApply(pod("a", "x"))).is_empty());
        assert!(feed.handle(watcher::Event::InitApply(pod("a", "y"))).is_empty());
        assert!(!*index.ready.borrow(), "not ready before the list is complete");
        assert!(feed.handle(watcher::Event::InitDone).is_empty());
        index.wait_until_ready().await;
        assert_eq!(index.read(Names::len), 2);

        assert_eq!(names_of(&feed.handle(watcher::Event::Apply(pod("a", "z")))), ["a/z"]);
        assert!(index.read(|n| n.contains("a", "z")));
        assert_eq!(names_of(&feed.handle(watcher::Event::Delete(pod("a", "x")))), ["a/x"]);
        assert!(index.read(|n| !n.contains("a", "x")));
    }

    #[test]
    fn a_relist_hands_out_what_it_lists_and_drops_and_reports_what_vanished() {
        let index = SharedIndex::<Names>::default();
        let mut feed = Feed::<Pod, Names>::new(index.clone());
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(pod("a", "kept")),
            watcher::Event::InitApply(pod("a", "gone")),
            watcher::Event::InitDone,
        ] {
            feed.handle(event);
        }
        // The watch broke; meanwhile "gone" was deleted and "new" created.
        assert!(feed.handle(watcher::Event::Init).is_empty());
        assert_eq!(
            names_of(&feed.handle(watcher::Event::InitApply(pod("a", "kept")))),
            ["a/kept"]
        );
        assert_eq!(
            names_of(&feed.handle(watcher::Event::InitApply(pod("a", "new")))),
            ["a/new"]
        );
        assert!(
            index.read(|n| n.contains("a", "gone")),
            "kept until the list is complete"
        );
        assert_eq!(names_of(&feed.handle(watcher::Event::InitDone)), ["a/gone"]);
        let mut keys = index.read(Names::keys);
        keys.sort();
        assert_eq!(keys, [("a".into(), "kept".into()), ("a".into(), "new".into())]);
    }
}
