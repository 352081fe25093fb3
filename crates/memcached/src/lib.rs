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

use capstan_runtime::{ControllerEntry, Watches, labels};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Service},
};
use kube::{
    core::PartialObjectMeta,
    runtime::{reflector::ObjectRef, watcher},
};

/// The Memcached controller's line in a manager's controller table.
pub const CONTROLLER: ControllerEntry = ControllerEntry {
    name: "memcached",
    crds: || vec![crd()],
    add: |manager| manager.add(controller),
};

/// Memcacheds, their Deployments and headless Services, and their Pods (metadata only,
/// capstan-labelled ones), indexed by owner so a reconcile reads its own Pods only.
pub fn controller(w: &mut Watches<'_, Memcached>) -> MemcachedReconciler {
    let deployments = w.owns::<Deployment>();
    let services = w.owns::<Service>();
    let pods = w.index::<Pod, PodsByInstance>(
        watcher::Config::default().labels(&labels::managed_selector(build::APP)),
        pod_index::trim_pod,
    );
    let pod_index = pods.index();
    w.watches(pods.into_stream(), |pod| owner_of_pod(&pod));
    MemcachedReconciler::new(deployments, services, pod_index)
}

/// The Memcached a Pod belongs to, read from the labels its Deployment's template gives it.
fn owner_of_pod(pod: &PartialObjectMeta<Pod>) -> Option<ObjectRef<Memcached>> {
    let (namespace, instance) = pod_index::instance_of(&pod.metadata)?;
    Some(ObjectRef::new(&instance).within(&namespace))
}
