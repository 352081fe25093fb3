use k8s_openapi::{
    api::core::v1::ResourceRequirements,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrBool,
    },
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The memcached image when `spec.image` is not set: pinned, so a manager upgrade does not roll
/// every cache by surprise.
pub const DEFAULT_IMAGE: &str = "memcached:1.6.38";
pub const DEFAULT_PORT: i32 = 11211;
pub const DEFAULT_MEMORY_MB: i32 = 64;
pub const MAX_SIZE: i32 = 100;
/// A Memcached's name is the `app.kubernetes.io/instance` label value of everything it owns (at
/// most 63 characters) and the name of its headless Service (a DNS-1035 label).
pub const NAME_MAX_LENGTH: usize = 63;
pub const NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// The grammar of a Kubernetes quantity (`resource.Quantity`), as controller-gen writes it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A memcached cluster: an owned Deployment of `size` memcached Pods.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cache.capstan.dev",
    version = "v1alpha1",
    kind = "Memcached",
    namespaced,
    status = "MemcachedStatus",
    category = "capstan",
    shortname = "mc",
    // `kubectl scale memcached/<name> --replicas=N`, and what an HorizontalPodAutoscaler drives.
    scale(
        spec_replicas_path = ".spec.size",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
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
    /// Container image running memcached (no whitespace).
    #[serde(default = "default_image")]
    #[schemars(length(min = 1), regex(pattern = r"^\S+$"))]
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
    /// Seconds a rollout may go without progress before the Memcached reports
    /// `Degraded=True/ProgressDeadlineExceeded` (the Deployment's `progressDeadlineSeconds`;
    /// Kubernetes' default, 600, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i32>,
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
    /// Memcached Pods that exist and are not terminating, ready or not: the length of `nodes`
    /// (the scale subresource's current count).
    #[serde(default)]
    pub replicas: i32,
    /// The label selector of the memcached Pods, for the scale subresource (an autoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`, `Progressing`, `Degraded` and `Ready`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The Memcached CRD as installed: the derived one, plus what a derive cannot express. The name
/// is bounded by the schema (v1.20 ignores CEL, but `metadata.name` may carry `maxLength` and
/// `pattern` in a structural schema), and resource quantities must be well-formed strings.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = Memcached::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) else {
            continue;
        };
        let name = JSONSchemaProps {
            type_: Some("string".into()),
            max_length: Some(NAME_MAX_LENGTH as i64),
            pattern: Some(NAME_PATTERN.into()),
            ..Default::default()
        };
        let metadata = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some([("name".to_owned(), name)].into()),
            ..Default::default()
        };
        schema
            .properties
            .get_or_insert_with(Default::default)
            .insert("metadata".into(), metadata);
        let resources = schema
            .properties
            .as_mut()
            .and_then(|p| p.get_mut("spec"))
            .and_then(|spec| spec.properties.as_mut())
            .and_then(|p| p.get_mut("resources"))
            .and_then(|r| r.properties.as_mut());
        for list in resources.into_iter().flat_map(|p| p.values_mut()) {
            // Quantities are strings here, not int-or-string: kube-apiserver 1.20 cannot build
            // its server-side-apply type for a schema with int-or-string map values and then
            // treats every list of the object as atomic, so a status apply would drop the
            // conditions other field managers own.
            if let Some(JSONSchemaPropsOrBool::Schema(quantity)) = list.additional_properties.as_mut()
                && quantity.x_kubernetes_int_or_string == Some(true)
            {
                quantity.x_kubernetes_int_or_string = None;
                quantity.type_ = Some("string".into());
                quantity.pattern = Some(QUANTITY_PATTERN.into());
            }
        }
    }
    crd
}
