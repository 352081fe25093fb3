//! Spec checks: what the CRD schema should already have refused (servers that ignore parts of it,
//! or a CRD installed without validation) and what it cannot express.
use k8s_openapi::api::apps::v1::StatefulSet;

use crate::{
    config::{self, ConfigError},
    crd::{MAX_REPLICAS, MAX_SENTINELS, RedisHA},
    names::AUTH_HASH_ANNOTATION,
};

/// Why a RedisHA cannot be acted on as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.replicas must be between 1 and {MAX_REPLICAS}, got {0}")]
    Replicas(i32),
    #[error("spec.sentinel.replicas must be between 1 and {MAX_SENTINELS}, got {0}")]
    Sentinels(i32),
    #[error("spec.sentinel.quorum must be between 1 and spec.sentinel.replicas ({sentinels}), got {quorum}")]
    Quorum { quorum: i32, sentinels: i32 },
    #[error("spec.image must be a non-empty image reference without spaces")]
    Image,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("spec.auth is set but the password in Secret {0} has not been read")]
    AuthNotRead(String),
    #[error("metadata.{0} is missing")]
    Metadata(&'static str),
    #[error(
        "spec.auth was removed, but the running Redis Pods require a password: turning auth off is not rotated live (the operator would be locked out of its own Pods); set spec.auth back, or delete and recreate the RedisHA without it"
    )]
    AuthRemoved,
}

/// Checks what the CRD schema should already have refused (servers that ignore parts of it, or a
/// CRD installed without validation) and what it cannot express (quorum ≤ Sentinels, directives).
pub(crate) fn validate(rha: &RedisHA) -> Result<(), SpecError> {
    let spec = &rha.spec;
    if !(1..=MAX_REPLICAS).contains(&spec.replicas) {
        return Err(SpecError::Replicas(spec.replicas));
    }
    let sentinels = spec.sentinel.replicas;
    if !(1..=MAX_SENTINELS).contains(&sentinels) {
        return Err(SpecError::Sentinels(sentinels));
    }
    let quorum = spec.sentinel.effective_quorum();
    if !(1..=sentinels).contains(&quorum) {
        return Err(SpecError::Quorum { quorum, sentinels });
    }
    if spec.image.is_empty() || spec.image.chars().any(char::is_whitespace) {
        return Err(SpecError::Image);
    }
    config::check_extra_config(&spec.config)?;
    Ok(())
}

/// Refuses a spec that dropped `spec.auth` while `running` (the Redis StatefulSet as it stands)
/// still starts its Pods with a password: applied, the Pods would restart without one while the
/// healer could no longer authenticate to those still running with it.
pub(crate) fn check_auth_kept(rha: &RedisHA, running: Option<&StatefulSet>) -> Result<(), SpecError> {
    let runs_with_password = running
        .and_then(|set| set.spec.template.metadata.as_ref()?.annotations.as_ref())
        .is_some_and(|annotations| annotations.contains_key(AUTH_HASH_ANNOTATION));
    if rha.spec.auth.is_none() && runs_with_password {
        return Err(SpecError::AuthRemoved);
    }
    Ok(())
}
