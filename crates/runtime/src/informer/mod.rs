//! One watch and one cache per kind, shared by every controller that needs that kind.
//!
//! kube's own shared streams (`reflect_shared`) forward only applied objects, so a controller
//! built on them never hears that a Pod or an owned Deployment was deleted. These informers fan
//! out every change — applied and deleted objects, and after a re-list the objects that vanished
//! while the watch was down — to each subscriber over a bounded channel (back-pressure, never a
//! dropped trigger). This fan-out can give way to kube's shared streams once they dispatch
//! deletes (kube-rs/kube#1590, "Dispatch delete events on `.reflect_shared`").
//!
//! Each kind of cache sits beside the watch that feeds it: a typed store ([`typed`]), the compact
//! children cache ([`children`]) and metadata indexes ([`index`]), all over one watch ([`watch`]).
mod children;
mod index;
mod typed;
mod watch;

pub use children::ChildCache;
#[cfg(any(test, feature = "testing"))]
pub use children::child_cache_from;
pub use index::{IndexSubscription, MetadataIndex, Names, SharedIndex, key, split_keys};
pub use typed::Subscription;
#[cfg(any(test, feature = "testing"))]
pub use typed::store_from;
pub use watch::Informable;
pub(crate) use watch::WatchBackoff;

use futures::{FutureExt, future::BoxFuture};
use kube::{
    Api, Client,
    core::PartialObjectMeta,
    runtime::{reflector::store::Writer, watcher},
};
use serde::Serialize;
use std::{
    any::{Any, TypeId},
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::mpsc;

use crate::{
    lock,
    process::readiness::{Gate, Readiness},
};
use watch::Subscribers;

/// How many changes a subscriber may lag behind before the informer waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

/// One informer as its subscribers share it: what they read (a store, a child cache or an
/// index) and the senders of its changes.
struct Entry<S, T> {
    shared: S,
    subscribers: Subscribers<T>,
}

/// A new informer for [`Informers::share`]: what subscribers read, its watch (feeding the
/// subscribers it was given) under a name, and a future that resolves once its first list is in.
struct NewInformer<S> {
    shared: S,
    name: String,
    driver: BoxFuture<'static, ()>,
    synced: BoxFuture<'static, ()>,
}

/// The registry of informers. Controllers subscribe while the manager is assembled; [`start`]
/// then turns every registered kind into one running watch.
///
/// [`start`]: Informers::start
pub struct Informers {
    client: Client,
    namespace: Option<String>,
    readiness: Readiness,
    entries: HashMap<(TypeId, String), Box<dyn Any + Send>>,
    drivers: Vec<(String, BoxFuture<'static, ()>)>,
    synced: Vec<BoxFuture<'static, ()>>,
}

/// The running side of [`Informers`]: the watches to spawn, and a future that resolves once every
/// cache has been filled by its first list.
pub struct Started {
    /// Each watch with what it watches; none ends before shutdown.
    pub drivers: Vec<(String, BoxFuture<'static, ()>)>,
    pub synced: BoxFuture<'static, ()>,
}

impl Informers {
    pub fn new(client: Client, namespace: Option<String>, readiness: Readiness) -> Self {
        Self {
            client,
            namespace,
            readiness,
            entries: HashMap::new(),
            drivers: Vec::new(),
            synced: Vec::new(),
        }
    }

    /// Subscribes to all objects of `K` in the manager's scope.
    pub fn subscribe<K: Informable>(&mut self) -> Subscription<K> {
        self.subscribe_with(watcher::Config::default())
    }

    /// Subscribes to the objects of `K` that `config`'s selectors match. Subscribers with the same
    /// selectors share one watch and one cache.
    pub fn subscribe_with<K: Informable>(&mut self, config: watcher::Config) -> Subscription<K> {
        self.subscribe_trimmed(config, |_| {})
    }

    /// [`subscribe_with`](Self::subscribe_with), `trim` applied to each object before it is
    /// stored. Subscriptions share an informer only if they share the selectors and the `trim`.
    pub fn subscribe_trimmed<K: Informable>(&mut self, config: watcher::Config, trim: fn(&mut K)) -> Subscription<K> {
        let key = (
            TypeId::of::<K>(),
            format!(
                "{:?}|{:?}|{:#x}",
                config.label_selector, config.field_selector, trim as usize
            ),
        );
        let (store, changes) = self.share(key, |informers, subscribers| {
            let writer = Writer::<K>::default();
            let store = writer.as_reader();
            let (api, name, gate) = informers.watch_of::<K>(&config);
            let synced = store.clone();
            NewInformer {
                shared: store,
                name,
                driver: Box::pin(typed::drive(api, config, trim, writer, subscribers, gate)),
                synced: Box::pin(async move {
                    // The writer lives as long as its driver; a dropped writer means shutdown anyway.
                    let _ = synced.wait_until_ready().await;
                }),
            }
        });
        Subscription::new(store, changes)
    }

    /// Subscribes to the children of kind `C` (objects matching `config`, normally capstan's
    /// label): a compact [`ChildCache`] instead of a typed store. Every owner of `C` shares it.
    /// Changes come as the child's metadata, which names its owner: a decoded child waiting in
    /// the channel would cost several times what the cache keeps of it.
    pub fn subscribe_children<C: Informable + Serialize>(
        &mut self,
        config: watcher::Config,
    ) -> (ChildCache<C>, mpsc::Receiver<Arc<PartialObjectMeta<C>>>) {
        let key = (
            TypeId::of::<C>(),
            format!("children|{:?}|{:?}", config.label_selector, config.field_selector),
        );
        self.share(key, |informers, subscribers| {
            let cache = ChildCache::<C>::new();
            let (api, name, gate) = informers.watch_of::<C>(&config);
            let synced = cache.clone();
            NewInformer {
                shared: cache.clone(),
                name,
                driver: Box::pin(children::drive_children(api, config, cache, subscribers, gate)),
                synced: Box::pin(async move { synced.wait_until_ready().await }),
            }
        })
    }

    /// Subscribes to an index of `K`'s metadata (`config`'s selectors, each object trimmed by
    /// `trim` first) kept instead of a cache. Subscriptions with the same index type, selectors
    /// and `trim` share one watch and one index.
    pub fn subscribe_index<K: Informable, I: MetadataIndex>(
        &mut self,
        config: watcher::Config,
        trim: fn(&mut PartialObjectMeta<K>),
    ) -> IndexSubscription<K, I> {
        let key = (
            TypeId::of::<(K, I)>(),
            format!(
                "index|{:?}|{:?}|{:#x}",
                config.label_selector, config.field_selector, trim as usize
            ),
        );
        let (index, changes) = self.share(key, |informers, subscribers| {
            let index = SharedIndex::<I>::default();
            let (api, name, gate) = informers.watch_of::<PartialObjectMeta<K>>(&config);
            let synced = index.clone();
            NewInformer {
                shared: index.clone(),
                name,
                driver: Box::pin(index::drive_index(api, config, trim, index, subscribers, gate)),
                synced: Box::pin(async move { synced.wait_until_ready().await }),
            }
        });
        IndexSubscription::new(index, changes)
    }

    /// Joins the informer registered under `key`, or registers the one `start` makes (fed to the
    /// subscribers it is handed). Returns what its subscribers share and this one's changes.
    fn share<S, T>(
        &mut self,
        key: (TypeId, String),
        start: impl FnOnce(&Self, Subscribers<T>) -> NewInformer<S>,
    ) -> (S, mpsc::Receiver<Arc<T>>)
    where
        S: Clone + Send + 'static,
        T: Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        if let Some(entry) = self.entries.get(&key).and_then(|e| e.downcast_ref::<Entry<S, T>>()) {
            lock(&entry.subscribers).push(tx);
            return (entry.shared.clone(), rx);
        }
        let subscribers: Subscribers<T> = Arc::new(Mutex::new(vec![tx]));
        let informer = start(self, subscribers.clone());
        self.drivers.push((informer.name, informer.driver));
        self.synced.push(informer.synced);
        self.entries.insert(
            key,
            Box::new(Entry {
                shared: informer.shared.clone(),
                subscribers,
            }),
        );
        (informer.shared, rx)
    }

    /// The API a new informer of `K` watches (the manager's scope), its name, and its readiness gate.
    fn watch_of<K: Informable>(&self, config: &watcher::Config) -> (Api<K>, String, Gate) {
        let api = match &self.namespace {
            Some(ns) => Api::<K>::namespaced(self.client.clone(), ns),
            None => Api::<K>::all(self.client.clone()),
        };
        let name = kind_name::<K>(config);
        let gate = self.readiness.gate(format!("informer {name}"));
        (api, name, gate)
    }

    /// The watches to run, one per registered kind and selector. Controllers must not reconcile
    /// before `synced`: a reconcile that reads a half-filled cache (a Pod not listed yet) would
    /// write a wrong status.
    pub fn start(self) -> Started {
        Started {
            drivers: self.drivers,
            synced: Box::pin(futures::future::join_all(self.synced).map(|_| ())),
        }
    }
}

fn kind_name<K: Informable>(config: &watcher::Config) -> String {
    match &config.label_selector {
        Some(selector) => format!("{}/{} ({selector})", K::group(&()), K::plural(&())),
        None => format!("{}/{}", K::group(&()), K::plural(&())),
    }
}
