//! The Redis and Sentinel StatefulSets, and what the reconcile reads back from running ones.
use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy},
        core::v1::{
            Container, ContainerPort, ExecAction, LifecycleHandler, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            PodSpec, PodTemplateSpec, VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

use super::{
    Inputs, meta,
    pod::{
        BOOTSTRAP_VOLUME, CONFIG_VOLUME, DATA_VOLUME, REDIS_CONTAINER, RUNTIME_VOLUME, SENTINEL_CONTAINER,
        SENTINEL_INIT_CONTAINER, bootstrap_volume, config_volume, empty_dir, env_password, env_pod_name, exec_probe,
        mount, pod_security, restricted_container_security, script_command, spread, tcp_probe, template_annotations,
    },
};
use crate::{
    config::{self, ENV_PASSWORD, ENV_REDISCLI_AUTH, REDIS_PORT, SENTINEL_PORT},
    crd::RedisHA,
    names::{
        COMPONENT_REDIS, COMPONENT_SENTINEL, component_labels, component_selector, headless_service,
        redis_config_map_name, sentinel_config_map_name, sentinel_headless_service, sentinel_set,
    },
};

/// The Redis StatefulSet's `replicas`. A scale-down never removes the master: while the master's
/// ordinal is at or above the desired count, the set keeps it (the healer fails over first); and
/// while the master is unknown (an operator that just started) the set is never lowered.
/// A single Redis is never rolled in place (without storage it would come back empty): while a
/// roll is pending (`rolling`, see [`roll_pending`]) a second Pod surges from the new template,
/// takes over by a planned failover while the first is rolled, and hands back before the set
/// shrinks to one again.
/// Pods that never ran (never got an IP: unschedulable, Pending) hold no data, so with them
/// alone at the ordinals a scale-down removes (`removed_never_ran`) it is never held.
pub(crate) fn redis_replicas(
    desired: i32,
    current: Option<i32>,
    master_ordinal: Option<u32>,
    rolling: bool,
    removed_never_ran: bool,
) -> i32 {
    let desired = if desired == 1 && rolling { 2 } else { desired };
    match master_ordinal {
        Some(ordinal) => desired.max(i32::try_from(ordinal).map_or(i32::MAX, |o| o.saturating_add(1))),
        None if removed_never_ran => desired,
        None => desired.max(current.unwrap_or(desired)),
    }
}

/// Whether Pods may still mount an older configuration ConfigMap, which the prune must then
/// leave: a set about to move to another one (`stored` against `desired`), or one whose roll is
/// not finished (its controller has not seen the spec, or not every Pod runs the newest
/// revision; with `OnDelete` the healer rolls Redis one Pod at a time).
pub(crate) fn older_config_in_use(stored: &[&StatefulSet], desired: &[StatefulSet]) -> bool {
    let wanted: Vec<String> = desired.iter().flat_map(config_maps_mounted).collect();
    stored
        .iter()
        .any(|set| roll_pending(set) || config_maps_mounted(set).iter().any(|m| !wanted.contains(m)))
}

/// Whether a StatefulSet's Pods may not all run its newest template: its controller has not
/// seen the spec yet, or fewer Pods are updated than exist.
pub(crate) fn roll_pending(set: &StatefulSet) -> bool {
    let status = set.status.as_ref();
    let seen = status.and_then(|s| s.observed_generation) >= set.metadata.generation;
    let replicas = status.map_or(0, |s| s.replicas);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    !seen || updated < replicas
}

/// The configuration ConfigMap a StatefulSet's Pod template mounts (the bootstrap record aside).
pub(crate) fn config_maps_mounted(set: &StatefulSet) -> Vec<String> {
    set.spec
        .template
        .spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter(|volume| volume.name == CONFIG_VOLUME)
        .filter_map(|volume| Some(volume.config_map.as_ref()?.name.clone()))
        .collect()
}

/// The Redis StatefulSet `<name>`: Parallel, so one stuck ordinal never blocks the others, and
/// OnDelete, so the operator rolls Pods by role (replicas, a failover, then the old master).
pub(crate) fn redis_stateful_set(
    rha: &RedisHA,
    name: &str,
    namespace: &str,
    inputs: Inputs<'_>,
    config_hash: &str,
) -> StatefulSet {
    let layout = config::Layout::default();
    let selector = component_selector(name, COMPONENT_REDIS);
    let mut env = vec![env_pod_name()];
    env.extend(env_password(rha, ENV_PASSWORD));
    env.extend(env_password(rha, ENV_REDISCLI_AUTH));
    let container = Container {
        name: REDIS_CONTAINER.into(),
        image: Some(rha.spec.image.clone()),
        command: Some(script_command(config::REDIS_START)),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: i32::from(REDIS_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: rha.spec.resources.clone(),
        readiness_probe: Some(exec_probe(config::REDIS_READY, 2)),
        // The start script may wait minutes for the Sentinels or a failover before Redis listens.
        liveness_probe: Some(tcp_probe("redis", 240)),
        lifecycle: Some(k8s_openapi::api::core::v1::Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(script_command(config::REDIS_PRESTOP)),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount(CONFIG_VOLUME, &layout.config_dir, true),
            mount(RUNTIME_VOLUME, &layout.runtime_dir, false),
            mount(DATA_VOLUME, &layout.data_dir, false),
            mount(BOOTSTRAP_VOLUME, &layout.bootstrap_dir, true),
        ]),
        security_context: Some(restricted_container_security()),
        ..Default::default()
    };
    let mut volumes = vec![
        config_volume(redis_config_map_name(name, config_hash)),
        empty_dir(RUNTIME_VOLUME),
        bootstrap_volume(name),
    ];
    let claims = match &rha.spec.storage {
        None => {
            volumes.push(empty_dir(DATA_VOLUME));
            None
        }
        Some(storage) => Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(DATA_VOLUME.into()),
                labels: Some(component_labels(name, COMPONENT_REDIS)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: storage.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_owned(), storage.size.clone())])),
                    limits: None,
                }),
                ..Default::default()
            }),
            status: None,
        }]),
    };
    StatefulSet {
        metadata: meta(
            name.to_owned(),
            namespace,
            component_labels(name, COMPONENT_REDIS),
            inputs.owner,
        ),
        spec: StatefulSetSpec {
            replicas: Some(inputs.redis_replicas),
            service_name: Some(headless_service(name)),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(component_labels(name, COMPONENT_REDIS)),
                    annotations: Some(template_annotations(config_hash, inputs.auth_hash)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(pod_security()),
                    affinity: Some(spread(&selector)),
                    // Service variables such as `<SVC>_PORT` would only add noise to the scripts' env.
                    enable_service_links: Some(false),
                    // The preStop handover (≤ 15 s) plus Redis's own shutdown.
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims,
            ..Default::default()
        },
        status: None,
    }
}

/// The Sentinel StatefulSet `<name>-sentinel`: an init container seeds sentinel.conf onto a
/// writable volume (Sentinel rewrites its file and exits on a read-only one).
pub(crate) fn sentinel_stateful_set(
    rha: &RedisHA,
    name: &str,
    namespace: &str,
    inputs: Inputs<'_>,
    config_hash: &str,
) -> StatefulSet {
    let layout = config::Layout::default();
    let selector = component_selector(name, COMPONENT_SENTINEL);
    let mounts = vec![
        mount(CONFIG_VOLUME, &layout.config_dir, true),
        mount(RUNTIME_VOLUME, &layout.runtime_dir, false),
        mount(BOOTSTRAP_VOLUME, &layout.bootstrap_dir, true),
    ];
    // Without a password yet (spec.auth just set, the Redis Pods not all rolled), none here.
    let password = |var| env_password(rha, var).filter(|_| inputs.sentinel_auth_hash.is_some());
    let mut init_env = vec![env_pod_name()];
    init_env.extend(password(ENV_PASSWORD));
    let mut sentinel_env = vec![env_pod_name()];
    sentinel_env.extend(password(ENV_REDISCLI_AUTH));
    let init = Container {
        name: SENTINEL_INIT_CONTAINER.into(),
        image: Some(rha.spec.image.clone()),
        command: Some(script_command(config::SENTINEL_INIT)),
        env: Some(init_env),
        volume_mounts: Some(mounts.clone()),
        security_context: Some(restricted_container_security()),
        ..Default::default()
    };
    let sentinel = Container {
        name: SENTINEL_CONTAINER.into(),
        image: Some(rha.spec.image.clone()),
        command: Some(vec![
            "redis-sentinel".into(),
            format!("{}/{}", layout.runtime_dir, config::SENTINEL_CONF),
        ]),
        env: Some(sentinel_env),
        ports: Some(vec![ContainerPort {
            name: Some("sentinel".into()),
            container_port: i32::from(SENTINEL_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(exec_probe(config::SENTINEL_READY, 5)),
        liveness_probe: Some(tcp_probe("sentinel", 30)),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container_security()),
        ..Default::default()
    };
    StatefulSet {
        metadata: meta(
            sentinel_set(name),
            namespace,
            component_labels(name, COMPONENT_SENTINEL),
            inputs.owner,
        ),
        spec: StatefulSetSpec {
            replicas: Some(rha.spec.sentinel.replicas),
            service_name: Some(sentinel_headless_service(name)),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(component_labels(name, COMPONENT_SENTINEL)),
                    annotations: Some(template_annotations(config_hash, inputs.sentinel_auth_hash)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    init_containers: Some(vec![init]),
                    containers: vec![sentinel],
                    volumes: Some(vec![
                        config_volume(sentinel_config_map_name(name, config_hash)),
                        empty_dir(RUNTIME_VOLUME),
                        bootstrap_volume(name),
                    ]),
                    security_context: Some(pod_security()),
                    affinity: Some(spread(&selector)),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    }
}
