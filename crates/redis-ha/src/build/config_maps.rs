//! The configuration ConfigMaps (immutable, named by their content) and the bootstrap record.
use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::OwnerReference};

use super::{hash::config_hash, meta};
use crate::{
    config::{self, Rendering},
    names::{
        COMPONENT_REDIS, COMPONENT_SENTINEL, bootstrap_config_map_name, component_labels, redis_config_map_name,
        sentinel_config_map_name,
    },
    reconcile::validate::SpecError,
    render,
};

fn config_map(
    config_map_name: impl Fn(&str) -> String,
    name: &str,
    namespace: &str,
    component: &str,
    data: BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ConfigMap {
    let mut config_map = ConfigMap {
        data: Some(data),
        immutable: Some(true),
        ..Default::default()
    };
    config_map.metadata = meta(
        config_map_name(&config_hash(&config_map)),
        namespace,
        component_labels(name, component),
        owner,
    );
    config_map
}

pub(crate) fn redis_config_map(
    name: &str,
    namespace: &str,
    rendering: &Rendering,
    owner: &OwnerReference,
) -> Result<ConfigMap, SpecError> {
    Ok(config_map(
        |hash| redis_config_map_name(name, hash),
        name,
        namespace,
        COMPONENT_REDIS,
        render::redis_config_data(rendering)?,
        owner,
    ))
}

pub(crate) fn sentinel_config_map(
    name: &str,
    namespace: &str,
    rendering: &Rendering,
    owner: &OwnerReference,
) -> ConfigMap {
    config_map(
        |hash| sentinel_config_map_name(name, hash),
        name,
        namespace,
        COMPONENT_SENTINEL,
        render::sentinel_config_data(rendering),
        owner,
    )
}

/// The bootstrap record: what Pods read at start that must not be part of their template — the
/// Redis count the spec wants (`min-replicas-to-write`), and the last master the operator
/// verified, which Sentinels that all restarted at once seed from (their own state is on an
/// emptyDir). `master` is None while none is known (the record then has no master).
pub(crate) fn bootstrap_config_map(
    name: &str,
    namespace: &str,
    replicas: i32,
    master: Option<&str>,
    owner: &OwnerReference,
) -> ConfigMap {
    let mut data = BTreeMap::from([(config::BOOTSTRAP_REPLICAS_KEY.to_owned(), replicas.to_string())]);
    if let Some(master) = master {
        data.insert(config::BOOTSTRAP_MASTER_KEY.to_owned(), master.to_owned());
    }
    ConfigMap {
        metadata: meta(
            bootstrap_config_map_name(name),
            namespace,
            component_labels(name, COMPONENT_SENTINEL),
            owner,
        ),
        data: Some(data),
        ..Default::default()
    }
}
