//! The Memcached controller against a real apiserver and kube-controller-manager
//! (capstan-testenv): Pods are created by the controller-manager and stay Pending (no kubelet).
use capstan_memcached::{Memcached, MemcachedSpec};
use capstan_runtime::testing::{RunningManager, eventually, http_get, spawn_manager};
use capstan_testenv::ControlPlane;
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn setup(prefix: &str) -> (Client, String, RunningManager) {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &[Memcached::crd()])
        .await
        .expect("install the Memcached CRD");
    let ns = cp.namespace(&client, prefix).await.expect("test namespace");
    let manager = spawn_manager(client.clone(), &ns, |m| m.add(capstan_memcached::controller))
        .await
        .expect("manager starts");
    (client, ns, manager)
}

fn memcached(name: &str, size: i32) -> Memcached {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1",
        "kind": "Memcached",
        "metadata": {"name": name},
        "spec": {"size": size},
    }))
    .expect("valid Memcached")
}

async fn replicas(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    deployments.get_opt(name).await.ok()??.spec.replicas
}

async fn nodes(memcacheds: &Api<Memcached>, name: &str) -> Option<Vec<String>> {
    memcacheds.get_opt(name).await.ok()??.status.map(|s| s.nodes)
}

#[tokio::test]
async fn size_drives_an_owned_deployment_and_status_nodes_follow_its_pods() {
    let (client, ns, manager) = setup("mc-scale").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);

    let created = memcacheds
        .create(&PostParams::default(), &memcached("cache", 3))
        .await
        .expect("create");
    eventually("the Deployment has 3 replicas", WAIT, || async {
        (replicas(&deployments, "cache").await == Some(3)).then_some(())
    })
    .await;
    let deployment = deployments.get("cache").await.expect("deployment");
    let owner = &deployment.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(owner.uid.as_str()), owner.controller),
        ("Memcached", created.metadata.uid.as_deref(), Some(true))
    );
    assert_eq!(
        deployment
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("capstan")
    );

    let three = eventually("status.nodes lists 3 Pods", WAIT, || async {
        nodes(&memcacheds, "cache").await.filter(|n| n.len() == 3)
    })
    .await;
    let mut sorted = three.clone();
    sorted.sort();
    assert_eq!(three, sorted, "nodes are sorted");
    assert!(three.iter().all(|n| n.starts_with("cache-")), "{three:?}");
    let status = memcacheds.get("cache").await.expect("get").status.expect("status");
    assert_eq!(status.ready_replicas, 0, "no kubelet: Pods stay Pending");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "False")
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "False")
    );
    assert_eq!(status.observed_generation, Some(1));

    let scale = serde_json::json!({"spec": {"size": 1}});
    memcacheds
        .patch("cache", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scale to 1");
    eventually("the Deployment scales to 1", WAIT, || async {
        (replicas(&deployments, "cache").await == Some(1)).then_some(())
    })
    .await;
    eventually("status.nodes lists 1 Pod", WAIT, || async {
        nodes(&memcacheds, "cache").await.filter(|n| n.len() == 1)
    })
    .await;
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    let reasons: Vec<_> = events.items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(
        reasons.iter().any(|r| r == "Created") && reasons.iter().any(|r| r == "Scaled"),
        "{reasons:?}"
    );
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn hand_edits_of_the_deployment_are_reverted() {
    let (client, ns, manager) = setup("mc-drift").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    memcacheds
        .create(&PostParams::default(), &memcached("cache", 2))
        .await
        .expect("create");
    eventually("the Deployment exists", WAIT, || async {
        replicas(&deployments, "cache").await
    })
    .await;

    let edit = serde_json::json!({"spec": {"replicas": 7}});
    deployments
        .patch("cache", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("hand edit replicas");
    eventually("replicas are reverted to 2", WAIT, || async {
        (replicas(&deployments, "cache").await == Some(2)).then_some(())
    })
    .await;

    let edit = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "memcached", "image": "evil:latest"}]}}}});
    deployments
        .patch("cache", &PatchParams::default(), &Patch::Strategic(&edit))
        .await
        .expect("hand edit image");
    eventually("the image is reverted", WAIT, || async {
        let d = deployments.get("cache").await.ok()?;
        let image = d.spec.template.spec?.containers.first()?.image.clone()?;
        (image == capstan_memcached::DEFAULT_IMAGE).then_some(())
    })
    .await;

    deployments
        .delete("cache", &DeleteParams::default())
        .await
        .expect("delete the Deployment by hand");
    eventually("a deleted Deployment is recreated", WAIT, || async {
        let d = deployments.get_opt("cache").await.ok()??;
        (d.metadata.deletion_timestamp.is_none() && d.spec.replicas == Some(2)).then_some(())
    })
    .await;
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn deleting_the_memcached_garbage_collects_its_deployment() {
    let (client, ns, manager) = setup("mc-gc").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    memcacheds
        .create(&PostParams::default(), &memcached("cache", 1))
        .await
        .expect("create");
    eventually("the Deployment exists", WAIT, || async {
        replicas(&deployments, "cache").await
    })
    .await;
    memcacheds
        .delete("cache", &DeleteParams::default())
        .await
        .expect("delete Memcached");
    // The garbage collector learns about a new CRD only on its discovery resync (every 30 s in
    // kube-controller-manager 1.20), so the first collection after the CRD appears can take that long.
    eventually("the Deployment is garbage-collected", 3 * WAIT, || async {
        deployments
            .get_opt("cache")
            .await
            .ok()
            .and_then(|d| d.is_none().then_some(()))
    })
    .await;
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn an_unowned_deployment_of_the_same_name_is_left_alone_without_a_hot_loop() {
    let (client, ns, manager) = setup("mc-conflict").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let foreign: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "taken"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "other"}},
                 "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .expect("deployment");
    let foreign = deployments
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create the foreign Deployment");
    memcacheds
        .create(&PostParams::default(), &memcached("taken", 3))
        .await
        .expect("create Memcached");

    let degraded = eventually("Degraded=True reason ResourceExists", WAIT, || async {
        let status = memcacheds.get("taken").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "ResourceExists")
    })
    .await;
    assert!(degraded.message.contains("not controlled"), "{}", degraded.message);
    eventually("a Warning event ResourceExists is published", WAIT, || async {
        let events = Api::<Event>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .ok()?;
        events
            .items
            .into_iter()
            .find(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("ResourceExists"))
    })
    .await;

    // Backoff, not a hot loop: over 8 s an exponential backoff from 0.5 s allows ~5 attempts.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, metrics) = http_get(manager.addrs.metrics, "/metrics").await.expect("metrics");
    let attempts: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"capstan_reconcile_errors_by_reason_total{controller="memcached",reason="resource_exists"}"#,
            )
        })
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .expect("the conflict is counted");
    eprintln!("conflicting reconciles in ~9 s: {attempts}");
    assert!(
        (1.0..=8.0).contains(&attempts),
        "expected exponential backoff, saw {attempts} attempts"
    );

    let after = deployments.get("taken").await.expect("foreign Deployment still there");
    // The controller-manager writes its status, so compare what capstan would have written.
    assert_eq!(
        after.metadata.generation, foreign.metadata.generation,
        "the foreign Deployment's spec was not modified"
    );
    assert_eq!(after.spec, foreign.spec);
    assert!(after.owner_references().is_empty());
    let managers: Vec<_> = after
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !managers.iter().any(|m| m == "capstan"),
        "capstan must own no field of it: {managers:?}"
    );
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn the_apiserver_rejects_sizes_out_of_range_and_a_missing_size() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &[Memcached::crd()])
        .await
        .expect("install the Memcached CRD");
    let ns = cp.namespace(&client, "mc-invalid").await.expect("namespace");
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    for size in [-1, 101] {
        let err = memcacheds
            .create(&PostParams::default(), &memcached("bad", size))
            .await
            .expect_err("out of range");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 422),
            "size {size}: {err}"
        );
    }
    // A missing size cannot be expressed with the typed API; send raw JSON.
    let raw = serde_json::json!({"apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": "nosize"}, "spec": {}});
    let dynamic =
        Api::<kube::api::DynamicObject>::namespaced_with(client, &ns, &kube::api::ApiResource::erase::<Memcached>(&()));
    let obj: kube::api::DynamicObject = serde_json::from_value(raw).expect("dynamic object");
    let err = dynamic
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("missing size");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("size")),
        "{err}"
    );
    let ok = memcacheds
        .create(&PostParams::default(), &memcached("edge", 0))
        .await
        .expect("size 0 is valid");
    assert_eq!(
        ok.spec,
        MemcachedSpec {
            size: 0,
            image: capstan_memcached::DEFAULT_IMAGE.into(),
            container_port: 11211,
            memory_mb: 64,
            resources: None
        },
        "defaults applied by the apiserver"
    );
}
