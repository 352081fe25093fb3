//! The hashes in the Pod templates: a changed configuration or password is a template change the
//! operator rolls.
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret},
};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::stateful_sets::roll_pending;
use crate::{
    config::{self, ConfigError},
    names::AUTH_HASH_ANNOTATION,
};

/// The password the Sentinel Pods' template carries (by its [`auth_hash`]). A rolled Sentinel
/// takes only the password it started with, and Redis Pods not rolled yet still send the
/// previous one to the Sentinels (preStop handovers, start scripts): so the Sentinels, which
/// the healer has made accept both meanwhile, roll to a new password (or to one at all) only
/// once the Redis set runs it on every Pod.
pub(crate) fn sentinel_auth_hash(
    auth_hash: Option<&str>,
    redis: Option<&StatefulSet>,
    sentinel: Option<&StatefulSet>,
) -> Option<String> {
    let template_hash = |set: &StatefulSet| {
        set.spec
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(AUTH_HASH_ANNOTATION)
            .cloned()
    };
    let Some(sentinel) = sentinel else {
        return auth_hash.map(str::to_owned);
    };
    match redis {
        Some(redis) if template_hash(redis).as_deref() == auth_hash && !roll_pending(redis) => {
            auth_hash.map(str::to_owned)
        }
        _ => template_hash(sentinel),
    }
}

fn sha256_hex16(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable hash of a ConfigMap's data: in the Pod template, so a changed configuration is a
/// template change the operator rolls.
pub(crate) fn config_hash(config_map: &ConfigMap) -> String {
    let data = config_map.data.clone().unwrap_or_default();
    let parts: Vec<&[u8]> = data.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]).collect();
    sha256_hex16(&parts)
}

/// Why the auth Secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("Secret {secret} has no key {key}")]
    MissingKey { secret: String, key: String },
    #[error("Secret {secret} key {key}: {source}")]
    Invalid {
        secret: String,
        key: String,
        source: ConfigError,
    },
}

/// The hash of the auth Secret's password that goes into both Pod templates, so a rotated
/// password rolls the Pods. Salted with the RedisHA's uid so the annotation is no unsalted
/// fingerprint of the password; only a 64-bit prefix is kept.
pub(crate) fn auth_hash(secret: &Secret, key: &str, salt: &str) -> Result<String, AuthError> {
    let secret_name = secret.name_any();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| AuthError::MissingKey {
            secret: secret_name.clone(),
            key: key.to_owned(),
        })?;
    config::check_password(&bytes).map_err(|source| AuthError::Invalid {
        secret: secret_name,
        key: key.to_owned(),
        source,
    })?;
    Ok(sha256_hex16(&[salt.as_bytes(), key.as_bytes(), &bytes]))
}
