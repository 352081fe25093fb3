//! Pure builders: the objects a Memcached owns (its Deployment and headless Service).
use capstan_runtime::{
    controller_owner_ref,
    labels::{selector_labels, standard_labels},
};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};

use crate::{DEFAULT_PORT, MAX_SIZE, Memcached, NAME_MAX_LENGTH, quantity::is_valid_quantity};

/// `app.kubernetes.io/name` of everything the Memcached controller creates.
pub const APP: &str = "memcached";
/// The official memcached image's numeric user and group, so `runAsNonRoot` can be verified.
pub const MEMCACHED_UID: i64 = 11211;
const CONTAINER: &str = "memcached";
/// The name of the memcached container port, which probes and the Service target.
const PORT_NAME: &str = "memcached";

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
    #[error("spec.image must not contain whitespace, got {0:?}")]
    ImageWhitespace(String),
    #[error("spec.resources.{field}.{resource}: {value:?} is not a non-negative quantity (such as 64Mi or 250m)")]
    Quantity {
        field: &'static str,
        resource: String,
        value: String,
    },
    #[error("metadata.name must be at most {NAME_MAX_LENGTH} characters (a label value), got {0}")]
    NameTooLong(usize),
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
    if spec.image.chars().any(char::is_whitespace) {
        return Err(SpecError::ImageWhitespace(spec.image.clone()));
    }
    let name_length = mc.name_any().len();
    if name_length > NAME_MAX_LENGTH {
        return Err(SpecError::NameTooLong(name_length));
    }
    let resources = spec.resources.as_ref();
    for (field, quantities) in [
        ("limits", resources.and_then(|r| r.limits.as_ref())),
        ("requests", resources.and_then(|r| r.requests.as_ref())),
    ] {
        for (resource, quantity) in quantities.into_iter().flatten() {
            if !is_valid_quantity(&quantity.0) {
                return Err(SpecError::Quantity {
                    field,
                    resource: resource.clone(),
                    value: quantity.0.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Name, namespace and controller reference of an object a Memcached owns.
fn owned_identity(mc: &Memcached) -> Result<(String, String, OwnerReference), SpecError> {
    let name = mc.meta().name.clone().ok_or(SpecError::Metadata("name"))?;
    let namespace = mc.namespace().ok_or(SpecError::Metadata("namespace"))?;
    let owner = controller_owner_ref(mc).map_err(|_| SpecError::Metadata("uid"))?;
    Ok((name, namespace, owner))
}

/// The headless Service `<name>` a valid Memcached owns: its DNS name resolves to the address of
/// every ready memcached Pod, which is how memcached clients (each picking its server by key)
/// find all of them.
pub fn build_headless_service(mc: &Memcached) -> Result<Service, SpecError> {
    validate(mc)?;
    let (name, namespace, owner) = owned_identity(mc)?;
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(standard_labels(APP, &name)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(APP, &name)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: mc.spec.container_port,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// The Deployment a valid Memcached should own.
pub fn build_deployment(mc: &Memcached) -> Result<Deployment, SpecError> {
    validate(mc)?;
    let (name, namespace, owner) = owned_identity(mc)?;
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
            port: IntOrString::String(PORT_NAME.into()),
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
            name: Some(PORT_NAME.into()),
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
            progress_deadline_seconds: spec.progress_deadline_seconds,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemcachedSpec;

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
                resources: None,
                progress_deadline_seconds: None,
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
        mc.spec.image = "memcached:1.6 --evil".into();
        assert!(matches!(validate(&mc), Err(SpecError::ImageWhitespace(_))));
        mc.spec.image = "memcached".into();
        mc.metadata.name = Some("a".repeat(64));
        assert_eq!(validate(&mc), Err(SpecError::NameTooLong(64)));
    }

    #[test]
    fn an_invalid_resource_quantity_is_refused_naming_the_field() {
        let mut mc = memcached(SAMPLE);
        mc.spec.resources = Some(
            serde_json::from_value(serde_json::json!({
                "requests": {"cpu": "250m", "memory": "64Mi"},
                "limits": {"memory": "lots"}
            }))
            .expect("resources"),
        );
        let err = validate(&mc).expect_err("invalid quantity");
        assert_eq!(
            err,
            SpecError::Quantity {
                field: "limits",
                resource: "memory".into(),
                value: "lots".into()
            }
        );
        assert!(err.to_string().contains("spec.resources.limits.memory"), "{err}");
        assert!(build_headless_service(&mc).is_err());
    }

    #[test]
    fn the_headless_service_selects_the_pods_on_the_memcached_port() {
        let mut mc = memcached(SAMPLE);
        mc.spec.container_port = 11311;
        let service = build_headless_service(&mc).expect("valid");
        let deployment = build_deployment(&mc).expect("valid");
        assert_eq!(service.metadata.name.as_deref(), Some("cache"));
        assert_eq!(service.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(service.metadata.owner_references, deployment.metadata.owner_references);
        let labels = service.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("capstan")
        );
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some("cache")
        );
        let spec = service.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
        let pod_labels = deployment
            .spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .expect("pod labels");
        let selector = spec.selector.expect("selector");
        assert!(!selector.is_empty());
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "the selector matches the Pods"
        );
        let port = &spec.ports.expect("ports")[0];
        assert_eq!(port.port, 11311);
        assert_eq!(port.target_port, Some(IntOrString::String("memcached".into())));
        let container_port = &deployment.spec.template.spec.expect("pod").containers[0]
            .ports
            .clone()
            .expect("ports")[0];
        assert_eq!(container_port.name.as_deref(), Some("memcached"), "targetPort names it");
        assert_eq!(spec.publish_not_ready_addresses, None, "only ready Pods resolve");
    }
}
