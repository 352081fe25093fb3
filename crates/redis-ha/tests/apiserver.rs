//! The RedisHA CRD and the builders' objects against the real local apiserver (capstan-testenv,
//! v1.20): the schema defaults and refuses bad specs, unknown fields are pruned (this server has no
//! field validation), and every child the builders make is accepted, owned, selected as intended,
//! and garbage-collected with the RedisHA. No controller runs here: the objects are applied by the
//! test exactly as built.
use std::time::{Duration, Instant};

use capstan_redis_ha::{
    CONTROLLER, ChildInputs, Health, Inputs, REDIS_UID, RedisHA, crd, desired,
    names::{AUTH_HASH_ANNOTATION, COMPONENT_REDIS, COMPONENT_SENTINEL},
};
use capstan_runtime::{ServedApis, compat::PodDisruptionBudgetV1Beta1};
use capstan_testenv::namespace_with_crds;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const FIELD_MANAGER: &str = "capstan";

fn redis_ha(value: serde_json::Value) -> RedisHA {
    serde_json::from_value(value).expect("a RedisHA")
}

/// Creates through the raw JSON, so the server (not serde defaults) decides what is stored.
async fn create_raw(client: &Client, ns: &str, body: serde_json::Value) -> Result<RedisHA, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<RedisHA>(&()));
    let object: DynamicObject = serde_json::from_value(body).expect("object");
    let created = api.create(&PostParams::default(), &object).await?;
    Ok(serde_json::from_value(serde_json::to_value(created).expect("json")).expect("a RedisHA"))
}

fn refusal(result: Result<RedisHA, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "refused as invalid: {status:?}");
            status.message
        }
        other => panic!("expected a 422, got {other:?}"),
    }
}

async fn until<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            println!("{what}: after {:?}", started.elapsed());
            return value;
        }
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_schema_defaults_and_refuses_bad_specs() {
    let (client, ns) = namespace_with_crds(&[CONTROLLER], "rha-schema").await;
    let body = |name: &str, spec: serde_json::Value| json!({"apiVersion": "cache.capstan.dev/v1alpha1", "kind": "RedisHA", "metadata": {"name": name}, "spec": spec});

    let created = create_raw(&client, &ns, body("minimal", json!({"auth": {"secretName": "s"}})))
        .await
        .expect("a minimal RedisHA is accepted");
    assert_eq!(created.spec.replicas, 3);
    assert_eq!(created.spec.sentinel.replicas, 3);
    assert_eq!(created.spec.image, crd::DEFAULT_IMAGE);
    assert_eq!(created.spec.auth.as_ref().map(|a| a.key.as_str()), Some("password"));

    for replicas in [0, 10] {
        let message = refusal(create_raw(&client, &ns, body("bad-replicas", json!({"replicas": replicas}))).await);
        println!("replicas {replicas}: {message}");
        assert!(message.contains("spec.replicas"), "{message}");
    }
    let message = refusal(
        create_raw(
            &client,
            &ns,
            body("bad-sentinels", json!({"sentinel": {"replicas": 0}})),
        )
        .await,
    );
    assert!(message.contains("spec.sentinel.replicas"), "{message}");
    let message = refusal(create_raw(&client, &ns, body("bad-image", json!({"image": "redis 7"}))).await);
    assert!(message.contains("spec.image"), "{message}");
    let long = "r".repeat(crd::MAX_NAME_LENGTH as usize + 1);
    let message = refusal(create_raw(&client, &ns, body(&long, json!({}))).await);
    assert!(message.contains("metadata.name"), "{message}");
    // Names a Service cannot take (DNS-1035) are refused at once, not by the first child.
    for name in ["1cache", "a.b"] {
        let message = refusal(create_raw(&client, &ns, body(name, json!({}))).await);
        println!("name {name}: {message}");
        assert!(message.contains("metadata.name"), "{message}");
    }
    for (what, spec) in [
        ("spec.storage.size", json!({"storage": {"size": "lots"}})),
        (
            "spec.resources.limits",
            json!({"resources": {"limits": {"memory": "lots"}}}),
        ),
        (
            "spec.resources.requests",
            json!({"resources": {"requests": {"cpu": "1 core"}}}),
        ),
    ] {
        let message = refusal(create_raw(&client, &ns, body("bad-quantity", spec)).await);
        println!("{what}: {message}");
        assert!(message.contains(what), "{message}");
    }
    create_raw(
        &client,
        &ns,
        body(
            "quantities",
            json!({"storage": {"size": "1Gi"}, "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}, "requests": {"cpu": 1}}}),
        ),
    )
    .await
    .expect("well-formed quantities, string or integer, are accepted");
    let longest = "r".repeat(crd::MAX_NAME_LENGTH as usize);
    create_raw(&client, &ns, body(&longest, json!({})))
        .await
        .expect("the longest allowed name is accepted");

    // v1.20 has no server-side field validation: an unknown field is pruned silently (servers
    // ≥ 1.25 refuse it with fieldValidation=Strict, kubectl's default since 1.27).
    let pruned = create_raw(&client, &ns, body("unknown-field", json!({"replicass": 5})))
        .await
        .expect("this server accepts and prunes unknown fields");
    let stored = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ApiResource::erase::<RedisHA>(&()))
        .get(&pruned.name_any())
        .await
        .expect("get");
    assert_eq!(
        stored.data["spec"].get("replicass"),
        None,
        "pruned: {:?}",
        stored.data["spec"]
    );
    assert_eq!(stored.data["spec"]["replicas"], json!(3));
}

#[tokio::test]
async fn every_built_child_is_accepted_owned_and_collected_with_the_redis_ha() {
    let (client, ns) = namespace_with_crds(&[CONTROLLER], "rha-objects").await;
    let redis_has: Api<RedisHA> = Api::namespaced(client.clone(), &ns);
    let created = redis_has
        .create(
            &PostParams::default(),
            &redis_ha(json!({
                "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "RedisHA",
                "metadata": {"name": "cache"},
                "spec": {"replicas": 3, "auth": {"secretName": "cache-auth"}, "storage": {"size": "1Gi"},
                         "config": {"maxmemory": "64mb"}}
            })),
        )
        .await
        .expect("create");
    let owner = created.controller_owner_ref(&()).expect("owner reference");
    let inputs = Inputs {
        children: ChildInputs {
            owner: &owner,
            cluster_domain: "cluster.local",
            auth_hash: Some("0123456789abcdef"),
            sentinel_auth_hash: Some("0123456789abcdef"),
            redis_replicas: created.spec.replicas,
            recorded_master: None,
        },
        health: Health::default(),
        now: k8s_openapi::jiff::Timestamp::now(),
    };
    let children = desired(&created, &inputs).expect("builds").children;

    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for config_map in &children.config_maps {
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .patch(&config_map.name_any(), &apply, &Patch::Apply(config_map))
            .await
            .expect("ConfigMap accepted");
    }
    for service in &children.services {
        Api::<Service>::namespaced(client.clone(), &ns)
            .patch(&service.name_any(), &apply, &Patch::Apply(service))
            .await
            .unwrap_or_else(|e| panic!("Service {} accepted: {e}", service.name_any()));
    }
    for set in &children.stateful_sets {
        Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .patch(&set.name_any(), &apply, &Patch::Apply(set))
            .await
            .unwrap_or_else(|e| panic!("StatefulSet {} accepted: {e}", set.name_any()));
    }
    let v1 = ServedApis::discover(&client)
        .await
        .expect("API discovery")
        .serves("policy/v1");
    println!("policy/v1 served: {v1}");
    for pdb in &children.pod_disruption_budgets {
        if v1 {
            Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
                .patch(&pdb.name_any(), &apply, &Patch::Apply(pdb))
                .await
                .expect("PodDisruptionBudget v1 accepted");
        } else {
            let object = PodDisruptionBudgetV1Beta1::from(pdb.clone());
            let stored = Api::<PodDisruptionBudgetV1Beta1>::namespaced(client.clone(), &ns)
                .patch(&pdb.name_any(), &apply, &Patch::Apply(&object))
                .await
                .expect("PodDisruptionBudget v1beta1 accepted");
            assert_eq!(stored.spec, pdb.spec);
        }
    }

    // The StatefulSets' Pods (created by the controller-manager; Pending without a node) carry
    // their component, so each set and Service selects only its own.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let components = until("3 Redis and 3 Sentinel Pods exist", Duration::from_secs(60), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let components: Vec<(String, String)> = list
            .items
            .iter()
            .map(|p| {
                (
                    p.name_any(),
                    p.labels()
                        .get("app.kubernetes.io/component")
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        (components.len() == 6).then_some(components)
    })
    .await;
    for (pod, component) in &components {
        let expected = if pod.starts_with("cache-sentinel-") {
            COMPONENT_SENTINEL
        } else {
            COMPONENT_REDIS
        };
        assert_eq!(component, expected, "{pod}");
    }
    let redis_pod = pods.get("cache-0").await.expect("cache-0");
    let annotations = redis_pod.annotations();
    assert_eq!(
        annotations.get(AUTH_HASH_ANNOTATION).map(String::as_str),
        Some("0123456789abcdef")
    );
    let spec = redis_pod.spec.as_ref().expect("pod spec");
    assert_eq!(
        spec.subdomain.as_deref(),
        Some("cache-headless"),
        "FQDN under the headless Service"
    );
    assert_eq!(spec.security_context.as_ref().and_then(|s| s.fs_group), Some(REDIS_UID));
    let claims = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect::<Vec<_>>();
    assert_eq!(claims, ["data-cache-0"]);

    // Everything goes with the RedisHA (the garbage collector learns a new CRD's kind at its
    // discovery resync, so this may take a while on a fresh plane).
    redis_has
        .delete("cache", &DeleteParams::foreground())
        .await
        .expect("delete");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    until("every child collected", Duration::from_secs(150), || async {
        let sets = sets.list(&ListParams::default()).await.ok()?.items.len();
        let services = services.list(&ListParams::default()).await.ok()?.items.len();
        let owned_config_maps = config_maps
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .filter(|c| c.owner_references().iter().any(|o| o.uid == owner.uid))
            .count();
        (sets == 0 && services == 0 && owned_config_maps == 0).then_some(())
    })
    .await;
    // The claims are not owned by the RedisHA: data is never deleted implicitly.
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let kept = claims.list(&ListParams::default()).await.expect("claims").items;
    assert_eq!(kept.len(), 3, "one claim per Redis Pod, kept");
    assert!(
        kept.iter().all(|c| c.owner_references().is_empty()),
        "claims are not owned: {:?}",
        kept.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    );
    println!(
        "claims kept after delete: {:?}",
        kept.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    );
}
