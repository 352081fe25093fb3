//! RedisHA: Redis with Sentinel failover. The CRD, the rendered Redis/Sentinel configuration and
//! scripts, the desired objects, the healer's decisions and the Redis/Sentinel I/O they act
//! through are pure or runtime-free modules; [`controller`] wires them into the runtime.
mod build;
pub mod config;
pub mod crd;
pub(crate) mod healer;
pub mod names;
pub mod reconcile;
pub mod render;
pub mod shared;
#[cfg(feature = "testing")]
pub mod testing;

pub use build::{Children, Inputs as ChildInputs, REDIS_UID};
pub use crd::{AuthSpec, RedisHA, RedisHASpec, RedisHAStatus, SentinelEndpoint, SentinelSpec, StorageSpec};
pub use reconcile::{Desired, Error, FAILOVER_CAPABLE, Health, Inputs, RedisHAReconciler, SpecError, desired};

use capstan_runtime::{ControllerEntry, Watches, labels};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Service},
};
use kube::runtime::{reflector::ObjectRef, watcher};

/// The RedisHA controller's line in a manager's controller table.
pub const CONTROLLER: ControllerEntry = ControllerEntry {
    name: "redis-ha",
    crds: || vec![crd::crd()],
    add: |manager| manager.add(controller),
};

/// RedisHAs, their StatefulSets, Services, ConfigMaps and PodDisruptionBudgets (in the version
/// the cluster serves), their Pods (trimmed to what the healer reads: labels, IP, readiness; a
/// role label change must wake the reconcile), and the healer task.
pub fn controller(w: &mut Watches<'_, RedisHA>) -> RedisHAReconciler {
    let stateful_sets = w.owns::<StatefulSet>();
    let services = w.owns::<Service>();
    let config_maps = w.owns::<ConfigMap>();
    let budgets = reconcile::BudgetCache::owned(w);
    let pods = w.subscribe_trimmed::<Pod>(
        watcher::Config::default().labels(&labels::managed_selector(names::APP)),
        healer::members::trim_pod,
    );
    let pod_store = pods.store();
    let shared = shared::Shared::new(w.args().cluster_domain.clone());
    let wake = shared.clone();
    w.watches(pods.into_stream(), move |pod| {
        // A Redis or Sentinel Pod that changed (deleted, restarted, unready) may mean a failover:
        // the healer looks now rather than at its next tick.
        wake.wake_healer();
        owner_of_pod(&pod)
    });
    let trigger = w.trigger();
    let healer = healer::Healer {
        redis_has: w.store(),
        pods: pod_store.clone(),
        stateful_sets: stateful_sets.clone(),
        shared: shared.clone(),
        trigger,
    };
    w.background("redis-ha-healer", move |task| healer.clone().run(task));
    RedisHAReconciler::new(stateful_sets, services, config_maps, budgets, pod_store, shared)
}

/// The RedisHA a Pod belongs to, from the labels its StatefulSet's template gives it.
fn owner_of_pod(pod: &Pod) -> Option<ObjectRef<RedisHA>> {
    let pod_labels = pod.metadata.labels.as_ref()?;
    if pod_labels.get(labels::NAME).map(String::as_str) != Some(names::APP) {
        return None;
    }
    let instance = pod_labels.get(labels::INSTANCE)?;
    Some(ObjectRef::new(instance).within(pod.metadata.namespace.as_deref()?))
}
