//! The RedisHA controller against the real local apiserver and kube-controller-manager
//! (capstan-testenv, v1.20; no kubelet, so Pods stay Pending): every child appears owned,
//! labelled and as specified (PodDisruptionBudgets as policy/v1beta1, which this server serves
//! instead of policy/v1), a scale is applied (down too, over Pods that never ran), deletion
//! garbage-collects the children, and a missing
//! auth Secret is reported as Degraded without a hot loop.
use capstan_redis_ha::{CONTROLLER, RedisHA, names};
use capstan_runtime::compat::PodDisruptionBudgetV1Beta1;
use capstan_testenv::{ControllerTest, RunningManager, eventually, http_get};
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Secret, Service},
        events::v1::Event,
    },
    apimachinery::pkg::{apis::meta::v1::OwnerReference, util::intstr::IntOrString},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(60);

fn redis_ha(name: &str, replicas: i32, secret: &str) -> RedisHA {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1",
        "kind": "RedisHA",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "sentinel": {"replicas": 3}, "auth": {"secretName": secret}},
    }))
    .expect("valid RedisHA")
}

async fn create_secret(client: &Client, ns: &str, name: &str) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"password": "s3cret-pass"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the auth Secret");
}

fn v1beta1_pdbs(client: &Client, ns: &str) -> Api<PodDisruptionBudgetV1Beta1> {
    Api::namespaced(client.clone(), ns)
}

/// The object is controlled by the RedisHA and carries capstan's labels for it.
fn assert_owned(what: &str, refs: &[OwnerReference], labels: &BTreeMap<String, String>, rha: &RedisHA) {
    let owner = refs.first().unwrap_or_else(|| panic!("{what} has an owner reference"));
    assert_eq!(
        (owner.kind.as_str(), Some(owner.uid.as_str()), owner.controller),
        ("RedisHA", rha.meta().uid.as_deref(), Some(true)),
        "{what}'s owner"
    );
    for (key, value) in [
        ("app.kubernetes.io/name", "redis-ha"),
        ("app.kubernetes.io/instance", rha.name_any().as_str()),
        ("app.kubernetes.io/managed-by", "capstan"),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{what} label {key}");
    }
}

async fn reconciles(manager: &RunningManager) -> f64 {
    let (_, metrics) = http_get(manager.addrs.metrics, "/metrics").await.expect("metrics");
    metrics
        .lines()
        .filter(|l| l.starts_with(r#"controller_runtime_reconcile_total{controller="redis-ha""#))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn every_child_appears_owned_a_scale_is_applied_and_deletion_collects_them() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "rha-children").await;
    create_secret(&client, &ns, "cache-auth").await;
    let rhas = Api::<RedisHA>::namespaced(client.clone(), &ns);
    let sets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let pdbs = v1beta1_pdbs(&client, &ns);
    let rha = rhas
        .create(&PostParams::default(), &redis_ha("cache", 3, "cache-auth"))
        .await
        .expect("create");

    let started = Instant::now();
    let redis_set = eventually("the Redis StatefulSet", WAIT, || async {
        sets.get_opt("cache").await.ok()?
    })
    .await;
    let sentinel_set = eventually("the Sentinel StatefulSet", WAIT, || async {
        sets.get_opt("cache-sentinel").await.ok()?
    })
    .await;
    eprintln!("StatefulSets applied after {:?}", started.elapsed());
    for set in [&redis_set, &sentinel_set] {
        assert_owned(&set.name_any(), set.owner_references(), set.labels(), &rha);
    }
    let spec = &redis_set.spec;
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("cache-headless"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("OnDelete")
    );
    let template_annotations = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    assert!(
        template_annotations.contains_key(names::AUTH_HASH_ANNOTATION),
        "the Secret's hash is in the Pod template: {template_annotations:?}"
    );
    assert_eq!(sentinel_set.spec.replicas, Some(3));

    for name in ["cache-headless", "cache-master", "cache-replicas", "cache-sentinel"] {
        let service = eventually(name, WAIT, || async { services.get_opt(name).await.ok()? }).await;
        assert_owned(name, service.owner_references(), service.labels(), &rha);
    }
    let headless = services.get("cache-headless").await.expect("headless");
    let headless_spec = headless.spec.expect("spec");
    assert_eq!(headless_spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless_spec.publish_not_ready_addresses, Some(true));
    let master = services.get("cache-master").await.expect("master Service");
    assert_eq!(
        master
            .spec
            .and_then(|s| s.selector)
            .and_then(|s| s.get(names::ROLE_LABEL).cloned())
            .as_deref(),
        Some("master")
    );
    for prefix in ["cache-config-", "cache-sentinel-config-"] {
        let map = eventually(prefix, WAIT, || async {
            maps.list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|m| m.name_any().starts_with(prefix))
        })
        .await;
        assert_owned(&map.name_any(), map.owner_references(), map.labels(), &rha);
        assert_eq!(map.immutable, Some(true), "{}", map.name_any());
    }
    for name in ["cache", "cache-sentinel"] {
        let pdb = eventually(name, WAIT, || async { pdbs.get_opt(name).await.ok()? }).await;
        assert_owned(&format!("PDB {name}"), pdb.owner_references(), pdb.labels(), &rha);
        assert_eq!(
            pdb.spec.and_then(|s| s.max_unavailable),
            Some(IntOrString::Int(1)),
            "{name}"
        );
    }
    // Budgets are cached children like the others: deleting one wakes the RedisHA, which applies
    // it again (well before the 30 s Secret re-check, the only other wake-up here).
    let old_uid = pdbs.get("cache").await.expect("the PDB").uid();
    pdbs.delete("cache", &DeleteParams::default())
        .await
        .expect("delete the PDB");
    let deleted = Instant::now();
    eventually(
        "the deleted PodDisruptionBudget is applied again",
        Duration::from_secs(15),
        || async {
            let pdb = pdbs.get_opt("cache").await.ok()??;
            (pdb.uid() != old_uid).then_some(())
        },
    )
    .await;
    eprintln!(
        "PodDisruptionBudget re-created {:?} after its deletion",
        deleted.elapsed()
    );
    let status = eventually("a status with the Sentinel endpoint and Ready", WAIT, || async {
        let status = rhas.get("cache").await.ok()?.status?;
        status.conditions.iter().any(|c| c.type_ == "Ready").then_some(status)
    })
    .await;
    assert_eq!(
        status.sentinel.as_ref().map(|s| s.service.as_str()),
        Some("cache-sentinel")
    );
    assert_eq!(status.sentinel.as_ref().map(|s| s.master_name.as_str()), Some("cache"));

    rhas.patch(
        "cache",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})),
    )
    .await
    .expect("scale to 5");
    eventually("the Redis StatefulSet has 5 replicas", WAIT, || async {
        (sets.get("cache").await.ok()?.spec.replicas == Some(5)).then_some(())
    })
    .await;
    // Back to 3: no kubelet runs these Pods, so none ever ran (no IP, no data) and no master is
    // known: the scale-down is not held for them.
    rhas.patch(
        "cache",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
    )
    .await
    .expect("scale to 3");
    eventually("the Redis StatefulSet is back at 3 replicas", WAIT, || async {
        (sets.get("cache").await.ok()?.spec.replicas == Some(3)).then_some(())
    })
    .await;

    rhas.delete("cache", &DeleteParams::default()).await.expect("delete");
    let deleted = Instant::now();
    // The garbage collector learns a CRD that appeared after it started on its 30 s discovery
    // resync, so the first collection on a fresh plane can take up to ~90 s.
    eventually("every child is garbage-collected", 3 * WAIT / 2, || async {
        let selector = ListParams::default().labels("app.kubernetes.io/instance=cache");
        let left = sets.list(&selector).await.ok()?.items.len()
            + services.list(&selector).await.ok()?.items.len()
            + maps.list(&selector).await.ok()?.items.len()
            + pdbs.list(&selector).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await;
    eprintln!("children collected {:?} after the delete", deleted.elapsed());
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn a_missing_auth_secret_is_degraded_with_an_event_and_no_hot_loop() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "rha-nosecret").await;
    let rhas = Api::<RedisHA>::namespaced(client.clone(), &ns);
    let sets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    rhas.create(&PostParams::default(), &redis_ha("lost", 3, "not-there"))
        .await
        .expect("create");
    let degraded = eventually("Degraded=True reason SecretMissing", WAIT, || async {
        let status = rhas.get("lost").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "SecretMissing")
    })
    .await;
    assert!(degraded.message.contains("not-there"), "{}", degraded.message);
    eventually("a Warning event SecretMissing", WAIT, || async {
        Api::<Event>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("SecretMissing"))
    })
    .await;
    let before = reconciles(&manager).await;
    assert!(before >= 1.0, "the reconcile ran and is counted: {before}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = reconciles(&manager).await;
    eprintln!("reconciles of the blocked RedisHA: {before} before, {after} after 10 s");
    assert!(
        after - before <= 1.0,
        "a missing Secret is retried after a minute, not in a loop: {before} → {after}"
    );
    assert!(
        sets.list(&ListParams::default()).await.expect("list").items.is_empty(),
        "nothing is built without the password"
    );
    manager.stop().await.expect("manager stops");
}
