//! The Services: a headless one per StatefulSet for the Pods' FQDNs, the master and replicas
//! Services by role label, and the Sentinel Service clients ask.
use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::{apis::meta::v1::OwnerReference, util::intstr::IntOrString},
};

use super::meta;
use crate::{
    config::{REDIS_PORT, SENTINEL_PORT},
    names::{
        COMPONENT_REDIS, COMPONENT_SENTINEL, ROLE_LABEL, ROLE_MASTER, component_labels, component_selector,
        headless_service, master_service_name, replicas_service_name, sentinel_headless_service, sentinel_service_name,
    },
};

fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn service(
    service_name: String,
    namespace: &str,
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    port: ServicePort,
    headless: bool,
    owner: &OwnerReference,
) -> Service {
    Service {
        metadata: meta(service_name, namespace, labels, owner),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![port]),
            cluster_ip: headless.then(|| "None".to_owned()),
            // Peers must resolve each other's FQDNs before they are ready: a replica is only
            // ready once linked to a master it found by name.
            publish_not_ready_addresses: headless.then_some(true),
            ..Default::default()
        }),
        status: None,
    }
}

/// `<name>-headless`: the Redis StatefulSet's serviceName, giving each Pod its stable FQDN.
pub(crate) fn redis_headless_service(name: &str, namespace: &str, owner: &OwnerReference) -> Service {
    service(
        headless_service(name),
        namespace,
        component_labels(name, COMPONENT_REDIS),
        component_selector(name, COMPONENT_REDIS),
        service_port("redis", REDIS_PORT),
        true,
        owner,
    )
}

/// `<name>-master` or `<name>-replicas`: the Redis Pods the healer labelled with that role.
pub(crate) fn role_service(name: &str, namespace: &str, role: &str, owner: &OwnerReference) -> Service {
    let mut selector = component_selector(name, COMPONENT_REDIS);
    selector.insert(ROLE_LABEL.to_owned(), role.to_owned());
    let service_name = if role == ROLE_MASTER {
        master_service_name(name)
    } else {
        replicas_service_name(name)
    };
    service(
        service_name,
        namespace,
        component_labels(name, COMPONENT_REDIS),
        selector,
        service_port("redis", REDIS_PORT),
        false,
        owner,
    )
}

/// `<name>-sentinel`: where Sentinel-aware clients ask for the master.
pub(crate) fn sentinel_service(name: &str, namespace: &str, owner: &OwnerReference) -> Service {
    service(
        sentinel_service_name(name),
        namespace,
        component_labels(name, COMPONENT_SENTINEL),
        component_selector(name, COMPONENT_SENTINEL),
        service_port("sentinel", SENTINEL_PORT),
        false,
        owner,
    )
}

/// `<name>-sentinel-headless`: the Sentinel StatefulSet's serviceName, for the FQDNs the
/// Sentinels announce to each other.
pub(crate) fn sentinel_headless(name: &str, namespace: &str, owner: &OwnerReference) -> Service {
    service(
        sentinel_headless_service(name),
        namespace,
        component_labels(name, COMPONENT_SENTINEL),
        component_selector(name, COMPONENT_SENTINEL),
        service_port("sentinel", SENTINEL_PORT),
        true,
        owner,
    )
}
