//! Memcached: keeps an owned Deployment of `spec.size` memcached Pods and reports their names.

mod build;
mod crd;
mod reconcile;

pub use build::{
    AVAILABLE, DEGRADED, MEMCACHED_UID, Observed, PROGRESSING, SpecError, build_deployment, build_status, validate,
};
pub use crd::{DEFAULT_IMAGE, DEFAULT_MEMORY_MB, DEFAULT_PORT, MAX_SIZE, Memcached, MemcachedSpec, MemcachedStatus};
pub use reconcile::{Error, MemcachedReconciler};

use capstan_runtime::{ControllerDef, Informers, labels};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    ResourceExt,
    core::PartialObjectMeta,
    runtime::{Controller, reflector::ObjectRef, watcher},
};

/// The Memcached controller: Memcached objects, the Deployments capstan manages for them, and
/// their Pods (metadata only).
pub fn controller(informers: &mut Informers) -> ControllerDef<MemcachedReconciler> {
    let memcacheds = informers.subscribe::<Memcached>();
    // Only capstan's own Deployments are cached; a same-named foreign one is found by a direct
    // read when the cache has none, which happens once per object, not on every reconcile.
    let deployments = informers
        .subscribe_with::<Deployment>(watcher::Config::default().labels(&labels::managed_selector(build::APP)));
    let pods = informers.subscribe::<PartialObjectMeta<Pod>>();
    let reconciler = MemcachedReconciler::new(deployments.store(), pods.store());
    let store = memcacheds.store();
    let controller = Controller::for_shared_stream(memcacheds.into_stream(), store)
        .owns_shared_stream(deployments.into_stream())
        .watches_shared_stream(pods.into_stream(), |pod| owner_of_pod(&pod));
    ControllerDef { controller, reconciler }
}

/// The Memcached a Pod belongs to, read from the labels its Deployment's template gives it.
fn owner_of_pod(pod: &PartialObjectMeta<Pod>) -> Option<ObjectRef<Memcached>> {
    let labels = pod.labels();
    if labels.get(labels::NAME).map(String::as_str) != Some(build::APP) {
        return None;
    }
    let instance = labels.get(labels::INSTANCE)?;
    Some(ObjectRef::new(instance).within(&pod.namespace()?))
}
