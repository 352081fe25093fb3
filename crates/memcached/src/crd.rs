use k8s_openapi::{api::core::v1::ResourceRequirements, apimachinery::pkg::apis::meta::v1::Condition};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The memcached image when `spec.image` is not set: pinned, so a manager upgrade does not roll
/// every cache by surprise.
pub const DEFAULT_IMAGE: &str = "memcached:1.6.38";
pub const DEFAULT_PORT: i32 = 11211;
pub const DEFAULT_MEMORY_MB: i32 = 64;
pub const MAX_SIZE: i32 = 100;

/// A memcached cluster: an owned Deployment of `size` memcached Pods.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cache.capstan.dev",
    version = "v1alpha1",
    kind = "Memcached",
    namespaced,
    status = "MemcachedStatus",
    category = "capstan",
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.size"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MemcachedSpec {
    /// Number of memcached Pods (0 to 100).
    #[schemars(range(min = 0, max = 100))]
    pub size: i32,
    /// Container image running memcached.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Port memcached listens on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    /// Memory for items in megabytes (memcached's `-m`).
    #[serde(default = "default_memory_mb", rename = "memoryMB")]
    #[schemars(range(min = 1, max = 1048576))]
    pub memory_mb: i32,
    /// Compute resources of the memcached container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}
fn default_port() -> i32 {
    DEFAULT_PORT
}
fn default_memory_mb() -> i32 {
    DEFAULT_MEMORY_MB
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemcachedStatus {
    /// Names of the memcached Pods, sorted.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Pods of the Deployment that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`, `Progressing`, `Degraded` and `Ready`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
