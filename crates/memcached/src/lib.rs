//! Memcached: keeps an owned Deployment of `spec.size` memcached Pods and reports their names.

mod build;
mod crd;
mod pod_index;
mod quantity;
mod reconcile;
mod status;

pub use build::{MEMCACHED_UID, SpecError, build_deployment, build_headless_service, validate};
pub use crd::{
    DEFAULT_IMAGE, DEFAULT_MEMORY_MB, DEFAULT_PORT, MAX_SIZE, Memcached, MemcachedSpec, MemcachedStatus,
    NAME_MAX_LENGTH, NAME_PATTERN, QUANTITY_PATTERN, crd,
};
pub use pod_index::PodsByInstance;
pub use reconcile::{Error, MemcachedReconciler};
pub use status::{AVAILABLE, DEGRADED, OWN_CONDITIONS, Observed, PROGRESSING, build_status};

use capstan_runtime::{ControllerDef, Informers, labels};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Service},
};
use kube::{
    core::PartialObjectMeta,
    runtime::{Controller, reflector::ObjectRef, watcher},
};

/// The Memcached controller: Memcached objects, the Deployments capstan manages for them, and
/// their Pods (metadata only).
pub fn controller(informers: &mut Informers) -> ControllerDef<MemcachedReconciler> {
    let memcacheds = informers.subscribe::<Memcached>();
    // Every Deployment in scope is cached, not only capstan's: a same-named foreign one must be
    // seen to be refused, and a cache answers that without a read per new object.
    let deployments = informers.subscribe::<Deployment>();
    // Only capstan's Services: a deleted one is recreated; nobody else's is cached.
    let services = informers.subscribe_with::<Service>(watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGER
    )));
    let pods = informers.subscribe::<PartialObjectMeta<Pod>>();
    let pod_index = PodsByInstance::default();
    let (indexed, pod_store) = (pod_index.clone(), pods.store());
    let pod_changes = pods.into_stream().inspect(move |pod| indexed.observe(pod, &pod_store));
    let reconciler = MemcachedReconciler::new(deployments.store(), services.store(), pod_index);
    let store = memcacheds.store();
    let controller = Controller::for_shared_stream(memcacheds.into_stream(), store)
        .owns_shared_stream(deployments.into_stream())
        .owns_shared_stream(services.into_stream())
        .watches_shared_stream(pod_changes, |pod| owner_of_pod(&pod));
    ControllerDef { controller, reconciler }
}

/// The Memcached a Pod belongs to, read from the labels its Deployment's template gives it.
fn owner_of_pod(pod: &PartialObjectMeta<Pod>) -> Option<ObjectRef<Memcached>> {
    let (namespace, instance) = pod_index::instance_of(pod)?;
    Some(ObjectRef::new(&instance).within(&namespace))
}
