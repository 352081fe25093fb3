//! Server-side apply with one field manager, controller owner references, and no-op detection.
//!
//! A server-side apply that changes nothing is still a PATCH request (and on some servers not even
//! a resourceVersion bump), so an idle operator that re-applies on every resync keeps writing.
//! [`needs_apply`] compares the desired object with the cached one and the apply is only sent when
//! a field the controller sets differs, or when the desired object itself changed (detected by a
//! hash annotation, which catches fields the controller stopped setting).
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::fmt::Debug;

use crate::Error;

/// The one field manager every capstan write uses.
pub const FIELD_MANAGER: &str = "capstan";

/// Annotation holding a hash of the desired object as last applied.
pub const DESIRED_HASH_ANNOTATION: &str = "capstan.dev/desired-hash";

/// An owner reference marking `owner` as the controller of a child, so that garbage collection
/// removes the child with its owner and foreground deletion waits for it.
pub fn controller_owner_ref<K>(owner: &K) -> Result<OwnerReference, Error>
where
    K: Resource<DynamicType = ()>,
{
    let meta = owner.meta();
    Ok(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().ok_or(Error::MissingField("metadata.name"))?,
        uid: meta.uid.clone().ok_or(Error::MissingField("metadata.uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Stamps [`DESIRED_HASH_ANNOTATION`] into `desired` and returns it as JSON.
pub fn stamp_desired_hash<K: Serialize>(desired: &K) -> Result<Value, Error> {
    let mut value = serde_json::to_value(desired).map_err(|source| Error::Serialize {
        what: "desired object",
        source,
    })?;
    let hash = format!("{:016x}", fnv1a(value.to_string().as_bytes()));
    let metadata = value
        .as_object_mut()
        .ok_or(Error::MissingField("object"))?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let annotations = metadata
        .as_object_mut()
        .ok_or(Error::MissingField("metadata"))?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(map) = annotations.as_object_mut() {
        map.insert(DESIRED_HASH_ANNOTATION.to_owned(), Value::String(hash));
    }
    Ok(value)
}

/// True unless every field of `desired` is already present with the same value in `current`.
///
/// Objects are compared field by field and lists element by element, so defaults the apiserver
/// fills in (fields `desired` does not set) never count as a difference, while a hand edit of a
/// field the controller owns does. `null` in `desired` matches an absent field.
pub fn needs_apply(desired: &Value, current: Option<&Value>) -> bool {
    match current {
        None => true,
        Some(current) => !is_subset(desired, current),
    }
}

fn is_subset(desired: &Value, current: &Value) -> bool {
    match (desired, current) {
        (Value::Object(d), Value::Object(c)) => d.iter().all(|(k, dv)| match c.get(k) {
            Some(cv) => is_subset(dv, cv),
            None => {
                dv.is_null()
                    || dv.as_object().is_some_and(|o| o.is_empty())
                    || dv.as_array().is_some_and(|a| a.is_empty())
            }
        }),
        (Value::Array(d), Value::Array(c)) => d.len() == c.len() && d.iter().zip(c).all(|(dv, cv)| is_subset(dv, cv)),
        (Value::Number(d), Value::Number(c)) => d.as_f64() == c.as_f64(),
        _ => desired == current,
    }
}

/// FNV-1a: stable across Rust releases (unlike `DefaultHasher`), so a manager upgrade does not
/// re-apply every object.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The stored object already matched; no request was sent.
    Unchanged,
    /// A server-side apply was sent.
    Applied,
}

/// Server-side applies `desired` unless `current` (usually from an informer cache) already
/// matches it. Forces conflicts: capstan owns the fields it sets.
pub async fn apply<K>(api: &Api<K>, desired: &K, current: Option<&K>) -> Result<ApplyOutcome, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    Ok(apply_returning(api, desired, current).await?.0)
}

/// [`apply`], also returning the object as the apiserver stored it when it was written.
pub(crate) async fn apply_returning<K>(
    api: &Api<K>,
    desired: &K,
    current: Option<&K>,
) -> Result<(ApplyOutcome, Option<K>), Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let desired_value = stamp_desired_hash(desired)?;
    let current_value = current
        .map(serde_json::to_value)
        .transpose()
        .map_err(|source| Error::Serialize {
            what: "cached object",
            source,
        })?;
    if !needs_apply(&desired_value, current_value.as_ref()) {
        return Ok((ApplyOutcome::Unchanged, None));
    }
    let name = desired
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let stored = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired_value),
        )
        .await?;
    Ok((ApplyOutcome::Applied, Some(stored)))
}

/// Server-side applies the status subresource of `obj` unless its stored status already matches.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    obj: &K,
    current_status: Option<&S>,
    status: &S,
) -> Result<ApplyOutcome, Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
    S: Serialize,
{
    let desired = serde_json::to_value(status).map_err(|source| Error::Serialize { what: "status", source })?;
    let (outcome, _) = apply_status_value(api, obj, current_status, &desired).await?;
    Ok(outcome)
}

/// [`apply_status`] with the status already serialized; hands back the stored object when it
/// wrote.
pub(crate) async fn apply_status_value<K, S>(
    api: &Api<K>,
    obj: &K,
    current_status: Option<&S>,
    desired: &Value,
) -> Result<(ApplyOutcome, Option<K>), Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
    S: Serialize,
{
    let current = current_status
        .map(serde_json::to_value)
        .transpose()
        .map_err(|source| Error::Serialize {
            what: "stored status",
            source,
        })?;
    if !needs_apply(desired, current.as_ref()) {
        return Ok((ApplyOutcome::Unchanged, None));
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    let stored = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok((ApplyOutcome::Applied, Some(stored)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_do_not_count_as_a_difference() {
        let desired = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "m", "image": "memcached:1.6"}]}}}});
        let stored = json!({"spec": {"replicas": 3, "revisionHistoryLimit": 10, "template": {"spec": {
            "containers": [{"name": "m", "image": "memcached:1.6", "terminationMessagePath": "/dev/termination-log"}],
            "restartPolicy": "Always"}}}, "status": {"replicas": 3}});
        assert!(!needs_apply(&desired, Some(&stored)));
    }

    #[test]
    fn a_hand_edit_of_an_owned_field_is_a_difference() {
        let desired = json!({"spec": {"replicas": 3}});
        assert!(needs_apply(&desired, Some(&json!({"spec": {"replicas": 5}}))));
        assert!(needs_apply(&desired, Some(&json!({"spec": {}}))));
        assert!(needs_apply(&desired, None));
    }

    #[test]
    fn lists_must_match_in_length_and_elementwise() {
        let desired = json!({"args": ["-m", "64"]});
        assert!(needs_apply(&desired, Some(&json!({"args": ["-m", "64", "-v"]}))));
        assert!(needs_apply(&desired, Some(&json!({"args": ["-m", "65"]}))));
        assert!(!needs_apply(&desired, Some(&json!({"args": ["-m", "64"]}))));
    }

    #[test]
    fn null_and_empty_in_desired_match_absent_fields() {
        let desired = json!({"status": {"nodes": [], "reason": null, "extra": {}}});
        assert!(!needs_apply(&desired, Some(&json!({"status": {}}))));
    }

    #[test]
    fn the_desired_hash_changes_when_a_field_is_dropped() {
        let with = stamp_desired_hash(&json!({"metadata": {"name": "a"}, "spec": {"x": 1, "y": 2}})).expect("hash");
        let without = stamp_desired_hash(&json!({"metadata": {"name": "a"}, "spec": {"x": 1}})).expect("hash");
        let annotation = |v: &Value| v["metadata"]["annotations"][DESIRED_HASH_ANNOTATION].clone();
        assert_ne!(annotation(&with), annotation(&without));
        // Dropping a field leaves the stored object a superset of the new desired one, so only
        // the hash tells that an apply is needed.
        assert!(needs_apply(&without, Some(&with)));
        assert!(!needs_apply(&with, Some(&with)));
    }

    #[test]
    fn integer_and_float_forms_of_one_number_are_equal() {
        assert!(!needs_apply(&json!({"a": 1}), Some(&json!({"a": 1.0}))));
    }
}
