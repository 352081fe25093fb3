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
    runtime::{Controller, reflector::ObjectRef},
};

/// The Memcached controller: Memcached objects, the Deployments capstan manages for them, and
/// their Pods (metadata only).
pub fn controller(informers: &mut Informers) -> ControllerDef<MemcachedReconciler> {
    let memcacheds = informers.subscribe::<Memcached>();
    // Every Deployment in scope is cached, not only capstan's: a same-named foreign one must be
    // seen to be refused, and a cache answers that without a read per new object.
    let deployments = informers.subscribe::<Deployment>();
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
