//! Pure builders: the desired Deployment and status from a Memcached and what the caches hold.
use capstan_runtime::{
    apply::controller_owner_ref,
    conditions::{DesiredCondition, READY, merge_conditions},
    labels::{selector_labels, standard_labels},
};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStatus},
        core::v1::{
            Capabilities, Container, ContainerPort, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            SeccompProfile, SecurityContext, TCPSocketAction,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt};

use crate::{DEFAULT_PORT, MAX_SIZE, Memcached, MemcachedStatus};

/// `app.kubernetes.io/name` of everything the Memcached controller creates.
pub const APP: &str = "memcached";
/// The official memcached image's numeric user and group, so `runAsNonRoot` can be verified.
pub const MEMCACHED_UID: i64 = 11211;
const CONTAINER: &str = "memcached";

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Why a Memcached cannot be acted on as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.size must be between 0 and {MAX_SIZE}, got {0}")]
    Size(i32),
    #[error("spec.memoryMB must be positive, got {0}")]
    Memory(i32),
    #[error("spec.containerPort must be between 1 and 65535, got {0}")]
    Port(i32),
    #[error("spec.image must not be empty")]
    Image,
    #[error("metadata.{0} is missing")]
    Metadata(&'static str),
}

/// Checks what the CRD schema should already have refused: servers older than the schema, or a
/// CRD installed without validation, must still not get a broken Deployment.
pub fn validate(mc: &Memcached) -> Result<(), SpecError> {
    let spec = &mc.spec;
    if !(0..=MAX_SIZE).contains(&spec.size) {
        return Err(SpecError::Size(spec.size));
    }
    if spec.memory_mb <= 0 {
        return Err(SpecError::Memory(spec.memory_mb));
    }
    if !(1..=65535).contains(&spec.container_port) {
        return Err(SpecError::Port(spec.container_port));
    }
    if spec.image.trim().is_empty() {
        return Err(SpecError::Image);
    }
    Ok(())
}

/// The Deployment a valid Memcached should own.
pub fn build_deployment(mc: &Memcached) -> Result<Deployment, SpecError> {
    validate(mc)?;
    let name = mc.meta().name.clone().ok_or(SpecError::Metadata("name"))?;
    let namespace = mc.namespace().ok_or(SpecError::Metadata("namespace"))?;
    let owner = controller_owner_ref(mc).map_err(|_| SpecError::Metadata("uid"))?;
    let spec = &mc.spec;
    let mut args = vec![
        "-m".to_owned(),
        spec.memory_mb.to_string(),
        "-o".to_owned(),
        "modern".to_owned(),
        "-v".to_owned(),
    ];
    if spec.container_port != DEFAULT_PORT {
        args.extend(["-p".to_owned(), spec.container_port.to_string()]);
    }
    let tcp_probe = |initial_delay_seconds, period_seconds| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("memcached".into()),
            host: None,
        }),
        initial_delay_seconds: Some(initial_delay_seconds),
        period_seconds: Some(period_seconds),
        ..Default::default()
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("memcached".into()),
            container_port: spec.container_port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: spec.resources.clone(),
        readiness_probe: Some(tcp_probe(1, 5)),
        liveness_probe: Some(tcp_probe(10, 10)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(MEMCACHED_UID),
            run_as_group: Some(MEMCACHED_UID),
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
        }),
        ..Default::default()
    };
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(standard_labels(APP, &name)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(spec.size),
            selector: LabelSelector {
                match_labels: Some(selector_labels(APP, &name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(standard_labels(APP, &name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    })
}

/// What the controller found when it went to apply the Deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed<'a> {
    /// The owned Deployment's status (None before the controller-manager first reports it).
    Owned(Option<&'a DeploymentStatus>),
    /// A Deployment of that name exists and this Memcached does not control it.
    Conflict,
    /// The spec is invalid; no Deployment was applied.
    Invalid(&'a SpecError),
    /// The apiserver refused the Deployment as invalid (422), with this message.
    Rejected(&'a str),
}

/// Conditions of a Memcached that cannot be acted on: Degraded with `reason` and `message`.
fn failed(reason: &'static str, message: &str) -> Vec<DesiredCondition> {
    [AVAILABLE, PROGRESSING, DEGRADED, READY]
        .into_iter()
        .map(|type_| DesiredCondition::new(type_, type_ == DEGRADED, reason, message))
        .collect()
}

/// The status a Memcached should have.
pub fn build_status(mc: &Memcached, observed: Observed<'_>, nodes: Vec<String>, now: Timestamp) -> MemcachedStatus {
    let generation = mc.meta().generation;
    let size = mc.spec.size;
    let (ready_replicas, conditions) = match observed {
        Observed::Owned(status) => {
            let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
            let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
            let replicas = status.and_then(|s| s.replicas).unwrap_or(0);
            let available = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_.as_deref() == Some("Available")))
                .is_some_and(|c| c.status.as_deref() == Some("True"));
            let rolled_out = updated == size && replicas == size && ready == size;
            (
                ready,
                vec![
                    if available {
                        DesiredCondition::new(
                            AVAILABLE,
                            true,
                            "MinimumReplicasAvailable",
                            format!("{ready}/{size} memcached Pods ready"),
                        )
                    } else {
                        DesiredCondition::new(
                            AVAILABLE,
                            false,
                            "MinimumReplicasUnavailable",
                            format!("{ready}/{size} memcached Pods ready"),
                        )
                    },
                    if rolled_out {
                        DesiredCondition::new(
                            PROGRESSING,
                            false,
                            "RolloutComplete",
                            format!("{size} Pods up to date and ready"),
                        )
                    } else {
                        DesiredCondition::new(
                            PROGRESSING,
                            true,
                            "RollingOut",
                            // Only what a person waits for (ready Pods): counts that move on the
                            // way, like updated replicas, would each cost a status write.
                            format!("waiting for {ready}/{size} Pods to be ready"),
                        )
                    },
                    DesiredCondition::new(DEGRADED, false, "AsExpected", ""),
                    DesiredCondition::new(
                        READY,
                        available && rolled_out,
                        if available && rolled_out { "Ready" } else { "NotReady" },
                        format!("{ready}/{size} memcached Pods ready"),
                    ),
                ],
            )
        }
        Observed::Conflict => {
            let name = mc.name_any();
            let message =
                format!("Deployment {name} exists and is not controlled by this Memcached; it is left untouched");
            (
                0,
                vec![
                    DesiredCondition::new(AVAILABLE, false, "ResourceExists", message.clone()),
                    DesiredCondition::new(PROGRESSING, false, "ResourceExists", message.clone()),
                    DesiredCondition::new(DEGRADED, true, "ResourceExists", message.clone()),
                    DesiredCondition::new(READY, false, "ResourceExists", message),
                ],
            )
        }
        Observed::Invalid(error) => (0, failed("InvalidSpec", &error.to_string())),
        Observed::Rejected(message) => (0, failed("Rejected", message)),
    };
    let previous = mc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    MemcachedStatus {
        nodes,
        ready_replicas,
        observed_generation: generation,
        conditions: merge_conditions(previous, &conditions, generation, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemcachedSpec;
    use capstan_runtime::conditions::is_true;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn memcached(yaml: &str) -> Memcached {
        let mut mc: Memcached = serde_yaml::from_str(yaml).expect("valid Memcached YAML");
        mc.metadata.uid = Some("uid-1".into());
        mc.metadata.generation = Some(2);
        mc
    }

    const SAMPLE: &str = "
apiVersion: cache.capstan.dev/v1alpha1
kind: Memcached
metadata: {name: cache, namespace: apps}
spec: {size: 3}
";

    fn now() -> Timestamp {
        Timestamp::from_second(1_000).expect("time")
    }

    #[test]
    fn defaults_fill_in_from_a_minimal_spec() {
        let mc = memcached(SAMPLE);
        assert_eq!(
            mc.spec,
            MemcachedSpec {
                size: 3,
                image: crate::DEFAULT_IMAGE.into(),
                container_port: 11211,
                memory_mb: 64,
                resources: None
            }
        );
    }

    #[test]
    fn deployment_runs_size_memcached_pods_owned_by_the_memcached() {
        let deployment = build_deployment(&memcached(SAMPLE)).expect("valid");
        let spec = &deployment.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(deployment.metadata.name.as_deref(), Some("cache"));
        let owner = &deployment.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.uid.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("Memcached", "uid-1", Some(true), Some(true))
        );
        let selector = spec.selector.match_labels.as_ref().expect("selector");
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "template labels satisfy the selector"
        );
        let pod = spec.template.spec.as_ref().expect("pod spec");
        let container = &pod.containers[0];
        assert_eq!(
            container.args.as_deref(),
            Some(&["-m", "64", "-o", "modern", "-v"].map(String::from)[..])
        );
        assert_eq!(container.ports.as_ref().expect("ports")[0].container_port, 11211);
        let sc = container.security_context.as_ref().expect("security context");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(MEMCACHED_UID));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
    }

    #[test]
    fn custom_port_and_memory_reach_the_container_args() {
        let mut mc = memcached(SAMPLE);
        mc.spec.container_port = 11311;
        mc.spec.memory_mb = 256;
        let deployment = build_deployment(&mc).expect("valid");
        let container = &deployment.spec.template.spec.expect("pod").containers[0];
        assert_eq!(
            container.args.as_deref(),
            Some(&["-m", "256", "-o", "modern", "-v", "-p", "11311"].map(String::from)[..])
        );
    }

    #[test]
    fn invalid_specs_are_refused_with_a_reason() {
        let mut mc = memcached(SAMPLE);
        mc.spec.size = 101;
        assert_eq!(build_deployment(&mc).err(), Some(SpecError::Size(101)));
        mc.spec.size = -1;
        assert_eq!(validate(&mc), Err(SpecError::Size(-1)));
        mc.spec.size = 1;
        mc.spec.memory_mb = 0;
        assert_eq!(validate(&mc), Err(SpecError::Memory(0)));
        mc.spec.memory_mb = 1;
        mc.spec.image = " ".into();
        assert_eq!(validate(&mc), Err(SpecError::Image));
    }

    #[test]
    fn status_follows_the_deployment() {
        let mc = memcached(SAMPLE);
        let rolling = DeploymentStatus {
            replicas: Some(3),
            updated_replicas: Some(3),
            ready_replicas: Some(1),
            ..Default::default()
        };
        let status = build_status(
            &mc,
            Observed::Owned(Some(&rolling)),
            vec!["a".into(), "b".into(), "c".into()],
            now(),
        );
        assert_eq!(status.ready_replicas, 1);
        assert_eq!(status.nodes, ["a", "b", "c"]);
        assert!(!is_true(&status.conditions, AVAILABLE));
        assert!(is_true(&status.conditions, PROGRESSING));
        assert!(!is_true(&status.conditions, READY));

        let done = DeploymentStatus {
            replicas: Some(3),
            updated_replicas: Some(3),
            ready_replicas: Some(3),
            conditions: Some(vec![k8s_openapi::api::apps::v1::DeploymentCondition {
                type_: Some("Available".into()),
                status: Some("True".into()),
                last_transition_time: Some(Time(now())),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let status = build_status(&mc, Observed::Owned(Some(&done)), vec![], now());
        assert!(is_true(&status.conditions, AVAILABLE));
        assert!(!is_true(&status.conditions, PROGRESSING));
        assert!(!is_true(&status.conditions, DEGRADED));
        assert!(is_true(&status.conditions, READY));
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn a_conflict_is_degraded_with_reason_resource_exists() {
        let status = build_status(&memcached(SAMPLE), Observed::Conflict, vec![], now());
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED)
            .expect("Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ResourceExists")
        );
        assert!(!is_true(&status.conditions, READY));
    }
}
