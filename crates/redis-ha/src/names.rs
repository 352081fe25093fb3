//! The names and labels of everything a RedisHA owns, in one place: the builders, the renderers,
//! the reconcile, the healer and the tests all find a child by these.
use std::collections::BTreeMap;

use capstan_runtime::labels::{COMPONENT, selector_labels, standard_labels};

/// `app.kubernetes.io/name` of everything the RedisHA controller creates.
pub const APP: &str = "redis-ha";
pub const COMPONENT_REDIS: &str = "redis";
pub const COMPONENT_SENTINEL: &str = "sentinel";
/// The label the healer keeps on each Redis Pod; the master and replicas Services select it.
pub const ROLE_LABEL: &str = "redis.capstan.dev/role";
pub const ROLE_MASTER: &str = "master";
pub const ROLE_REPLICA: &str = "replica";
/// Pod template annotations whose change rolls the Pods (in the order the operator chooses).
pub const CONFIG_HASH_ANNOTATION: &str = "redis.capstan.dev/config-hash";
pub const AUTH_HASH_ANNOTATION: &str = "redis.capstan.dev/auth-hash";

/// The Redis StatefulSet's serviceName, which gives each Redis Pod its stable FQDN.
pub fn headless_service(name: &str) -> String {
    format!("{name}-headless")
}
/// The Sentinel StatefulSet's serviceName.
pub fn sentinel_headless_service(name: &str) -> String {
    format!("{name}-sentinel-headless")
}
/// The Sentinel StatefulSet (the Redis StatefulSet is named like the RedisHA).
pub fn sentinel_set(name: &str) -> String {
    format!("{name}-sentinel")
}

/// `<pod>.<service>.<namespace>.svc.<cluster domain>`.
pub fn pod_fqdn(pod: &str, service: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("{pod}.{service}.{namespace}.svc.{cluster_domain}")
}

/// A configuration ConfigMap is named by its content's hash and immutable: the kubelet updates a mounted ConfigMap in
/// place, so under one name for every revision a Pod restarting for any reason (the master
/// included) would load a new configuration before the ordered roll reached it.
pub fn redis_config_map_name(name: &str, config_hash: &str) -> String {
    format!("{name}-config-{}", short_hash(config_hash))
}
pub fn sentinel_config_map_name(name: &str, config_hash: &str) -> String {
    format!("{name}-sentinel-config-{}", short_hash(config_hash))
}
fn short_hash(hash: &str) -> &str {
    hash.get(..10).unwrap_or(hash)
}

/// The mutable record Pods read at start (the Redis count, the last verified master).
pub fn bootstrap_config_map_name(name: &str) -> String {
    format!("{name}-bootstrap")
}
/// The Services selecting the Redis Pods by the role the healer labelled.
pub fn master_service_name(name: &str) -> String {
    format!("{name}-master")
}
pub fn replicas_service_name(name: &str) -> String {
    format!("{name}-replicas")
}
/// The Sentinel Service clients ask (`status.sentinel.service`).
pub fn sentinel_service_name(name: &str) -> String {
    sentinel_set(name)
}

/// Labels selecting one component's Pods: stable, so safe in a StatefulSet's immutable selector,
/// and distinct per component so the two sets never select each other's Pods.
pub fn component_selector(name: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(APP, name);
    labels.insert(COMPONENT.to_owned(), component.to_owned());
    labels
}

/// The labels every object of one component carries.
pub(crate) fn component_labels(name: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = standard_labels(APP, name);
    labels.insert(COMPONENT.to_owned(), component.to_owned());
    labels
}
