//! What a Pod's environment and volumes are made of, read from the apiserver (ConfigMaps, Secrets,
//! ServiceAccount tokens) or from the Pod object itself (`fieldRef`, `resourceFieldRef`). How the
//! values become variables or files is left to [`crate::container`] and [`crate::volumes`], so
//! neither needs the other.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, DownwardAPIVolumeFile, EnvFromSource, EnvVarSource, Pod, Secret, ServiceAccount},
    },
};
use kube::{Api, Client, api::PostParams};

/// A ConfigMap's `data` and `binaryData` as text; `None` when it is missing and `optional`.
pub async fn config_map_data(
    client: &Client,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(cm)) => {
            let mut data = cm.data.unwrap_or_default();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            Ok(Some(data))
        }
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(format!("configmap {namespace}/{name} not found")),
        Err(e) => Err(format!("reading configmap {namespace}/{name}: {e}")),
    }
}

/// A Secret's `data` and `stringData` as bytes; `None` when it is missing and `optional`.
pub async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, ByteString>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(secret)) => {
            let mut data = secret.data.unwrap_or_default();
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.insert(k, ByteString(v.into_bytes()));
            }
            Ok(Some(data))
        }
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(format!("secret {namespace}/{name} not found")),
        Err(e) => Err(format!("reading secret {namespace}/{name}: {e}")),
    }
}

/// The value of a `fieldRef`/downward API path for this Pod.
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_entry = |map: Option<&BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" | "status.hostIPs" => Some(host_ip.to_owned()),
        "status.podIP" | "status.podIPs" => Some(pod_ip.to_owned()),
        _ => map_entry(meta.labels.as_ref(), "metadata.labels['")
            .or_else(|| map_entry(meta.annotations.as_ref(), "metadata.annotations['")),
    }
}

/// The downward API's `key="value"` lines, sorted by key.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter().flatten().map(|(k, v)| format!("{k}={v:?}\n")).collect()
}

/// The variables one `envFrom` source brings, prefixed, its ConfigMap's before its Secret's.
pub async fn env_from_source(
    client: &Client,
    namespace: &str,
    source: &EnvFromSource,
) -> Result<Vec<(String, String)>, String> {
    let prefix = source.prefix.clone().unwrap_or_default();
    let mut vars = Vec::new();
    if let Some(r) = &source.config_map_ref {
        let optional = r.optional.unwrap_or(false);
        if let Some(data) = config_map_data(client, namespace, &r.name, optional).await? {
            vars.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
    }
    if let Some(r) = &source.secret_ref {
        let optional = r.optional.unwrap_or(false);
        if let Some(data) = secret_data(client, namespace, &r.name, optional).await? {
            vars.extend(
                data.into_iter()
                    .map(|(k, v)| (format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned())),
            );
        }
    }
    Ok(vars)
}

/// The value of the variable `name` taken from `source` (its `valueFrom`); `None` when an optional
/// key is missing, or the source names nothing this node reads.
pub async fn env_value_from(
    client: &Client,
    pod: &Pod,
    name: &str,
    source: &EnvVarSource,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Option<String>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(field) = &source.field_ref {
        return field_value(pod, &field.field_path, pod_ip, host_ip)
            .map(Some)
            .ok_or_else(|| format!("env {name}: unsupported fieldRef {}", field.field_path));
    }
    if let Some(key) = &source.config_map_key_ref {
        let optional = key.optional.unwrap_or(false);
        let data = config_map_data(client, &namespace, &key.name, optional).await?;
        return match data.and_then(|d| d.get(&key.key).cloned()) {
            Some(v) => Ok(Some(v)),
            None if optional => Ok(None),
            None => Err(format!(
                "couldn't find key {} in ConfigMap {namespace}/{}",
                key.key, key.name
            )),
        };
    }
    if let Some(key) = &source.secret_key_ref {
        let optional = key.optional.unwrap_or(false);
        let data = secret_data(client, &namespace, &key.name, optional).await?;
        return match data.and_then(|d| d.get(&key.key).cloned()) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v.0).into_owned())),
            None if optional => Ok(None),
            None => Err(format!(
                "couldn't find key {} in Secret {namespace}/{}",
                key.key, key.name
            )),
        };
    }
    if source.resource_field_ref.is_some() {
        return Ok(Some(UNLIMITED_RESOURCE.to_owned()));
    }
    Ok(None)
}

/// What a `resourceFieldRef` reads: this node does no resource accounting, so every limit is unset,
/// as on a node without limits.
const UNLIMITED_RESOURCE: &str = "0";

/// The contents of one downward API volume file.
pub fn downward_file_value(
    pod: &Pod,
    item: &DownwardAPIVolumeFile,
    pod_ip: &str,
    host_ip: &str,
) -> Result<String, String> {
    match &item.field_ref {
        Some(field) => field_value(pod, &field.field_path, pod_ip, host_ip)
            .ok_or_else(|| format!("unsupported downward API field {}", field.field_path)),
        None => Ok(UNLIMITED_RESOURCE.to_owned()),
    }
}

/// A token for the Pod's ServiceAccount, bound to the Pod, for a projected volume.
pub async fn service_account_token(
    client: &Client,
    pod: &Pod,
    namespace: &str,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a]),
            expiration_seconds: Some(expiration.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("a token for ServiceAccount {namespace}/{account}: {e}"))?;
    Ok(answer.status.and_then(|s| s.token).unwrap_or_default())
}
