//! The pieces of the Pod templates: environment, probes, security contexts, spreading and volumes.
use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Affinity, Capabilities, ConfigMapVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
        ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, Probe, SeccompProfile,
        SecretKeySelector, SecurityContext, TCPSocketAction, Volume, VolumeMount, WeightedPodAffinityTerm,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use crate::{
    config::{self, ENV_POD_NAME},
    crd::RedisHA,
    names::{AUTH_HASH_ANNOTATION, CONFIG_HASH_ANNOTATION, bootstrap_config_map_name},
};

/// The official redis image's numeric user and group, so `runAsNonRoot` can be verified.
pub const REDIS_UID: i64 = 999;

pub(super) const REDIS_CONTAINER: &str = "redis";
pub(super) const SENTINEL_CONTAINER: &str = "sentinel";
pub(super) const SENTINEL_INIT_CONTAINER: &str = "seed-sentinel-conf";
pub(super) const CONFIG_VOLUME: &str = "config";
pub(super) const RUNTIME_VOLUME: &str = "runtime";
pub(super) const DATA_VOLUME: &str = "data";
pub(super) const BOOTSTRAP_VOLUME: &str = "bootstrap";

pub(super) fn env_pod_name() -> EnvVar {
    EnvVar {
        name: ENV_POD_NAME.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        value: None,
    }
}

pub(super) fn env_password(rha: &RedisHA, var: &str) -> Option<EnvVar> {
    rha.spec.auth.as_ref().map(|auth| EnvVar {
        name: var.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: auth.secret_name.clone(),
                key: auth.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        value: None,
    })
}

pub(super) fn script_command(file: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        format!("{}/{file}", config::Layout::default().config_dir),
    ]
}

pub(super) fn exec_probe(file: &str, period_seconds: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(script_command(file)),
        }),
        period_seconds: Some(period_seconds),
        // The script's redis-cli calls are bounded at 3 s each.
        timeout_seconds: Some(5),
        failure_threshold: Some(2),
        ..Default::default()
    }
}

pub(super) fn tcp_probe(port: &str, initial_delay_seconds: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.into()),
            host: None,
        }),
        initial_delay_seconds: Some(initial_delay_seconds),
        period_seconds: Some(10),
        failure_threshold: Some(6),
        ..Default::default()
    }
}

pub(super) fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(REDIS_UID),
        run_as_group: Some(REDIS_UID),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

pub(super) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(REDIS_UID),
        run_as_group: Some(REDIS_UID),
        fs_group: Some(REDIS_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// Soft anti-affinity: spread across nodes when possible, still schedule when not.
pub(super) fn spread(selector: &BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(selector.clone()),
                        match_expressions: None,
                    }),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                },
            }]),
            required_during_scheduling_ignored_during_execution: None,
        }),
        ..Default::default()
    }
}

pub(super) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

pub(super) fn config_volume(config_map: String) -> Volume {
    Volume {
        name: CONFIG_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map,
            default_mode: Some(0o444),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The bootstrap record, mutable and outside the template's hash (a failover changes it, which
/// must not roll anything); optional, so Sentinels start before the operator has seen a master.
pub(super) fn bootstrap_volume(name: &str) -> Volume {
    Volume {
        name: BOOTSTRAP_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: bootstrap_config_map_name(name),
            default_mode: Some(0o444),
            optional: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

pub(super) fn template_annotations(config_hash: &str, auth_hash: Option<&str>) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned())]);
    if let Some(hash) = auth_hash {
        annotations.insert(AUTH_HASH_ANNOTATION.to_owned(), hash.to_owned());
    }
    annotations
}
