//! The real `capstan-manager` binary against the local control plane: both controllers in one
//! process, readiness after cache sync, metric names, and no writes on a no-op resync.
use capstan_foo::{Foo, FooSpec};
use capstan_memcached::Memcached;
use capstan_testenv::{ControlPlane, eventually, http_get};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Container, Pod, PodSpec},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use std::{path::Path, time::Duration};

mod common;
use capstan_testenv::audit;
use common::{ManagerProcess, manager_writes};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn one_manager_runs_both_controllers_and_a_no_op_resync_writes_nothing() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "manager").await.expect("namespace");
    let audit_log = cp
        .audit_log_path()
        .expect("the shared control plane keeps an audit log")
        .to_owned();

    // Started before its CRDs exist: alive, not ready, and says why.
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &["--namespace", &ns]);
    let (code, _) = http_get(manager.health, "/healthz").await.expect("healthz");
    assert_eq!(code, 200);
    let (code, body) = http_get(manager.health, "/readyz").await.expect("readyz");
    assert_eq!(code, 503, "not ready before the CRDs exist: {body}");

    cp.apply_crds(&client, &capstan_manager::crds())
        .await
        .expect("install CRDs");
    eventually("/readyz turns 200 after the caches sync", WAIT, || async {
        (http_get(manager.health, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;

    let foos = Api::<Foo>::namespaced(client.clone(), &ns);
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &Pod {
            metadata: ObjectMeta {
                name: Some("jack".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .expect("pod");
    foos.create(
        &PostParams::default(),
        &Foo::new("foo-01", FooSpec { name: "jack".into() }),
    )
    .await
    .expect("foo");
    let mc: Memcached = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": "cache"}, "spec": {"size": 2}
    }))
    .expect("memcached");
    memcacheds.create(&PostParams::default(), &mc).await.expect("memcached");

    eventually("the Foo is happy", WAIT, || async {
        foos.get("foo-01").await.ok()?.status?.happy.then_some(())
    })
    .await;
    eventually("the Memcached lists 2 nodes", WAIT, || async {
        (memcacheds.get("cache").await.ok()?.status?.nodes.len() == 2).then_some(())
    })
    .await;
    // Converged means nothing left to do: the controller-manager has settled the Deployment's
    // status (which the Memcached status mirrors) and the manager has stopped writing.
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    eventually("the Deployment's status has settled", WAIT, || async {
        let d = deployments.get("cache").await.ok()?;
        let status = d.status?;
        let available_known = status
            .conditions?
            .iter()
            .any(|c| c.type_.as_deref() == Some("Available"));
        (status.observed_generation == d.metadata.generation && available_known).then_some(())
    })
    .await;
    let settling = std::time::Instant::now();
    let mut previous = f64::NAN;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let applies = manager.metric("capstan_apply_total{").await;
        if applies == previous {
            break;
        }
        previous = applies;
        assert!(settling.elapsed() < WAIT, "the manager kept writing for {WAIT:?}");
    }

    let (_, metrics) = http_get(manager.metrics, "/metrics").await.expect("metrics");
    for name in [
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    for controller in ["foo", "memcached"] {
        assert!(metrics.contains(&format!(
            r#"controller_runtime_reconcile_total{{controller="{controller}",result="success"}}"#
        )));
    }
    manager.stop();
    let before = serde_json::to_string_pretty(&memcacheds.get("cache").await.expect("get").status).expect("json");

    // A restarted manager lists everything and reconciles every object again: all of it is
    // converged, so it must not send a single write.
    let offset = audit::mark(&audit_log);
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &["--namespace", &ns]);
    eventually("the restarted manager is ready", WAIT, || async {
        (http_get(manager.health, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    let reconciled = eventually("both controllers reconciled their objects again", WAIT, || async {
        let (_, metrics) = http_get(manager.metrics, "/metrics").await.ok()?;
        let count = |c: &str| -> f64 {
            let prefix = format!(r#"controller_runtime_reconcile_total{{controller="{c}",result="success"}} "#);
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
                .unwrap_or(0.0)
        };
        (count("foo") >= 1.0 && count("memcached") >= 1.0).then(|| metrics.clone())
    })
    .await;
    assert!(
        reconciled.contains(r#"capstan_apply_skipped_total{controller="memcached",target="Deployment"}"#),
        "the Deployment apply was skipped as a no-op"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = manager_writes(&audit_log, offset);
    eprintln!("writes by the restarted manager: {}", writes.len());
    let after = serde_json::to_string_pretty(&memcacheds.get("cache").await.expect("get").status).expect("json");
    assert!(
        writes.is_empty(),
        "a no-op resync must not write, but sent: {writes:#?}\nstatus before: {before}\nstatus after: {after}"
    );
    manager.stop();
}

/// The repository's one generated copy of the CRDs: the Helm chart's `crds/`.
const CHART_CRDS: &str = "../../deploy/charts/capstan/crds";

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(CHART_CRDS);
    let mut expected = std::collections::BTreeSet::new();
    for crd in capstan_manager::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        let path = dir.join(format!("{name}.yaml"));
        let stored = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crds`", path.display()));
        let stored: serde_json::Value = serde_yaml::from_str(&stored).expect("stored CRD is YAML");
        let generated = serde_json::to_value(&crd).expect("CRD as JSON");
        assert!(
            stored == generated,
            "{} is stale: run `cargo xtask crds` and commit the result",
            path.display()
        );
        expected.insert(format!("{name}.yaml"));
    }
    // Helm installs every file in crds/: a leftover of a renamed kind would be installed too.
    let present: std::collections::BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("the chart's crds/")
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        present,
        expected,
        "{} holds files the manager does not generate",
        dir.display()
    );
    // One generated copy only: the retired deploy/crds/ must not come back.
    let retired = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    assert!(
        !retired.exists(),
        "{} is a second copy of the CRDs: remove it",
        retired.display()
    );
}
