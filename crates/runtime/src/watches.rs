//! What a controller declares it watches: its own kind, the children it owns, other streams that
//! wake it, and background tasks. A kind crate fills a [`Watches`] in its `controller` function
//! and returns its reconciler; the runtime assembles kube's `Controller` from it.
//!
//! ```text
//! pub fn controller(w: &mut Watches<'_, RedisHa>) -> RedisHaReconciler {
//!     let statefulsets = w.owns::<StatefulSet>();
//!     let services = w.owns::<Service>();
//!     let config_maps = w.owns::<ConfigMap>();
//!     let trigger = w.trigger();
//!     w.background("sentinel-listener", move |task| listen(task, trigger.clone()));
//!     RedisHaReconciler { statefulsets, services, config_maps }
//! }
//! ```
use futures::{Stream, StreamExt, stream::BoxStream};
use kube::{
    Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{reflector::ObjectRef, reflector::Store, watcher},
};
use std::{fmt::Display, future::Future, sync::Arc};
use tokio::sync::mpsc;

use serde::Serialize;

use crate::{
    ChildCache, RuntimeArgs, ServedApis,
    informer::{IndexSubscription, MetadataIndex},
    informer::{Informable, Informers, Subscription},
    labels,
    tasks::{BackgroundTask, TaskContext},
    write::children::OwnedKind,
};

/// The triggers and caches of one controller of `K`, filled by its kind crate.
pub struct Watches<'a, K: Informable> {
    informers: &'a mut Informers,
    args: &'a RuntimeArgs,
    served: &'a ServedApis,
    store: Store<K>,
    primary: BoxStream<'static, Arc<K>>,
    triggers: Vec<BoxStream<'static, ObjectRef<K>>>,
    tasks: Vec<BackgroundTask>,
    owned: Vec<Arc<dyn OwnedKind>>,
}

/// The label selector of every child cache: only objects capstan manages.
pub fn managed_by_capstan() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER))
}

impl<'a, K: Informable> Watches<'a, K> {
    pub(crate) fn new(informers: &'a mut Informers, args: &'a RuntimeArgs, served: &'a ServedApis) -> Self {
        let primary = informers.subscribe::<K>();
        Self {
            args,
            served,
            store: primary.store(),
            primary: primary.into_stream().boxed(),
            informers,
            triggers: Vec::new(),
            tasks: Vec::new(),
            owned: Vec::new(),
        }
    }

    /// The manager's arguments (e.g. `cluster_domain`), for settings a controller renders.
    pub fn args(&self) -> &RuntimeArgs {
        self.args
    }

    /// Whether the cluster serves `api_version` (`policy/v1`; `v1` for the core group), as read
    /// when the manager started: own the version of a kind the cluster has.
    pub fn serves(&self, api_version: &str) -> bool {
        self.served.serves(api_version)
    }

    /// The cache of `K` itself.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Children of kind `C` that a `K` controls. Only objects labelled
    /// `app.kubernetes.io/managed-by: capstan` are cached (apply them with [`Context::children`],
    /// which sets that label); a change to one wakes its controlling `K`.
    ///
    /// [`Context::children`]: crate::Context::children
    pub fn owns<C: Informable + Serialize>(&mut self) -> ChildCache<C> {
        let (cache, changes) = self.informers.subscribe_children::<C>(managed_by_capstan());
        let changes = futures::stream::unfold(changes, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        self.watches(changes, |child| controller_of::<K>(child.as_ref()));
        self.owned.push(Arc::new(cache.clone()));
        cache
    }

    /// A shared informer of `O` in the manager's scope (with `config`'s selectors), for a cache
    /// or a stream to pass to [`watches`](Self::watches). `PartialObjectMeta<O>` watches metadata only.
    pub fn subscribe<O: Informable>(&mut self, config: watcher::Config) -> Subscription<O> {
        self.informers.subscribe_with::<O>(config)
    }

    /// [`subscribe`](Self::subscribe), with `trim` applied to every object before it is cached
    /// and handed out: drop the fields a controller never reads (a Pod's spec) to keep memory
    /// proportional to what it uses.
    pub fn subscribe_trimmed<O: Informable>(&mut self, config: watcher::Config, trim: fn(&mut O)) -> Subscription<O> {
        self.informers.subscribe_trimmed::<O>(config, trim)
    }

    /// An index of `O`'s metadata in the manager's scope (with `config`'s selectors, each object
    /// trimmed by `trim`), kept in place of a cache: for a kind a controller only needs names or
    /// owners of ([`Names`](crate::Names) answers "does it exist"). Pass the subscription's
    /// stream to [`watches`](Self::watches) to be woken by changes.
    pub fn index<O: Informable, I: MetadataIndex>(
        &mut self,
        config: watcher::Config,
        trim: fn(&mut PartialObjectMeta<O>),
    ) -> IndexSubscription<O, I> {
        self.informers.subscribe_index::<O, I>(config, trim)
    }

    /// Reconciles the objects `mapper` names for each item of `stream`.
    pub fn watches<O, I>(
        &mut self,
        stream: impl Stream<Item = O> + Send + 'static,
        mapper: impl Fn(O) -> I + Send + 'static,
    ) where
        I: IntoIterator<Item = ObjectRef<K>>,
        I::IntoIter: Send + 'static,
    {
        self.triggers
            .push(stream.flat_map(move |item| futures::stream::iter(mapper(item))).boxed());
    }

    /// Calls `observe` with every changed `K` before it is queued (a deleted one arrives as last
    /// seen, already gone from [`store`](Self::store)): for indexes kept beside the cache.
    pub fn on_change(&mut self, observe: impl Fn(&Arc<K>) + Send + 'static) {
        let primary = std::mem::replace(&mut self.primary, futures::stream::empty().boxed());
        self.primary = primary.inspect(move |obj| observe(obj)).boxed();
    }

    /// A handle that queues a reconcile of a named `K`: for background tasks that learn about
    /// changes outside Kubernetes.
    pub fn trigger(&mut self) -> Trigger<K> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.triggers
            .push(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }).boxed());
        Trigger { tx }
    }

    /// A task the manager runs while it leads (restarted with backoff when it fails, stopped
    /// when leadership is lost or shutdown begins). `task` is called on each start.
    pub fn background<F, Fut, E>(&mut self, name: &str, task: F)
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        self.tasks.push(BackgroundTask::new(name, task));
    }

    pub(crate) fn into_parts(self) -> WatchedParts<K> {
        WatchedParts {
            store: self.store,
            primary: self.primary,
            triggers: self.triggers,
            tasks: self.tasks,
            owned: self.owned,
        }
    }
}

/// A [`Watches`] once declared.
pub struct WatchedParts<K: Informable> {
    pub(crate) store: Store<K>,
    pub(crate) primary: BoxStream<'static, Arc<K>>,
    pub(crate) triggers: Vec<BoxStream<'static, ObjectRef<K>>>,
    pub(crate) tasks: Vec<BackgroundTask>,
    pub(crate) owned: Vec<Arc<dyn OwnedKind>>,
}

/// Queues reconciles of `K` by reference; cheap to clone.
pub struct Trigger<K: Informable> {
    tx: mpsc::UnboundedSender<ObjectRef<K>>,
}

impl<K: Informable> Clone for Trigger<K> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<K: Informable> Trigger<K> {
    /// Queues a reconcile of `namespace/name`. After the controller stopped this does nothing.
    pub fn reconcile(&self, namespace: &str, name: &str) {
        let _ = self.tx.send(ObjectRef::new(name).within(namespace));
    }
}

/// The `K` that controls `child` (its controller owner reference of `K`'s kind and group).
pub fn controller_of<K: Resource<DynamicType = ()>>(child: &impl Resource) -> Option<ObjectRef<K>> {
    let namespace = child.namespace()?;
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == K::kind(&()) && r.api_version == K::api_version(&()))
        .map(|r| ObjectRef::new(&r.name).within(&namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::{apps::v1::Deployment, core::v1::ConfigMap},
        apimachinery::pkg::apis::meta::v1::OwnerReference,
    };
    use kube::api::ObjectMeta;

    fn owned_by(kind: &str, api_version: &str, controller: bool) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("child".into()),
                namespace: Some("ns".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    name: "parent".into(),
                    uid: "u".into(),
                    controller: Some(controller),
                    block_owner_deletion: None,
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_child_maps_to_its_controller_of_the_right_kind_only() {
        let owner = controller_of::<Deployment>(&owned_by("Deployment", "apps/v1", true)).expect("owner");
        assert_eq!(
            (owner.name.as_str(), owner.namespace.as_deref()),
            ("parent", Some("ns"))
        );
        assert!(controller_of::<Deployment>(&owned_by("Deployment", "apps/v1", false)).is_none());
        assert!(controller_of::<Deployment>(&owned_by("StatefulSet", "apps/v1", true)).is_none());
        assert!(controller_of::<Deployment>(&owned_by("Deployment", "extensions/v1beta1", true)).is_none());
    }

    #[test]
    fn child_caches_select_capstans_label() {
        assert_eq!(
            managed_by_capstan().label_selector.as_deref(),
            Some("app.kubernetes.io/managed-by=capstan")
        );
    }
}
