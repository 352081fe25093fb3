//! An object the apiserver refuses (422) is reported, not retried: the Memcached gets
//! `Degraded=True` with the server's message, one Warning, and no further apply until its spec
//! changes.
use capstan_memcached::Memcached;
use capstan_testenv::{ControlPlane, audit, eventually, spawn_manager};
use kube::{
    Api, Client, CustomResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const AGENT: &str = "capstan-manager-test-rejected/1";

#[tokio::test]
async fn a_deployment_the_apiserver_refuses_makes_the_memcached_degraded_without_retries() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &[Memcached::crd()]).await.expect("CRD");
    let ns = cp.namespace(&client, "rejected").await.expect("namespace");
    let audit_log = cp.audit_log_path().expect("audit log").to_owned();
    let mut config = cp.kube_config();
    config
        .headers
        .push((http::header::USER_AGENT, http::HeaderValue::from_static(AGENT)));
    let manager_client = Client::try_from(config).expect("client");
    let manager = spawn_manager(manager_client, &ns, |m| m.add(capstan_memcached::controller))
        .await
        .expect("manager");
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    // Requests above limits: valid for the Memcached schema, refused by Deployment validation.
    let mc: Memcached = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": "cache"},
        "spec": {"size": 1, "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}
    }))
    .expect("memcached");
    memcacheds.create(&PostParams::default(), &mc).await.expect("create");
    let degraded = eventually("Degraded=True with the server's message", WAIT, || async {
        let status = memcacheds.get("cache").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
    })
    .await;
    eprintln!("Degraded: {} — {}", degraded.reason, degraded.message);
    assert_eq!(degraded.reason, "Rejected");
    assert!(
        degraded.message.contains("must be less than or equal to memory limit"),
        "{}",
        degraded.message
    );

    // Reported once (plus the reconcile its own status write causes), then quiet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = audit::mark(&audit_log);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let applies: Vec<String> = audit::since(&audit_log, mark)
        .expect("audit")
        .into_iter()
        .filter(|e| e.from_user_agent(AGENT) && e.verb == "patch" && e.target() == "deployments")
        .map(|e| e.request_uri)
        .collect();
    assert!(applies.is_empty(), "no retries without a change: {applies:?}");
    let attempts = manager
        .metric(r#"capstan_reconcile_errors_by_reason_total{controller="memcached",reason="invalid"}"#)
        .await;
    eprintln!("refused applies counted: {attempts}");
    assert!((1.0..=2.0).contains(&attempts), "{attempts}");

    // Fixing the spec clears it.
    let fix = serde_json::json!({"spec": {"resources": {"requests": {"memory": "512Mi"}}}});
    memcacheds
        .patch("cache", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fix");
    eventually("Degraded=False after the fix", WAIT, || async {
        let status = memcacheds.get("cache").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "False")
            .then_some(())
    })
    .await;
    manager.stop().await.expect("stops");
}
