//! Memcached: keeps an owned Deployment of `spec.size` memcached Pods and reports their names.

mod build;
mod crd;
mod reconcile;

pub use build::{
    AVAILABLE, DEGRADED, MEMCACHED_UID, Observed, PROGRESSING, SpecError, build_deployment, build_status, validate,
};
pub use crd::{DEFAULT_IMAGE, DEFAULT_MEMORY_MB, DEFAULT_PORT, MAX_SIZE, Memcached, MemcachedSpec, MemcachedStatus};
pub use reconcile::{Error, MemcachedReconciler};

use capstan_runtime::{ControllerEntry, Watches, labels};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    CustomResourceExt, ResourceExt,
    core::PartialObjectMeta,
    runtime::{reflector::ObjectRef, watcher},
};

/// The Memcached controller's line in a manager's controller table.
pub const CONTROLLER: ControllerEntry = ControllerEntry {
    name: "memcached",
    crds: || vec![Memcached::crd()],
    add: |manager| manager.add(controller),
};

/// Memcacheds, their Deployments, and their Pods (metadata only, capstan-labelled ones).
pub fn controller(w: &mut Watches<'_, Memcached>) -> MemcachedReconciler {
    let deployments = w.owns::<Deployment>();
    let pods =
        w.subscribe::<PartialObjectMeta<Pod>>(watcher::Config::default().labels(&labels::managed_selector(build::APP)));
    let pod_store = pods.store();
    w.watches(pods.into_stream(), |pod| owner_of_pod(&pod));
    MemcachedReconciler::new(deployments, pod_store)
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
