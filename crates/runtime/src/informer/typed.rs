//! The informer of a typed cache: kube's reflector store, every change fanned out to the
//! subscribers.
use futures::{Stream, StreamExt};
use kube::{
    Api,
    runtime::{
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};
use std::{collections::HashSet, sync::Arc};
use tokio::sync::mpsc;

use super::watch::{Informable, Subscribers, events, send};
use crate::{lock, process::readiness::Gate};

/// A controller's view of one shared informer: the cache, and a stream of changed objects.
pub struct Subscription<K: Informable> {
    store: Store<K>,
    changes: mpsc::Receiver<Arc<K>>,
}

impl<K: Informable> Subscription<K> {
    pub(super) fn new(store: Store<K>, changes: mpsc::Receiver<Arc<K>>) -> Self {
        Self { store, changes }
    }

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

pub(super) async fn drive<K: Informable>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    mut writer: Writer<K>,
    subscribers: Subscribers<K>,
    gate: Gate,
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
