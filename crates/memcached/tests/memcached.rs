//! The Memcached controller against a real apiserver and kube-controller-manager
//! (capstan-testenv): Pods are created by the controller-manager and stay Pending (no kubelet).
use capstan_memcached::{CONTROLLER, Memcached, MemcachedSpec};
use capstan_testenv::{ControlPlane, ControllerTest, RunningManager, eventually, http_get};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Service, events::v1::Event},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

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

/// A Memcached `cache` of size 1 in a fresh namespace, once its Deployment exists.
async fn cache_with_its_deployment(prefix: &str) -> (Api<Memcached>, Api<Deployment>, RunningManager) {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, prefix).await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client, &ns);
    memcacheds
        .create(&PostParams::default(), &memcached("cache", 1))
        .await
        .expect("create");
    eventually("the Deployment exists", WAIT, || async {
        replicas(&deployments, "cache").await
    })
    .await;
    (memcacheds, deployments, manager)
}

async fn nodes(memcacheds: &Api<Memcached>, name: &str) -> Option<Vec<String>> {
    memcacheds.get_opt(name).await.ok()??.status.map(|s| s.nodes)
}

#[tokio::test]
async fn size_drives_an_owned_deployment_and_status_nodes_follow_its_pods() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "mc-scale").await;
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
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "mc-drift").await;
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
    let (memcacheds, deployments, manager) = cache_with_its_deployment("mc-gc").await;
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
async fn a_foreground_deletion_finishes_without_the_deployment_being_applied_again() {
    let (memcacheds, deployments, manager) = cache_with_its_deployment("mc-fg").await;
    const DEPLOYMENT_APPLIES: &str = "capstan_apply_total{controller=\"memcached\",target=\"Deployment\"}";
    let applies = manager.metric(DEPLOYMENT_APPLIES).await;
    assert!(applies >= 1.0, "the Deployment's apply was counted: {applies}");
    // Foreground: the Memcached stays (with a deletionTimestamp) until the garbage collector has
    // removed the Deployment, and every change meanwhile queues a reconcile of it.
    memcacheds
        .delete("cache", &DeleteParams::foreground())
        .await
        .expect("delete Memcached");
    eventually("the Memcached is gone", 3 * WAIT, || async {
        memcacheds
            .get_opt("cache")
            .await
            .ok()
            .and_then(|m| m.is_none().then_some(()))
    })
    .await;
    assert!(
        deployments.get_opt("cache").await.expect("get").is_none(),
        "the Deployment went with its owner"
    );
    assert_eq!(
        manager.metric(DEPLOYMENT_APPLIES).await,
        applies,
        "no apply re-created the Deployment while its owner was being deleted"
    );
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn an_unowned_deployment_of_the_same_name_is_left_alone_without_a_hot_loop() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "mc-conflict").await;
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
    cp.apply_crds(&client, &[capstan_memcached::crd()])
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
            resources: None,
            progress_deadline_seconds: None,
        },
        "defaults applied by the apiserver"
    );
}

fn memcached_with(name: &str, spec: serde_json::Value) -> Memcached {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1",
        "kind": "Memcached",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid Memcached")
}

async fn condition(memcacheds: &Api<Memcached>, name: &str, type_: &str) -> Option<Condition> {
    let status = memcacheds.get_opt(name).await.ok()??.status?;
    status.conditions.into_iter().find(|c| c.type_ == type_)
}

/// Waits until `name`'s condition `type_` has `status` and `reason`, and returns it.
async fn wait_condition(memcacheds: &Api<Memcached>, name: &str, type_: &str, status: &str, reason: &str) -> Condition {
    eventually(&format!("{type_}={status}/{reason}"), WAIT, || async {
        condition(memcacheds, name, type_)
            .await
            .filter(|c| c.status == status && c.reason == reason)
    })
    .await
}

fn refused_with(result: Result<Memcached, kube::Error>, what: &str, field: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => {
            eprintln!("{what}: refused: {}", status.message);
            assert!(status.message.contains(field), "{what}: {}", status.message);
        }
        other => panic!("{what}: expected a 422 naming {field}, got {other:?}"),
    }
}

#[tokio::test]
async fn the_schema_refuses_long_names_images_with_spaces_and_malformed_quantities() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &[capstan_memcached::crd()])
        .await
        .expect("install the Memcached CRD");
    let ns = cp.namespace(&client, "mc-schema").await.expect("namespace");
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let create = |mc: Memcached| {
        let memcacheds = memcacheds.clone();
        async move { memcacheds.create(&PostParams::default(), &mc).await }
    };

    let longest = format!("c{}", "a".repeat(62));
    create(memcached(&longest, 0))
        .await
        .expect("a 63-character name is a valid label value");
    let too_long = format!("c{}", "a".repeat(63));
    refused_with(
        create(memcached(&too_long, 0)).await,
        "a 64-character name",
        "metadata.name",
    );
    refused_with(
        create(memcached("1cache", 0)).await,
        "a name that cannot name a Service",
        "metadata.name",
    );
    refused_with(
        create(memcached_with(
            "spaces",
            serde_json::json!({"size": 1, "image": "memcached:1.6 -vv"}),
        ))
        .await,
        "an image with a space",
        "spec.image",
    );
    refused_with(
        create(memcached_with(
            "lots",
            serde_json::json!({"size": 1, "resources": {"limits": {"memory": "lots"}}}),
        ))
        .await,
        "a malformed quantity",
        "spec.resources.limits",
    );
    // Quantities are strings (see `capstan_memcached::crd`): an unquoted number gets a clear no.
    // Sent raw: the typed API would turn the number into a string.
    let dynamic = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<Memcached>(&()),
    );
    let number: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": "number"},
        "spec": {"size": 1, "resources": {"requests": {"memory": 67108864}}}
    }))
    .expect("dynamic object");
    match dynamic.create(&PostParams::default(), &number).await {
        Err(kube::Error::Api(status)) if status.code == 422 => {
            eprintln!("an unquoted number as a quantity: refused: {}", status.message);
            assert!(status.message.contains("spec.resources.requests"), "{}", status.message);
        }
        other => panic!("an unquoted number as a quantity: expected a 422, got {other:?}"),
    }
    create(memcached_with(
        "sized",
        serde_json::json!({"size": 1, "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}, "requests": {"cpu": "1"}}}),
    ))
    .await
    .expect("well-formed quantities are accepted");
}

#[tokio::test]
async fn a_negative_quantity_is_reported_as_degraded_and_nothing_is_applied() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "mc-negative").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    // Well formed, so the schema lets it through; a container refuses negative resources.
    memcacheds
        .create(
            &PostParams::default(),
            &memcached_with(
                "cache",
                serde_json::json!({"size": 1, "resources": {"limits": {"memory": "-64Mi"}}}),
            ),
        )
        .await
        .expect("create");
    let degraded = wait_condition(&memcacheds, "cache", "Degraded", "True", "InvalidSpec").await;
    assert!(
        degraded.message.contains("spec.resources.limits.memory"),
        "{}",
        degraded.message
    );
    // The reconcile that wrote this condition applies nothing before it: had it applied a
    // Deployment or Service, they would exist by now.
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    assert!(deployments.get_opt("cache").await.expect("get").is_none());
    assert!(services.get_opt("cache").await.expect("get").is_none());
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn the_scale_subresource_drives_size_and_reports_a_selector() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "mc-scale-sub").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    memcacheds
        .create(&PostParams::default(), &memcached("cache", 1))
        .await
        .expect("create");
    eventually("the Deployment has 1 replica", WAIT, || async {
        (replicas(&deployments, "cache").await == Some(1)).then_some(())
    })
    .await;
    let scale = eventually(
        "the scale subresource reports 1 replica and a selector",
        WAIT,
        || async {
            let scale = memcacheds.get_scale("cache").await.ok()?;
            let status = scale.status.clone()?;
            (status.replicas == 1 && status.selector.is_some()).then_some(scale)
        },
    )
    .await;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app.kubernetes.io/instance=cache,app.kubernetes.io/name=memcached")
    );

    // What `kubectl scale memcached/cache --replicas=3` sends.
    memcacheds
        .patch_scale(
            "cache",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("patch the scale subresource");
    assert_eq!(memcacheds.get("cache").await.expect("get").spec.size, 3);
    eventually("the Deployment scales to 3", WAIT, || async {
        (replicas(&deployments, "cache").await == Some(3)).then_some(())
    })
    .await;
    eventually("the scale subresource reports 3 replicas", WAIT, || async {
        let status = memcacheds.get_scale("cache").await.ok()?.status?;
        (status.replicas == 3).then_some(())
    })
    .await;

    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = crds.get("memcacheds.cache.capstan.dev").await.expect("CRD");
    assert_eq!(crd.spec.names.short_names, Some(vec!["mc".to_owned()]));
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn pending_pods_are_progressing_and_size_zero_is_ready_as_scaled_to_zero() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "mc-zero").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    memcacheds
        .create(&PostParams::default(), &memcached("cache", 2))
        .await
        .expect("create");
    // No kubelet here: the Pods exist but never become ready.
    eventually("status.nodes lists 2 Pods", WAIT, || async {
        nodes(&memcacheds, "cache").await.filter(|n| n.len() == 2)
    })
    .await;
    let progressing = wait_condition(&memcacheds, "cache", "Progressing", "True", "RollingOut").await;
    eprintln!("with Pending Pods: {}", progressing.message);
    let ready = condition(&memcacheds, "cache", "Ready").await.expect("Ready");
    assert_eq!(ready.status, "False", "{ready:?}");

    memcacheds
        .patch(
            "cache",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"size": 0}})),
        )
        .await
        .expect("scale to 0");
    let ready = wait_condition(&memcacheds, "cache", "Ready", "True", "ScaledToZero").await;
    eprintln!("size 0: {}", ready.message);
    let available = condition(&memcacheds, "cache", "Available").await.expect("Available");
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("False", "ScaledToZero")
    );
    // Pods still terminating are still listed (they exist); the list empties once they are gone.
    let status = eventually("status.nodes empty once the Pods are gone", WAIT, || async {
        let status = memcacheds.get("cache").await.ok()?.status?;
        status.nodes.is_empty().then_some(status)
    })
    .await;
    assert_eq!((status.replicas, status.ready_replicas), (0, 0));
    assert_eq!(replicas(&deployments, "cache").await, Some(0));
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn conditions_of_other_field_managers_are_left_to_them() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "mc-foreign").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    memcacheds
        .create(&PostParams::default(), &memcached("cache", 0))
        .await
        .expect("create");
    wait_condition(&memcacheds, "cache", "Ready", "True", "ScaledToZero").await;
    let foreign = serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached",
        "status": {"conditions": [{"type": "BackedUp", "status": "True", "reason": "Done",
                                   "message": "nightly backup", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    });
    memcacheds
        .patch_status(
            "cache",
            &PatchParams::apply("backup-operator").force(),
            &Patch::Apply(&foreign),
        )
        .await
        .expect("another manager adds its condition");
    let merged = memcacheds.get("cache").await.expect("get").status.expect("status");
    assert_eq!(
        merged.conditions.len(),
        5,
        "the apiserver merges conditions by type: {:?}",
        merged.conditions
    );
    // A spec change makes capstan write the status again (observedGeneration 2, then Ready).
    memcacheds
        .patch(
            "cache",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"memoryMB": 32}})),
        )
        .await
        .expect("change the spec");
    let status = eventually("capstan reports generation 2 as Ready", WAIT, || async {
        let status = memcacheds.get("cache").await.ok()?.status?;
        (status.observed_generation == Some(2)
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True" && c.observed_generation == Some(2)))
        .then_some(status)
    })
    .await;
    assert!(
        status.conditions.iter().any(|c| c.type_ == "BackedUp"),
        "the foreign condition is kept: {:?}",
        status.conditions
    );
    let stored = memcacheds.get("cache").await.expect("get");
    let fields_of = |manager: &str| -> String {
        stored
            .managed_fields()
            .iter()
            .filter(|m| m.manager.as_deref() == Some(manager))
            .filter_map(|m| m.fields_v1.as_ref().map(|f| f.0.to_string()))
            .collect()
    };
    let capstan = fields_of("capstan");
    assert!(capstan.contains(r#"k:{\"type\":\"Ready\"}"#), "{capstan}");
    assert!(
        !capstan.contains("BackedUp"),
        "capstan must not claim another manager's condition: {capstan}"
    );
    assert!(fields_of("backup-operator").contains("BackedUp"));
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn the_headless_service_is_owned_and_recreated_when_deleted() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "mc-service").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let created = memcacheds
        .create(&PostParams::default(), &memcached("cache", 1))
        .await
        .expect("create");
    let service = eventually("the headless Service exists", WAIT, || async {
        services.get_opt("cache").await.ok()?
    })
    .await;
    let spec = service.spec.clone().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.ports.as_ref().expect("ports")[0].port, 11211);
    let owner = &service.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(owner.uid.as_str()), owner.controller),
        ("Memcached", created.metadata.uid.as_deref(), Some(true))
    );
    assert_eq!(
        service.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("capstan")
    );

    services
        .delete("cache", &DeleteParams::default())
        .await
        .expect("delete the Service by hand");
    let recreated = eventually("the deleted Service is recreated", WAIT, || async {
        services
            .get_opt("cache")
            .await
            .ok()?
            .filter(|s| s.metadata.uid != service.metadata.uid)
    })
    .await;
    assert_eq!(recreated.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));
    manager.stop().await.expect("manager stops");
}

/// Requests (list or finished watch) for `deployments` in `ns` selecting the single name `name`:
/// what the runtime sends only while a child named so is refused as someone else's.
fn name_watches(audit_log: &std::path::Path, mark: u64, ns: &str, name: &str) -> usize {
    let encoded = format!("fieldSelector=metadata.name%3D{name}&");
    let plain = format!("fieldSelector=metadata.name={name}&");
    capstan_testenv::audit::since(audit_log, mark)
        .expect("audit log")
        .iter()
        .filter(|e| e.request_uri.contains(&format!("/namespaces/{ns}/deployments?")))
        .filter(|e| {
            let uri = format!("{}&", e.request_uri);
            uri.contains(&encoded) || uri.contains(&plain)
        })
        .count()
}

#[tokio::test]
async fn deleting_the_foreign_deployment_in_the_way_lets_the_memcached_create_its_own() {
    let ControllerTest { client, ns, manager } = ControllerTest::start(CONTROLLER, "mc-freed").await;
    let audit_log = ControlPlane::shared().audit_log_path().expect("audit log").to_owned();
    let mark = capstan_testenv::audit::mark(&audit_log);
    const WATCHES: &str = r#"capstan_foreign_child_watches{controller="memcached"}"#;
    const WAKEUPS: &str = r#"capstan_foreign_child_wakeups_total{controller="memcached"}"#;
    const REFUSED: &str =
        r#"capstan_reconcile_errors_by_reason_total{controller="memcached",reason="resource_exists"}"#;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let foreign = |name: &str| -> Deployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "other"}},
                     "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        }))
        .expect("deployment")
    };

    // No refusal: its Deployment is created and no single-name watch is opened for it.
    memcacheds
        .create(&PostParams::default(), &memcached("free", 1))
        .await
        .expect("create free");
    eventually("free's Deployment exists", WAIT, || async {
        replicas(&deployments, "free").await
    })
    .await;
    assert_eq!(manager.metric(WATCHES).await, 0.0, "nothing watched without a refusal");

    // Refused: a foreign Deployment holds the name. One watch of that name is opened.
    deployments
        .create(&PostParams::default(), &foreign("taken"))
        .await
        .expect("create the foreign Deployment");
    let mc = memcacheds
        .create(&PostParams::default(), &memcached("taken", 2))
        .await
        .expect("create taken");
    wait_condition(&memcacheds, "taken", "Degraded", "True", "ResourceExists").await;
    eventually("the refused name is watched", WAIT, || async {
        (manager.metric(WATCHES).await == 1.0).then_some(())
    })
    .await;

    // A reconcile that refuses again keeps the same watch (no second one, none dropped).
    let refused_before = manager.metric(REFUSED).await;
    memcacheds
        .patch(
            "taken",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"size": 3}})),
        )
        .await
        .expect("resize taken");
    eventually("the resized Memcached is refused again", WAIT, || async {
        (manager.metric(REFUSED).await > refused_before).then_some(())
    })
    .await;
    assert_eq!(manager.metric(WATCHES).await, 1.0, "still exactly one watch");
    assert_eq!(manager.metric(WAKEUPS).await, 0.0, "nothing freed the name yet");

    // The user deletes the foreign Deployment: the Memcached is woken and creates its own.
    deployments
        .delete("taken", &DeleteParams::default())
        .await
        .expect("delete the foreign Deployment");
    let deleted_at = std::time::Instant::now();
    let mc_uid = mc.uid().expect("uid");
    let own = eventually("taken's own Deployment exists", WAIT, || async {
        let deployment = deployments.get_opt("taken").await.ok()??;
        deployment
            .owner_references()
            .iter()
            .any(|r| r.uid == mc_uid && r.controller == Some(true))
            .then_some(deployment)
    })
    .await;
    let took = deleted_at.elapsed();
    eprintln!("the Memcached's own Deployment existed {took:?} after the foreign one was deleted");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(own.spec.replicas, Some(3));
    assert_eq!(manager.metric(WAKEUPS).await, 1.0, "woken by the freed name");
    eventually("the refusal is over and its watch closed", WAIT, || async {
        (manager.metric(WATCHES).await == 0.0).then_some(())
    })
    .await;
    wait_condition(&memcacheds, "taken", "Degraded", "False", "AsExpected").await;

    // A refused Memcached that is deleted takes its watch with it.
    deployments
        .create(&PostParams::default(), &foreign("gone"))
        .await
        .expect("create another foreign Deployment");
    memcacheds
        .create(&PostParams::default(), &memcached("gone", 1))
        .await
        .expect("create gone");
    eventually("the second refused name is watched", WAIT, || async {
        (manager.metric(WATCHES).await == 1.0).then_some(())
    })
    .await;
    memcacheds
        .delete("gone", &DeleteParams::default())
        .await
        .expect("delete gone");
    eventually("the deleted owner's watch is closed", WAIT, || async {
        (manager.metric(WATCHES).await == 0.0).then_some(())
    })
    .await;
    assert_eq!(manager.metric(WAKEUPS).await, 1.0, "deleting the owner wakes nobody");

    // The audit log agrees: single-name watches were sent for the refused names only.
    let for_taken = name_watches(&audit_log, mark, &ns, "taken");
    let for_free = name_watches(&audit_log, mark, &ns, "free");
    eprintln!("single-name watch requests: taken {for_taken}, free {for_free}");
    assert!(for_taken >= 1, "the refused name was watched");
    assert_eq!(for_free, 0, "a name never refused is never watched");
    manager.stop().await.expect("manager stops");
}
