//! The builders' unit tests, from inline YAML RedisHAs.
use super::{pod::template_annotations, stateful_sets::config_maps_mounted, *};
use crate::{
    config::{ConfigError, ENV_PASSWORD, ENV_REDISCLI_AUTH},
    names::{
        AUTH_HASH_ANNOTATION, COMPONENT_SENTINEL, CONFIG_HASH_ANNOTATION, ROLE_LABEL, component_selector,
        redis_config_map_name, sentinel_config_map_name,
    },
    reconcile::validate::{SpecError, check_auth_kept, validate},
};
use capstan_runtime::labels::COMPONENT;
use k8s_openapi::{
    ByteString,
    api::core::v1::{Secret, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

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
