//! Pure builders: every object a RedisHA owns, from its spec and what the caller has read (the
//! owner reference, the cluster domain, the auth Secret's hash). No client, no I/O.
mod config_maps;
mod hash;
mod pdb;
mod pod;
mod services;
mod stateful_sets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Service},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::ResourceExt;

pub use self::pod::REDIS_UID;
pub(crate) use self::{
    config_maps::{bootstrap_config_map, redis_config_map, sentinel_config_map},
    hash::{AuthError, auth_hash, config_hash, sentinel_auth_hash},
    pdb::pod_disruption_budget,
    services::{redis_headless_service, role_service, sentinel_headless, sentinel_service},
    stateful_sets::{older_config_in_use, redis_replicas, redis_stateful_set, roll_pending, sentinel_stateful_set},
};
use crate::{
    config::Rendering,
    crd::RedisHA,
    names::{COMPONENT_REDIS, COMPONENT_SENTINEL, ROLE_MASTER, ROLE_REPLICA, sentinel_set},
    reconcile::validate::{SpecError, validate},
};

/// What the caller supplies besides the RedisHA.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The controller reference to the RedisHA (set by the runtime's child apply).
    pub owner: &'a OwnerReference,
    /// The cluster's DNS domain (`--cluster-domain`), for the Pods' FQDNs.
    pub cluster_domain: &'a str,
    /// [`auth_hash`] of the password, when `spec.auth` is set.
    pub auth_hash: Option<&'a str>,
    /// The [`auth_hash`] the Sentinel Pods run with ([`sentinel_auth_hash`]): they follow a
    /// password change only once every Redis Pod runs with it.
    pub sentinel_auth_hash: Option<&'a str>,
    /// How many Redis Pods the StatefulSet keeps: `spec.replicas`, or more while a scale-down
    /// waits for the master to move ([`redis_replicas`]).
    pub redis_replicas: i32,
    /// The last master the operator verified, for the bootstrap record ([`bootstrap_config_map`]).
    pub recorded_master: Option<&'a str>,
}

/// Every object a RedisHA owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub config_maps: Vec<ConfigMap>,
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    /// policy/v1; `PodDisruptionBudgetV1Beta1::from` makes one the object older servers serve.
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
}

/// Builds every child of a valid RedisHA.
pub(crate) fn build_children(rha: &RedisHA, inputs: Inputs<'_>) -> Result<Children, SpecError> {
    validate(rha)?;
    let (name, namespace) = name_and_namespace(rha)?;
    if let (Some(auth), None) = (&rha.spec.auth, inputs.auth_hash) {
        return Err(SpecError::AuthNotRead(auth.secret_name.clone()));
    }
    let rendering = Rendering::for_redis_ha(rha, &name, &namespace, inputs.cluster_domain);
    let redis_config = redis_config_map(&name, &namespace, &rendering, inputs.owner)?;
    let sentinel_config = sentinel_config_map(&name, &namespace, &rendering, inputs.owner);
    let redis_set = redis_stateful_set(rha, &name, &namespace, inputs, &config_hash(&redis_config));
    let sentinel_statefulset = sentinel_stateful_set(rha, &name, &namespace, inputs, &config_hash(&sentinel_config));
    let record = bootstrap_config_map(
        &name,
        &namespace,
        rha.spec.replicas,
        inputs.recorded_master,
        inputs.owner,
    );
    Ok(Children {
        config_maps: vec![redis_config, sentinel_config, record],
        services: vec![
            redis_headless_service(&name, &namespace, inputs.owner),
            role_service(&name, &namespace, ROLE_MASTER, inputs.owner),
            role_service(&name, &namespace, ROLE_REPLICA, inputs.owner),
            sentinel_service(&name, &namespace, inputs.owner),
            sentinel_headless(&name, &namespace, inputs.owner),
        ],
        stateful_sets: vec![redis_set, sentinel_statefulset],
        pod_disruption_budgets: vec![
            pod_disruption_budget(&name, &namespace, &name, COMPONENT_REDIS, inputs.owner),
            pod_disruption_budget(
                &name,
                &namespace,
                &sentinel_set(&name),
                COMPONENT_SENTINEL,
                inputs.owner,
            ),
        ],
    })
}

pub(crate) fn name_and_namespace(rha: &RedisHA) -> Result<(String, String), SpecError> {
    let name = rha.metadata.name.clone().ok_or(SpecError::Metadata("name"))?;
    let namespace = rha.namespace().ok_or(SpecError::Metadata("namespace"))?;
    Ok((name, namespace))
}

/// The metadata of a child: its name, namespace, labels and controller reference.
fn meta(name: String, namespace: &str, labels: BTreeMap<String, String>, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}
