//! One watch and one cache per kind, shared by every controller that needs that kind.
//!
//! kube's own shared streams (`reflect_shared`) forward only applied objects, so a controller
//! built on them never hears that a Pod or an owned Deployment was deleted. These informers fan
//! out every change — applied and deleted objects, and after a re-list the objects that vanished
//! while the watch was down — to each subscriber over a bounded channel (back-pressure, never a
//! dropped trigger).
use futures::{FutureExt, Stream, StreamExt, future::BoxFuture};
use kube::{
    Api, Client, Resource,
    core::{NamespaceResourceScope, PartialObjectMeta, PartialObjectMetaExt},
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, Store, store::Writer},
        utils::Backoff,
        watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use std::{
    any::{Any, TypeId},
    collections::{HashMap, HashSet},
    fmt::Debug,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::mpsc;

use crate::{
    child_cache::{self, ChildCache},
    lock,
    meta_index::{self, IndexSubscription, MetadataIndex, SharedIndex},
    readiness::Readiness,
};

/// How many changes a subscriber may lag behind before the informer waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

/// Kinds an informer can watch: namespaced, statically typed Kubernetes objects.
pub trait Informable:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Informable for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// A controller's view of one shared informer: the cache, and a stream of changed objects.
pub struct Subscription<K: Informable> {
    store: Store<K>,
    changes: mpsc::Receiver<Arc<K>>,
}

impl<K: Informable> Subscription<K> {
    /// The shared cache; complete once the informer has listed everything.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object that was created, changed or deleted (a deleted object arrives as last seen).
    pub fn into_stream(self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        futures::stream::unfold(
            self.changes,
            |mut rx| async move { rx.recv().await.map(|obj| (obj, rx)) },
        )
    }
}

pub(crate) type Subscribers<K> = Arc<Mutex<Vec<mpsc::Sender<Arc<K>>>>>;

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
                driver: Box::pin(drive(api, config, trim, writer, subscribers, gate)),
                synced: Box::pin(async move {
                    // The writer lives as long as its driver; a dropped writer means shutdown anyway.
                    let _ = synced.wait_until_ready().await;
                }),
            }
        });
        Subscription { store, changes }
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
                driver: Box::pin(drive_children(api, config, cache, subscribers, gate)),
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
                driver: Box::pin(meta_index::drive_index(api, config, trim, index, subscribers, gate)),
                synced: Box::pin(async move { synced.wait_until_ready().await }),
            }
        });
        IndexSubscription { index, changes }
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
    fn watch_of<K: Informable>(&self, config: &watcher::Config) -> (Api<K>, String, crate::readiness::Gate) {
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

async fn drive<K: Informable>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    mut writer: Writer<K>,
    subscribers: Subscribers<K>,
    gate: crate::readiness::Gate,
) {
    let store = writer.as_reader();
    let mut events = std::pin::pin!(events(api, config, trim));
    let mut before_relist: Vec<Arc<K>> = Vec::new();
    while let Some(event) = events.next().await {
        if matches!(event, watcher::Event::Init) {
            before_relist = store.state();
        }
        writer.apply_watcher_event(&event);
        let changed: Vec<Arc<K>> = match event {
            watcher::Event::Apply(obj) => store.get(&ObjectRef::from_obj(&obj)).into_iter().collect(),
            watcher::Event::Delete(obj) => vec![Arc::new(obj)],
            watcher::Event::InitDone => {
                gate.ready();
                let now = store.state();
                let present: HashSet<ObjectRef<K>> = now.iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect();
                let vanished = std::mem::take(&mut before_relist)
                    .into_iter()
                    .filter(|o| !present.contains(&ObjectRef::from_obj(o.as_ref())));
                now.into_iter().chain(vanished).collect()
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => Vec::new(),
        };
        if changed.is_empty() {
            continue;
        }
        let senders: Vec<_> = lock(&subscribers).clone();
        for obj in changed {
            send(&senders, obj).await;
        }
    }
}

/// [`drive`] for a [`ChildCache`]: the same events, stored as JSON. After a list every child is
/// handed out decoded one at a time, so a relist never holds all of them decoded at once.
async fn drive_children<C: Informable + Serialize>(
    api: Api<C>,
    config: watcher::Config,
    cache: ChildCache<C>,
    subscribers: Subscribers<PartialObjectMeta<C>>,
    gate: crate::readiness::Gate,
) {
    let mut events = std::pin::pin!(events(api, config, |_| {}));
    let mut listing = None;
    while let Some(event) = events.next().await {
        let senders: Vec<_> = lock(&subscribers).clone();
        match event {
            watcher::Event::Init => listing = Some(child_cache::listing()),
            watcher::Event::InitApply(obj) => {
                child_cache::list_insert(listing.get_or_insert_with(child_cache::listing), &obj);
            }
            watcher::Event::InitDone => {
                let vanished = cache.replace(listing.take().unwrap_or_default());
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

/// The watch behind an informer: retried with [`WatchBackoff`], each object trimmed before anyone
/// sees it, failures logged and skipped (the watcher itself re-lists after them).
pub(crate) fn events<K: Informable>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> impl Stream<Item = watcher::Event<K>> + Send {
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .modify(move |obj: &mut K| {
            // Managed fields are most of an object's size and no controller reads them.
            obj.meta_mut().managed_fields = None;
            trim(obj);
        })
        .filter_map(|event| async move {
            event
                .inspect_err(
                    |error| tracing::warn!(%error, kind = %K::kind(&()), "watch failed; retrying with backoff"),
                )
                .ok()
        })
}

fn metadata_of<C: Informable>(obj: &C) -> Arc<PartialObjectMeta<C>> {
    Arc::new(obj.meta().clone().into_request_partial::<C>())
}

pub(crate) async fn send<K>(senders: &[mpsc::Sender<Arc<K>>], obj: Arc<K>) {
    for sender in senders {
        // A closed receiver is a controller that has stopped; the others still listen.
        let _ = sender.send(obj.clone()).await;
    }
}

/// Retry delays for a failed watch: 250 ms doubling to 5 s, with jitter. kube's default climbs to
/// 30 s, which after a 20 s apiserver outage leaves a manager deaf for up to half a minute more.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchBackoff {
    failures: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = Duration::from_millis(250)
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(Duration::from_secs(5));
        self.failures = self.failures.saturating_add(1);
        // Up to 25 % jitter so that many watches do not retry in lockstep.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Some(base + base.mul_f64(f64::from(nanos % 1000) / 4000.0))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A cache that fills from an in-memory list, for unit tests of mappers and builders (feature
/// `testing`, for dev-dependencies only).
#[cfg(any(test, feature = "testing"))]
pub fn store_from<K: Informable>(objects: impl IntoIterator<Item = K>) -> Store<K> {
    let (reader, mut writer) = kube::runtime::reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for obj in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(obj));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_grows_to_five_seconds_and_resets() {
        let mut backoff = WatchBackoff::default();
        let first = backoff.next().expect("delay");
        assert!(
            first >= Duration::from_millis(250) && first <= Duration::from_millis(313),
            "{first:?}"
        );
        let late = backoff.by_ref().nth(10).expect("delay");
        assert!(
            late >= Duration::from_secs(5) && late <= Duration::from_millis(6250),
            "{late:?}"
        );
        backoff.reset();
        assert!(backoff.next().expect("delay") < Duration::from_millis(313));
    }
}
