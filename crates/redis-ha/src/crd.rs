//! The `RedisHA` custom resource: Redis with Sentinel failover.
use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::ResourceRequirements,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSONSchemaProps},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Redis image when `spec.image` is not set: pinned, so a manager upgrade does not roll every
/// Redis by surprise. 7.0 because the local node runs Debian's 7.0.15 and nothing may need newer.
pub const DEFAULT_IMAGE: &str = "redis:7.0.15";
pub const DEFAULT_REPLICAS: i32 = 3;
pub const MAX_REPLICAS: i32 = 9;
pub const DEFAULT_SENTINELS: i32 = 3;
pub const MAX_SENTINELS: i32 = 9;
pub const DEFAULT_AUTH_KEY: &str = "password";
/// The longest RedisHA name whose children all stay valid: the Sentinel StatefulSet
/// `<name>-sentinel` must leave room for the `-<10 char hash>` of its Pods'
/// `controller-revision-hash` label (≤ 63), i.e. a StatefulSet name of at most 52.
pub const MAX_NAME_LENGTH: i64 = 52 - "-sentinel".len() as i64;

/// Condition types besides `Ready`.
pub const DEGRADED: &str = "Degraded";
/// True while a Sentinel reports a failover in progress; the operator does not act meanwhile.
pub const FAILOVER_IN_PROGRESS: &str = "FailoverInProgress";

/// Redis with Sentinel failover: a Redis StatefulSet (one master, the rest replicas), a Sentinel
/// StatefulSet and an operator that heals what Sentinel alone does not.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cache.capstan.dev",
    version = "v1alpha1",
    kind = "RedisHA",
    plural = "redishas",
    namespaced,
    status = "RedisHAStatus",
    category = "capstan",
    printcolumn = r#"{"name":"Master","type":"string","jsonPath":".status.master"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RedisHASpec {
    /// Redis Pods in total, master included (1 to 9). One instance has no failover.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Container image running Redis and Sentinel (a pinned Redis 7 tag).
    #[serde(default = "default_image")]
    #[schemars(length(min = 1), regex(pattern = r"^[^\s]+$"))]
    pub image: String,
    /// The Sentinels watching the Redis Pods.
    #[serde(default)]
    pub sentinel: SentinelSpec,
    /// A PersistentVolumeClaim per Redis Pod; an emptyDir when absent. Claims are kept when the
    /// RedisHA is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// The Secret holding the password that Redis and the Sentinels require of every client
    /// (and of each other: `masterauth`, Sentinel's `auth-pass` and `sentinel-pass`). No password
    /// when absent. Changing the Secret rotates it live; removing `auth` from a running set is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Compute resources of the Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra redis.conf directives, name → value (e.g. `maxmemory: 100mb`). Directives the operator
    /// sets itself (bind, port, replicaof, dir, requirepass, …) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentinelSpec {
    /// Sentinel Pods (1 to 9; 3 or 5 for a quorum that survives one or two losses).
    #[serde(default = "default_sentinels")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Sentinels that must agree the master is down before a failover; a majority when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub quorum: Option<i32>,
}

impl Default for SentinelSpec {
    fn default() -> Self {
        Self {
            replicas: DEFAULT_SENTINELS,
            quorum: None,
        }
    }
}

impl SentinelSpec {
    /// The quorum in force: the one set, or a majority of the Sentinels.
    pub fn effective_quorum(&self) -> i32 {
        self.quorum.unwrap_or(self.replicas / 2 + 1)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of each Redis Pod's claim, e.g. `1Gi`.
    pub size: Quantity,
    /// StorageClass of the claims; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Name of a Secret in the RedisHA's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the password in that Secret. The password is one line without spaces, quotes or
    /// backslashes (Sentinel keeps it unquoted in its config file).
    #[serde(default = "default_auth_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}
fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}
fn default_sentinels() -> i32 {
    DEFAULT_SENTINELS
}
fn default_auth_key() -> String {
    DEFAULT_AUTH_KEY.to_owned()
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisHAStatus {
    /// The Redis Pod that is master, as the operator last verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Redis Pods that are ready (the master, and replicas linked and in sync).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Sentinel Pods that are ready.
    #[serde(default)]
    pub sentinels_ready: i32,
    /// Where Sentinel-aware clients ask for the master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelEndpoint>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the operator last saw the master change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover_time: Option<Time>,
    /// `Ready`, `Degraded` and `FailoverInProgress`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentinelEndpoint {
    /// The Sentinel Service, `<name>-sentinel` (port 26379).
    pub service: String,
    /// The master-set name to ask the Sentinels for: the RedisHA's name.
    pub master_name: String,
}

/// A DNS-1035 label: what every child name needs (a Service's name may not start with a digit
/// nor hold a dot), so `1cache` or `a.b` is refused at once instead of by the first Service.
pub const NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// A resource quantity (`1Gi`, `500m`, `2`), as Kubernetes parses it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Quantities are int-or-string in the schema kube derives, so any string passes and the
/// StatefulSet or claim built from it fails later with a 422; this gives each the pattern (which
/// applies to the string form only, as in kubebuilder's CRDs).
fn pattern_quantities(schema: &mut JSONSchemaProps) {
    if schema.x_kubernetes_int_or_string == Some(true) {
        schema.pattern = Some(QUANTITY_PATTERN.to_owned());
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        pattern_quantities(child);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(
        child,
    )) = schema.additional_properties.as_mut()
    {
        pattern_quantities(child);
    }
}

/// The CRD as installed: kube's generated one plus a `metadata.name` length limit and DNS-1035
/// pattern (allowed in a structural schema, unlike other metadata constraints), so a name unfit
/// for the children's names and labels is refused by the apiserver rather than failing later,
/// and a pattern on every quantity.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = RedisHA::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
                pattern_quantities(spec);
            }
            let name = JSONSchemaProps {
                type_: Some("string".into()),
                max_length: Some(MAX_NAME_LENGTH),
                pattern: Some(NAME_PATTERN.to_owned()),
                ..Default::default()
            };
            let metadata = JSONSchemaProps {
                type_: Some("object".into()),
                properties: Some(BTreeMap::from([("name".to_owned(), name)])),
                ..Default::default()
            };
            schema
                .properties
                .get_or_insert_with(BTreeMap::new)
                .insert("metadata".into(), metadata);
        }
    }
    crd
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn schema() -> Value {
        let crd = crd();
        let version = &crd.spec.versions[0];
        serde_json::to_value(version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref())).expect("schema")
    }

    #[test]
    fn crd_names_group_version_and_plural_as_the_issue_fixes_them() {
        let crd = crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("redishas.cache.capstan.dev"));
        assert_eq!(crd.spec.group, "cache.capstan.dev");
        assert_eq!(crd.spec.names.kind, "RedisHA");
        assert_eq!(crd.spec.names.plural, "redishas");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "status subresource"
        );
        let columns: Vec<(&str, &str)> = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Master", ".status.master"),
                ("Ready", ".status.readyReplicas"),
                ("Age", ".metadata.creationTimestamp")
            ]
        );
    }

    #[test]
    fn schema_bounds_replicas_and_sentinels_and_refuses_long_names() {
        let schema = schema();
        let spec = &schema["properties"]["spec"]["properties"];
        assert_eq!(spec["replicas"]["minimum"], json!(1.0));
        assert_eq!(spec["replicas"]["maximum"], json!(9.0));
        assert_eq!(spec["replicas"]["default"], json!(3));
        let sentinel = &spec["sentinel"]["properties"];
        assert_eq!(sentinel["replicas"]["minimum"], json!(1.0));
        assert_eq!(sentinel["replicas"]["default"], json!(3));
        assert_eq!(sentinel["quorum"]["minimum"], json!(1.0));
        assert_eq!(spec["auth"]["properties"]["key"]["default"], json!("password"));
        assert_eq!(spec["auth"]["required"], json!(["secretName"]));
        assert_eq!(spec["storage"]["required"], json!(["size"]));
        assert_eq!(spec["config"]["additionalProperties"]["type"], json!("string"));
        assert_eq!(spec["image"]["default"], json!(DEFAULT_IMAGE));
        assert_eq!(spec["image"]["pattern"], json!(r"^[^\s]+$"));
        assert!(spec["resources"].is_object());
        assert_eq!(
            schema["properties"]["metadata"]["properties"]["name"]["maxLength"],
            json!(MAX_NAME_LENGTH)
        );
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], json!("map"));
        assert_eq!(
            schema["properties"]["metadata"]["properties"]["name"]["pattern"],
            json!(NAME_PATTERN)
        );
        assert_eq!(
            spec["storage"]["properties"]["size"]["pattern"],
            json!(QUANTITY_PATTERN)
        );
        for kind in ["limits", "requests"] {
            assert_eq!(
                spec["resources"]["properties"][kind]["additionalProperties"]["pattern"],
                json!(QUANTITY_PATTERN),
                "{kind}"
            );
        }
    }

    #[test]
    fn the_patterns_refuse_what_kubernetes_refuses() {
        // The regex crate reads these patterns as the apiserver's RE2 does.
        let name = regex::Regex::new(NAME_PATTERN).expect("name pattern");
        for good in ["cache", "a", "redis-ha-sample", "r2d2"] {
            assert!(name.is_match(good), "{good}");
        }
        for bad in ["1cache", "a.b", "Cache", "-a", "a-", ""] {
            assert!(!name.is_match(bad), "{bad}");
        }
        let quantity = regex::Regex::new(QUANTITY_PATTERN).expect("quantity pattern");
        for good in ["1Gi", "500m", "2", "1.5", "100M", "1e3", "0.5Ki"] {
            assert!(quantity.is_match(good), "{good}");
        }
        for bad in ["lots", "1 Gi", "1GB", "Gi", "1..5", ""] {
            assert!(!quantity.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn a_minimal_spec_gets_every_default() {
        let rha: RedisHA = serde_yaml::from_str(
            "apiVersion: cache.capstan.dev/v1alpha1\nkind: RedisHA\nmetadata: {name: cache}\nspec: {}\n",
        )
        .expect("valid");
        assert_eq!(rha.spec.replicas, 3);
        assert_eq!(rha.spec.image, DEFAULT_IMAGE);
        assert_eq!(rha.spec.sentinel, SentinelSpec::default());
        assert_eq!(rha.spec.sentinel.effective_quorum(), 2);
        assert_eq!(rha.spec.storage, None);
        assert_eq!(rha.spec.auth, None);
        assert!(rha.spec.config.is_empty());
        let auth: AuthSpec = serde_yaml::from_str("secretName: redis-auth").expect("auth");
        assert_eq!(auth.key, "password");
    }

    #[test]
    fn quorum_defaults_to_a_majority_of_the_sentinels() {
        let quorum = |replicas, quorum| SentinelSpec { replicas, quorum }.effective_quorum();
        assert_eq!(quorum(1, None), 1);
        assert_eq!(quorum(3, None), 2);
        assert_eq!(quorum(4, None), 3);
        assert_eq!(quorum(5, None), 3);
        assert_eq!(quorum(5, Some(2)), 2);
    }

    #[test]
    fn the_longest_allowed_name_fits_every_child_name_and_label() {
        let name = "r".repeat(MAX_NAME_LENGTH as usize);
        let sentinel_set = format!("{name}-sentinel");
        assert!(sentinel_set.len() + "-0123456789".len() <= 63);
        assert!(format!("{name}-sentinel-headless").len() <= 63);
    }
}
