//! Pure builders: every object a RedisHA owns, from its spec and what the caller has read (the
//! owner reference, the cluster domain, the auth Secret's hash). No client, no I/O.
use std::collections::BTreeMap;

use capstan_runtime::labels::{COMPONENT, selector_labels, standard_labels};
use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy},
        core::v1::{
            Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            EnvVar, EnvVarSource, ExecAction, LifecycleHandler, ObjectFieldSelector, PersistentVolumeClaim,
            PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec,
            Probe, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec,
            TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::{
    config::{
        self, ConfigError, ENV_PASSWORD, ENV_POD_NAME, ENV_REDISCLI_AUTH, REDIS_PORT, Rendering, SENTINEL_PORT,
        headless_service, sentinel_headless_service, sentinel_set,
    },
    crd::{MAX_REPLICAS, MAX_SENTINELS, RedisHA},
};

/// `app.kubernetes.io/name` of everything the RedisHA controller creates.
pub const APP: &str = "redis-ha";
pub const COMPONENT_REDIS: &str = "redis";
pub const COMPONENT_SENTINEL: &str = "sentinel";
/// The label the healer keeps on each Redis Pod; the master and replicas Services select it.
pub const ROLE_LABEL: &str = "redis.capstan.dev/role";
pub const ROLE_MASTER: &str = "master";
pub const ROLE_REPLICA: &str = "replica";
/// Pod template annotations whose change rolls the Pods (in the order the operator chooses).
pub const CONFIG_HASH_ANNOTATION: &str = "redis.capstan.dev/config-hash";
pub const AUTH_HASH_ANNOTATION: &str = "redis.capstan.dev/auth-hash";
/// The official redis image's numeric user and group, so `runAsNonRoot` can be verified.
pub const REDIS_UID: i64 = 999;

const REDIS_CONTAINER: &str = "redis";
const SENTINEL_CONTAINER: &str = "sentinel";
const SENTINEL_INIT_CONTAINER: &str = "seed-sentinel-conf";
const CONFIG_VOLUME: &str = "config";
const RUNTIME_VOLUME: &str = "runtime";
const DATA_VOLUME: &str = "data";
const BOOTSTRAP_VOLUME: &str = "bootstrap";

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
pub fn validate(rha: &RedisHA) -> Result<(), SpecError> {
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
pub fn check_auth_kept(rha: &RedisHA, running: Option<&StatefulSet>) -> Result<(), SpecError> {
    let runs_with_password = running
        .and_then(|set| set.spec.template.metadata.as_ref()?.annotations.as_ref())
        .is_some_and(|annotations| annotations.contains_key(AUTH_HASH_ANNOTATION));
    if rha.spec.auth.is_none() && runs_with_password {
        return Err(SpecError::AuthRemoved);
    }
    Ok(())
}

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

/// The Redis StatefulSet's `replicas`. A scale-down never removes the master: while the master's
/// ordinal is at or above the desired count, the set keeps it (the healer fails over first); and
/// while the master is unknown (an operator that just started) the set is never lowered.
/// A single Redis is never rolled in place (without storage it would come back empty): while a
/// roll is pending (`rolling`, see [`roll_pending`]) a second Pod surges from the new template,
/// takes over by a planned failover while the first is rolled, and hands back before the set
/// shrinks to one again.
/// Pods that never ran (never got an IP: unschedulable, Pending) hold no data, so with them
/// alone at the ordinals a scale-down removes (`removed_never_ran`) it is never held.
pub fn redis_replicas(
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
pub fn build_children(rha: &RedisHA, inputs: Inputs<'_>) -> Result<Children, SpecError> {
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

pub fn name_and_namespace(rha: &RedisHA) -> Result<(String, String), SpecError> {
    let name = rha.metadata.name.clone().ok_or(SpecError::Metadata("name"))?;
    let namespace = rha.namespace().ok_or(SpecError::Metadata("namespace"))?;
    Ok((name, namespace))
}

/// Names of the children, for callers that look them up. A configuration ConfigMap is named by
/// its content's hash ([`config_hash`]) and immutable: the kubelet updates a mounted ConfigMap in
/// place, so under one name for every revision a Pod restarting for any reason (the master
/// included) would load a new configuration before the ordered roll reached it.
pub fn redis_config_map_name(name: &str, config_hash: &str) -> String {
    format!("{name}-config-{}", short_hash(config_hash))
}
pub fn sentinel_config_map_name(name: &str, config_hash: &str) -> String {
    format!("{name}-sentinel-config-{}", short_hash(config_hash))
}
fn short_hash(hash: &str) -> &str {
    hash.get(..10).unwrap_or(hash)
}

/// Whether Pods may still mount an older configuration ConfigMap, which the prune must then
/// leave: a set about to move to another one (`stored` against `desired`), or one whose roll is
/// not finished (its controller has not seen the spec, or not every Pod runs the newest
/// revision; with `OnDelete` the healer rolls Redis one Pod at a time).
pub fn older_config_in_use(stored: &[&StatefulSet], desired: &[StatefulSet]) -> bool {
    let wanted: Vec<String> = desired.iter().flat_map(config_maps_mounted).collect();
    stored
        .iter()
        .any(|set| roll_pending(set) || config_maps_mounted(set).iter().any(|m| !wanted.contains(m)))
}

/// The password the Sentinel Pods' template carries (by its [`auth_hash`]). A rolled Sentinel
/// takes only the password it started with, and Redis Pods not rolled yet still send the
/// previous one to the Sentinels (preStop handovers, start scripts): so the Sentinels, which
/// the healer has made accept both meanwhile, roll to a new password (or to one at all) only
/// once the Redis set runs it on every Pod.
pub fn sentinel_auth_hash(
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

/// Whether a StatefulSet's Pods may not all run its newest template: its controller has not
/// seen the spec yet, or fewer Pods are updated than exist.
pub fn roll_pending(set: &StatefulSet) -> bool {
    let status = set.status.as_ref();
    let seen = status.and_then(|s| s.observed_generation) >= set.metadata.generation;
    let replicas = status.map_or(0, |s| s.replicas);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    !seen || updated < replicas
}

/// The configuration ConfigMap a StatefulSet's Pod template mounts (the bootstrap record aside).
pub fn config_maps_mounted(set: &StatefulSet) -> Vec<String> {
    set.spec
        .template
        .spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter(|volume| volume.name == CONFIG_VOLUME)
        .filter_map(|volume| Some(volume.config_map.as_ref()?.name.clone()))
        .collect()
}
pub fn bootstrap_config_map_name(name: &str) -> String {
    format!("{name}-bootstrap")
}
pub fn master_service_name(name: &str) -> String {
    format!("{name}-master")
}
pub fn replicas_service_name(name: &str) -> String {
    format!("{name}-replicas")
}
/// The Sentinel Service clients ask (`status.sentinel.service`).
pub fn sentinel_service_name(name: &str) -> String {
    sentinel_set(name)
}

/// Labels selecting one component's Pods: stable, so safe in a StatefulSet's immutable selector,
/// and distinct per component so the two sets never select each other's Pods.
pub fn component_selector(name: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(APP, name);
    labels.insert(COMPONENT.to_owned(), component.to_owned());
    labels
}

fn component_labels(name: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = standard_labels(APP, name);
    labels.insert(COMPONENT.to_owned(), component.to_owned());
    labels
}

fn meta(name: String, namespace: &str, labels: BTreeMap<String, String>, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
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
pub fn config_hash(config_map: &ConfigMap) -> String {
    let data = config_map.data.clone().unwrap_or_default();
    let parts: Vec<&[u8]> = data.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]).collect();
    sha256_hex16(&parts)
}

/// Why the auth Secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
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
pub fn auth_hash(secret: &Secret, key: &str, salt: &str) -> Result<String, AuthError> {
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

pub fn redis_config_map(
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
        config::redis_config_data(rendering)?,
        owner,
    ))
}

pub fn sentinel_config_map(name: &str, namespace: &str, rendering: &Rendering, owner: &OwnerReference) -> ConfigMap {
    config_map(
        |hash| sentinel_config_map_name(name, hash),
        name,
        namespace,
        COMPONENT_SENTINEL,
        config::sentinel_config_data(rendering),
        owner,
    )
}

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
pub fn redis_headless_service(name: &str, namespace: &str, owner: &OwnerReference) -> Service {
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
pub fn role_service(name: &str, namespace: &str, role: &str, owner: &OwnerReference) -> Service {
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
pub fn sentinel_service(name: &str, namespace: &str, owner: &OwnerReference) -> Service {
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
pub fn sentinel_headless(name: &str, namespace: &str, owner: &OwnerReference) -> Service {
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

fn env_pod_name() -> EnvVar {
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

fn env_password(rha: &RedisHA, var: &str) -> Option<EnvVar> {
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

fn script_command(file: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        format!("{}/{file}", config::Layout::default().config_dir),
    ]
}

fn exec_probe(file: &str, period_seconds: i32) -> Probe {
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

fn tcp_probe(port: &str, initial_delay_seconds: i32) -> Probe {
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

fn restricted_container_security() -> SecurityContext {
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

fn pod_security() -> PodSecurityContext {
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
fn spread(selector: &BTreeMap<String, String>) -> Affinity {
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

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn config_volume(config_map: String) -> Volume {
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
fn bootstrap_volume(name: &str) -> Volume {
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

/// The bootstrap record: what Pods read at start that must not be part of their template — the
/// Redis count the spec wants (`min-replicas-to-write`), and the last master the operator
/// verified, which Sentinels that all restarted at once seed from (their own state is on an
/// emptyDir). `master` is None while none is known (the record then has no master).
pub fn bootstrap_config_map(
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

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn template_annotations(config_hash: &str, auth_hash: Option<&str>) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned())]);
    if let Some(hash) = auth_hash {
        annotations.insert(AUTH_HASH_ANNOTATION.to_owned(), hash.to_owned());
    }
    annotations
}

/// The Redis StatefulSet `<name>`: Parallel, so one stuck ordinal never blocks the others, and
/// OnDelete, so the operator rolls Pods by role (replicas, a failover, then the old master).
pub fn redis_stateful_set(
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
pub fn sentinel_stateful_set(
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

/// A PodDisruptionBudget (`maxUnavailable: 1`) for one StatefulSet's Pods.
pub fn pod_disruption_budget(
    name: &str,
    namespace: &str,
    set_name: &str,
    component: &str,
    owner: &OwnerReference,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(set_name.to_owned(), namespace, component_labels(name, component), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(component_selector(name, component)),
                match_expressions: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    const SAMPLE: &str = "
apiVersion: cache.capstan.dev/v1alpha1
kind: RedisHA
metadata: {name: cache, namespace: apps, uid: uid-1}
spec:
  replicas: 3
  auth: {secretName: cache-auth}
  config: {maxmemory: 64mb}
";

    fn rha(yaml: &str) -> RedisHA {
        serde_yaml::from_str(yaml).expect("valid RedisHA YAML")
    }

    /// What the reconcile supplies for [`SAMPLE`]: its password read, three Redis, no master yet.
    fn sample_inputs(owner: &OwnerReference) -> Inputs<'_> {
        Inputs {
            owner,
            cluster_domain: "cluster.local",
            auth_hash: Some("h"),
            sentinel_auth_hash: Some("h"),
            redis_replicas: 3,
            recorded_master: None,
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "cache.capstan.dev/v1alpha1".into(),
            kind: "RedisHA".into(),
            name: "cache".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn children(rha: &RedisHA) -> Children {
        let owner = owner();
        build_children(
            rha,
            Inputs {
                owner: &owner,
                cluster_domain: "cluster.local",
                auth_hash: Some("abc123"),
                sentinel_auth_hash: Some("abc123"),
                redis_replicas: rha.spec.replicas,
                recorded_master: None,
            },
        )
        .expect("valid")
    }

    fn set<'a>(children: &'a Children, name: &str) -> &'a StatefulSet {
        children
            .stateful_sets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .expect("StatefulSet")
    }

    fn svc<'a>(children: &'a Children, name: &str) -> &'a ServiceSpec {
        children
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .and_then(|s| s.spec.as_ref())
            .expect("Service")
    }

    #[test]
    fn every_child_is_owned_labelled_and_named_as_the_issue_fixes() {
        let children = children(&rha(SAMPLE));
        let metas: Vec<&ObjectMeta> = children
            .config_maps
            .iter()
            .map(|o| &o.metadata)
            .chain(children.services.iter().map(|o| &o.metadata))
            .chain(children.stateful_sets.iter().map(|o| &o.metadata))
            .chain(children.pod_disruption_budgets.iter().map(|o| &o.metadata))
            .collect();
        let mut names: Vec<&str> = metas.iter().filter_map(|m| m.name.as_deref()).collect();
        names.sort_unstable();
        let redis_config = redis_config_map_name("cache", &config_hash(&children.config_maps[0]));
        let sentinel_config = sentinel_config_map_name("cache", &config_hash(&children.config_maps[1]));
        assert_eq!(
            names,
            [
                "cache",
                "cache",
                "cache-bootstrap",
                redis_config.as_str(),
                "cache-headless",
                "cache-master",
                "cache-replicas",
                "cache-sentinel",
                "cache-sentinel",
                "cache-sentinel",
                sentinel_config.as_str(),
                "cache-sentinel-headless"
            ]
        );
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("apps"));
            assert_eq!(meta.owner_references.as_deref(), Some(&[owner()][..]));
            let labels = meta.labels.as_ref().expect("labels");
            assert_eq!(
                labels.get("app.kubernetes.io/name").map(String::as_str),
                Some("redis-ha")
            );
            assert_eq!(
                labels.get("app.kubernetes.io/instance").map(String::as_str),
                Some("cache")
            );
            assert_eq!(
                labels.get("app.kubernetes.io/managed-by").map(String::as_str),
                Some("capstan")
            );
            assert!(labels.contains_key("app.kubernetes.io/component"));
        }
    }

    #[test]
    fn the_redis_statefulset_is_parallel_on_delete_behind_the_headless_service() {
        let children = children(&rha(SAMPLE));
        let spec = &set(&children, "cache").spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("cache-headless"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()),
            Some("OnDelete")
        );
        let selector = spec.selector.match_labels.as_ref().expect("selector");
        assert_eq!(selector.get(COMPONENT).map(String::as_str), Some("redis"));
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        assert!(selector.iter().all(|(k, v)| template_labels.get(k) == Some(v)));
        assert!(
            !template_labels.contains_key(ROLE_LABEL),
            "roles are the healer's to set"
        );
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .expect("annotations");
        assert_eq!(
            annotations.get(AUTH_HASH_ANNOTATION).map(String::as_str),
            Some("abc123")
        );
        assert_eq!(
            annotations.get(CONFIG_HASH_ANNOTATION),
            Some(&config_hash(&children.config_maps[0]))
        );

        let headless = svc(&children, "cache-headless");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        assert_eq!(headless.ports.as_ref().expect("ports")[0].port, 6379);
        assert_eq!(headless.selector.as_ref(), Some(selector));
    }

    #[test]
    fn role_services_select_the_labelled_redis_pods_and_sentinel_selects_its_own() {
        let children = children(&rha(SAMPLE));
        let master = svc(&children, "cache-master").selector.clone().expect("selector");
        assert_eq!(master.get(ROLE_LABEL).map(String::as_str), Some("master"));
        assert_eq!(master.get(COMPONENT).map(String::as_str), Some("redis"));
        assert_eq!(
            master.get("app.kubernetes.io/instance").map(String::as_str),
            Some("cache")
        );
        let replicas = svc(&children, "cache-replicas").selector.clone().expect("selector");
        assert_eq!(replicas.get(ROLE_LABEL).map(String::as_str), Some("replica"));
        assert_eq!(svc(&children, "cache-master").cluster_ip, None, "a ClusterIP Service");
        let sentinel = svc(&children, "cache-sentinel");
        assert_eq!(sentinel.ports.as_ref().expect("ports")[0].port, 26379);
        assert_eq!(
            sentinel
                .selector
                .as_ref()
                .and_then(|s| s.get(COMPONENT))
                .map(String::as_str),
            Some("sentinel")
        );
        let sentinel_headless = svc(&children, "cache-sentinel-headless");
        assert_eq!(sentinel_headless.publish_not_ready_addresses, Some(true));
        let sentinel_set = &set(&children, "cache-sentinel").spec;
        assert_eq!(sentinel_set.service_name.as_deref(), Some("cache-sentinel-headless"));
        assert_eq!(sentinel_set.replicas, Some(3));
        assert_eq!(
            sentinel_set
                .selector
                .match_labels
                .as_ref()
                .and_then(|s| s.get(COMPONENT))
                .map(String::as_str),
            Some("sentinel")
        );
    }

    #[test]
    fn pods_run_restricted_as_999_with_soft_anti_affinity() {
        let children = children(&rha(SAMPLE));
        for set_name in ["cache", "cache-sentinel"] {
            let pod = set(&children, set_name).spec.template.spec.as_ref().expect("pod");
            let security = pod.security_context.as_ref().expect("pod security");
            assert_eq!(
                (
                    security.run_as_user,
                    security.run_as_group,
                    security.fs_group,
                    security.run_as_non_root
                ),
                (Some(999), Some(999), Some(999), Some(true))
            );
            for container in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
                let sc = container.security_context.as_ref().expect("container security");
                assert_eq!(sc.allow_privilege_escalation, Some(false));
                assert_eq!(sc.run_as_user, Some(999));
                assert_eq!(
                    sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                    Some(vec!["ALL".to_owned()])
                );
            }
            let anti = pod
                .affinity
                .as_ref()
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .expect("anti-affinity");
            assert!(anti.required_during_scheduling_ignored_during_execution.is_none());
            let preferred = anti
                .preferred_during_scheduling_ignored_during_execution
                .as_ref()
                .expect("preferred");
            assert_eq!(preferred[0].pod_affinity_term.topology_key, "kubernetes.io/hostname");
        }
    }

    #[test]
    fn the_password_reaches_pods_only_through_secret_references() {
        let children = children(&rha(SAMPLE));
        let pod = set(&children, "cache").spec.template.spec.as_ref().expect("pod");
        let container = &pod.containers[0];
        let env = container.env.as_ref().expect("env");
        for var in [ENV_PASSWORD, ENV_REDISCLI_AUTH] {
            let entry = env.iter().find(|e| e.name == var).expect("password env");
            let secret = entry
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .expect("secret ref");
            assert_eq!((secret.name.as_str(), secret.key.as_str()), ("cache-auth", "password"));
            assert_eq!(entry.value, None);
        }
        assert_eq!(
            container.command.as_ref().expect("command")[1],
            "/etc/redis-ha/redis-start.sh"
        );
        let pre_stop = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .expect("preStop");
        assert_eq!(
            pre_stop.exec.as_ref().and_then(|e| e.command.as_ref()).expect("exec")[1],
            "/etc/redis-ha/redis-prestop.sh"
        );
        let sentinel_pod = set(&children, "cache-sentinel")
            .spec
            .template
            .spec
            .as_ref()
            .expect("pod");
        let init = &sentinel_pod.init_containers.as_ref().expect("init")[0];
        assert!(init.env.as_ref().expect("env").iter().any(|e| e.name == ENV_PASSWORD));
        assert_eq!(
            sentinel_pod.containers[0].command.as_deref(),
            Some(&["redis-sentinel".to_owned(), "/run/redis-ha/sentinel.conf".to_owned()][..])
        );
        // The readiness probe runs in the Sentinel container and authenticates too.
        let sentinel_env = sentinel_pod.containers[0].env.as_ref().expect("env");
        assert!(sentinel_env.iter().any(|e| e.name == ENV_REDISCLI_AUTH));
    }

    /// A set whose Pod template carries `hash` and whose status says whether its roll is done.
    fn running_set(name: &str, hash: Option<&str>, rolled: bool) -> StatefulSet {
        let mut set = StatefulSet::default();
        set.metadata.name = Some(name.to_owned());
        set.metadata.generation = Some(2);
        set.spec.template.metadata = Some(ObjectMeta {
            annotations: Some(template_annotations("c", hash)),
            ..Default::default()
        });
        set.status = Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
            observed_generation: Some(2),
            replicas: 3,
            updated_replicas: Some(if rolled { 3 } else { 1 }),
            ..Default::default()
        });
        set
    }

    #[test]
    fn the_sentinels_follow_a_password_change_once_every_redis_pod_runs_it() {
        let sentinels_on = |hash| running_set("cache-sentinel", hash, true);
        // First creation: nothing to wait for.
        assert_eq!(sentinel_auth_hash(Some("new"), None, None).as_deref(), Some("new"));
        // A rotation: held at the old password while the Redis Pods roll, then released.
        let old_sentinels = sentinels_on(Some("old"));
        let cases = [
            (running_set("cache", Some("old"), true), Some("old")),
            (running_set("cache", Some("new"), false), Some("old")),
            (running_set("cache", Some("new"), true), Some("new")),
        ];
        for (redis, expected) in cases {
            assert_eq!(
                sentinel_auth_hash(Some("new"), Some(&redis), Some(&old_sentinels)).as_deref(),
                expected
            );
        }
        // spec.auth set on a running set: the Sentinels get no password before the Redis Pods.
        let open = sentinels_on(None);
        let rolling = running_set("cache", Some("new"), false);
        assert_eq!(sentinel_auth_hash(Some("new"), Some(&rolling), Some(&open)), None);
        let rha = rha(SAMPLE);
        let owner = owner();
        let held = Inputs {
            sentinel_auth_hash: None,
            ..sample_inputs(&owner)
        };
        let children = build_children(&rha, held).expect("builds");
        let sentinel_pod = set(&children, "cache-sentinel")
            .spec
            .template
            .spec
            .clone()
            .expect("pod");
        let init = &sentinel_pod.init_containers.as_ref().expect("init")[0];
        assert!(
            !init.env.as_ref().expect("env").iter().any(|e| e.name == ENV_PASSWORD),
            "no password for the Sentinels yet"
        );
        assert!(
            set(&children, "cache")
                .spec
                .template
                .spec
                .as_ref()
                .expect("pod")
                .containers[0]
                .env
                .as_ref()
                .expect("env")
                .iter()
                .any(|e| e.name == ENV_PASSWORD),
            "the Redis Pods roll to the password first"
        );
    }

    #[test]
    fn storage_adds_a_claim_template_and_none_means_an_empty_dir() {
        let without = children(&rha(SAMPLE));
        let spec = set(&without, "cache").spec.clone();
        assert!(spec.volume_claim_templates.is_none());
        let volumes = spec.template.spec.and_then(|p| p.volumes).expect("volumes");
        assert!(volumes.iter().any(|v| v.name == "data" && v.empty_dir.is_some()));

        let with = children(&rha(&format!(
            "{SAMPLE}  storage: {{size: 2Gi, storageClassName: fast}}\n"
        )));
        let spec = set(&with, "cache").spec.clone();
        let claim = &spec.volume_claim_templates.expect("claims")[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        let claim_spec = claim.spec.as_ref().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.as_str()),
            Some("2Gi")
        );
        assert!(claim.metadata.owner_references.is_none(), "claims outlive the RedisHA");
        let volumes = spec.template.spec.and_then(|p| p.volumes).expect("volumes");
        assert!(!volumes.iter().any(|v| v.name == "data"));
    }

    #[test]
    fn pod_disruption_budgets_allow_one_pod_down_per_set_in_both_versions() {
        let children = children(&rha(SAMPLE));
        assert_eq!(children.pod_disruption_budgets.len(), 2);
        for pdb in &children.pod_disruption_budgets {
            let spec = pdb.spec.as_ref().expect("spec");
            assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
            let beta = capstan_runtime::compat::PodDisruptionBudgetV1Beta1::from(pdb.clone());
            assert_eq!(
                (beta.api_version.as_str(), beta.kind.as_str()),
                ("policy/v1beta1", "PodDisruptionBudget")
            );
            assert_eq!(beta.metadata, pdb.metadata);
            assert_eq!(beta.spec, pdb.spec);
        }
        let sentinel = children
            .pod_disruption_budgets
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("cache-sentinel"))
            .expect("sentinel pdb");
        let selector = sentinel
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.match_labels.as_ref());
        assert_eq!(selector, Some(&component_selector("cache", COMPONENT_SENTINEL)));
    }

    #[test]
    fn a_config_or_password_change_changes_the_template_but_a_scale_does_not() {
        let base = children(&rha(SAMPLE));
        let template = |c: &Children| set(c, "cache").spec.template.clone();
        let scaled = children(&rha(&SAMPLE.replace("replicas: 3", "replicas: 5")));
        assert_eq!(template(&base), template(&scaled));
        assert_eq!(set(&scaled, "cache").spec.replicas, Some(5));
        let reconfigured = children(&rha(&SAMPLE.replace("64mb", "128mb")));
        assert_ne!(template(&base), template(&reconfigured));

        let secret = |pw: &str| Secret {
            metadata: ObjectMeta {
                name: Some("cache-auth".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "password".to_owned(),
                ByteString(pw.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        let first = auth_hash(&secret("one"), "password", "uid-1").expect("hash");
        assert_eq!(first, auth_hash(&secret("one"), "password", "uid-1").expect("hash"));
        assert_ne!(first, auth_hash(&secret("two"), "password", "uid-1").expect("hash"));
        assert_eq!(first.len(), 16);
        assert!(matches!(
            auth_hash(&secret("one"), "other", "uid-1"),
            Err(AuthError::MissingKey { .. })
        ));
        assert!(matches!(
            auth_hash(&secret("line\n"), "password", "uid-1"),
            Err(AuthError::Invalid { .. })
        ));
    }

    #[test]
    fn invalid_specs_are_refused_with_a_reason() {
        let owner = owner();
        let inputs = sample_inputs(&owner);
        let mut bad = rha(SAMPLE);
        bad.spec.replicas = 10;
        assert_eq!(build_children(&bad, inputs).err(), Some(SpecError::Replicas(10)));
        let mut bad = rha(SAMPLE);
        bad.spec.sentinel.quorum = Some(4);
        assert_eq!(
            validate(&bad),
            Err(SpecError::Quorum {
                quorum: 4,
                sentinels: 3
            })
        );
        let mut bad = rha(SAMPLE);
        bad.spec.config.insert("replicaof".into(), "x 1".into());
        assert_eq!(
            validate(&bad),
            Err(SpecError::Config(ConfigError::OwnedDirective("replicaof".into())))
        );
        let unread = Inputs {
            auth_hash: None,
            sentinel_auth_hash: None,
            redis_replicas: 3,
            recorded_master: None,
            ..inputs
        };
        assert_eq!(
            build_children(&rha(SAMPLE), unread).err(),
            Some(SpecError::AuthNotRead("cache-auth".into()))
        );
    }

    #[test]
    fn each_configuration_is_an_immutable_configmap_named_by_its_content() {
        let owner = owner();
        let inputs = sample_inputs(&owner);
        let before = build_children(&rha(SAMPLE), inputs).expect("builds");
        let mut changed = rha(SAMPLE);
        changed.spec.config.insert("maxmemory".into(), "96mb".into());
        let after = build_children(&changed, inputs).expect("builds");
        for children in [&before, &after] {
            assert!(children.config_maps[..2].iter().all(|c| c.immutable == Some(true)));
            assert_eq!(children.config_maps[2].name_any(), "cache-bootstrap");
            assert_eq!(
                children.config_maps[2].immutable, None,
                "the record changes with each failover"
            );
            for (set, config_map) in children.stateful_sets.iter().zip(&children.config_maps) {
                assert_eq!(config_maps_mounted(set), [config_map.name_any()], "{}", set.name_any());
            }
        }
        let name = |c: &Children, i: usize| c.config_maps[i].name_any();
        assert_ne!(
            name(&before, 0),
            name(&after, 0),
            "a new Redis configuration, a new name"
        );
        assert!(name(&after, 0).starts_with("cache-config-"));
        assert_eq!(name(&before, 1), name(&after, 1), "the Sentinels' did not change");
        assert_eq!(
            name(&before, 0),
            name(&build_children(&rha(SAMPLE), inputs).expect("builds"), 0),
            "stable for the same content"
        );
    }

    #[test]
    fn an_older_configuration_stays_while_any_pod_may_mount_it() {
        let owner = owner();
        let inputs = sample_inputs(&owner);
        let current = build_children(&rha(SAMPLE), inputs).expect("builds").stateful_sets;
        let mut changed = rha(SAMPLE);
        changed.spec.config.insert("maxmemory".into(), "96mb".into());
        let next = build_children(&changed, inputs).expect("builds").stateful_sets;
        let with_status = |set: &StatefulSet, generation: i64, observed: i64, updated: i32| {
            let mut set = set.clone();
            set.metadata.generation = Some(generation);
            set.status = Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
                observed_generation: Some(observed),
                replicas: 3,
                updated_replicas: Some(updated),
                ..Default::default()
            });
            set
        };
        let rolled = with_status(&current[0], 2, 2, 3);
        assert!(!older_config_in_use(&[&rolled], &current), "nothing older left");
        assert!(older_config_in_use(&[&rolled], &next), "about to move to another one");
        let rolling = with_status(&next[0], 3, 3, 1);
        assert!(
            older_config_in_use(&[&rolling], &next),
            "two Pods still on the old revision"
        );
        let unseen = with_status(&next[0], 3, 2, 3);
        assert!(
            older_config_in_use(&[&unseen], &next),
            "its controller has not seen the spec"
        );
        assert!(!older_config_in_use(&[], &next), "first creation");
    }

    #[test]
    fn removing_auth_from_a_set_running_with_a_password_is_refused() {
        let owner = owner();
        let inputs = sample_inputs(&owner);
        let with_auth = rha(SAMPLE);
        let children = build_children(&with_auth, inputs).expect("builds");
        let running = children
            .stateful_sets
            .into_iter()
            .find(|s| s.name_any() == "cache")
            .expect("Redis set");
        let mut without = with_auth.clone();
        without.spec.auth = None;
        assert_eq!(check_auth_kept(&without, Some(&running)), Err(SpecError::AuthRemoved));
        assert!(SpecError::AuthRemoved.to_string().contains("set spec.auth back"));
        assert_eq!(check_auth_kept(&with_auth, Some(&running)), Ok(()), "auth kept");
        assert_eq!(check_auth_kept(&without, None), Ok(()), "nothing runs yet");
        let no_auth_inputs = Inputs {
            auth_hash: None,
            sentinel_auth_hash: None,
            ..inputs
        };
        let plain = build_children(&without, no_auth_inputs).expect("builds");
        let plain_set = plain
            .stateful_sets
            .into_iter()
            .find(|s| s.name_any() == "cache")
            .expect("Redis set");
        assert_eq!(
            check_auth_kept(&without, Some(&plain_set)),
            Ok(()),
            "never had a password"
        );
    }

    #[test]
    fn a_scale_down_keeps_the_master_and_waits_for_it_to_be_known() {
        // Scaling up is never held.
        assert_eq!(redis_replicas(5, Some(3), Some(0), false, false), 5);
        assert_eq!(redis_replicas(5, Some(3), None, false, false), 5);
        // Down from 5 to 3: held while the master is ordinal 4 or 3, free once it is below 3.
        assert_eq!(redis_replicas(3, Some(5), Some(4), false, false), 5);
        assert_eq!(redis_replicas(3, Some(5), Some(3), false, false), 4);
        assert_eq!(redis_replicas(3, Some(5), Some(1), false, false), 3);
        // An operator that does not know the master yet never lowers the set.
        assert_eq!(redis_replicas(3, Some(5), None, false, false), 5);
        assert_eq!(redis_replicas(3, None, None, false, false), 3);
        // Several Redis roll among themselves; one alone gets a surge Pod to hand over to.
        assert_eq!(redis_replicas(3, Some(3), Some(0), true, false), 3);
        assert_eq!(redis_replicas(1, Some(1), Some(0), true, false), 2);
        // Rolled, the surge Pod (the master by then) hands back before the set shrinks.
        assert_eq!(redis_replicas(1, Some(2), Some(1), false, false), 2);
        assert_eq!(redis_replicas(1, Some(2), Some(0), false, false), 1);
        // Pods that never ran (Pending, unschedulable) hold no data: not held for them.
        assert_eq!(redis_replicas(3, Some(5), None, false, true), 3);
        assert_eq!(
            redis_replicas(3, Some(5), Some(4), false, true),
            5,
            "a known master still moves first"
        );
    }
}
