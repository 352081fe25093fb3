//! The Foo controller against a real apiserver (capstan-testenv): each test runs its own manager
//! scoped to its own namespace.
use capstan_foo::{CONTROLLER, Foo, FooSpec};
use capstan_testenv::{ControlPlane, ControllerTest, RunningManager, audit, eventually};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::{
    Api, CustomResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The manager's own user agent, so the audit log tells its requests from the test's.
fn manager_agent(ns: &str) -> String {
    format!("capstan-foo-test/{ns}")
}

/// Successful Foo reconciles so far.
async fn reconciles(manager: &RunningManager) -> f64 {
    manager
        .metric(r#"controller_runtime_reconcile_total{controller="foo",result="success"}"#)
        .await
}

/// Waits until the reconcile count has not moved for a second, and returns it.
async fn settled_reconciles(manager: &RunningManager) -> f64 {
    let started = std::time::Instant::now();
    let mut last = reconciles(manager).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = reconciles(manager).await;
        if now == last {
            return now;
        }
        assert!(started.elapsed() < WAIT, "the Foo controller kept reconciling");
        last = now;
    }
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn delete_now(pods: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete(name, &now).await.map(|_| ())
}

async fn happy(foos: &Api<Foo>, name: &str) -> Option<bool> {
    foos.get(name).await.ok()?.status.map(|s| s.happy)
}

async fn wait_happy(foos: &Api<Foo>, name: &str, want: bool) {
    eventually(&format!("{name}.status.happy == {want}"), WAIT, || async {
        (happy(foos, name).await == Some(want)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn happiness_follows_the_friend_pod_being_created_and_deleted() {
    let ControllerTest { client, ns, manager } =
        ControllerTest::start_with_user_agent(CONTROLLER, "foo-flip", manager_agent).await;
    let foos = Api::<Foo>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);

    foos.create(
        &PostParams::default(),
        &Foo::new("foo-01", FooSpec { name: "jack".into() }),
    )
    .await
    .expect("create Foo");
    wait_happy(&foos, "foo-01", false).await;
    let status = foos.get("foo-01").await.expect("get").status.expect("status");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "FriendMissing")
    );
    assert_eq!(status.observed_generation, Some(1));

    pods.create(&PostParams::default(), &pod("jack"))
        .await
        .expect("create Pod");
    wait_happy(&foos, "foo-01", true).await;
    let status = foos.get("foo-01").await.expect("get").status.expect("status");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "FriendFound")
    );

    delete_now(&pods, "jack").await.expect("delete Pod");
    wait_happy(&foos, "foo-01", false).await;

    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn two_foos_naming_the_same_pod_both_follow_it_and_others_do_not() {
    let ControllerTest { client, ns, manager } =
        ControllerTest::start_with_user_agent(CONTROLLER, "foo-shared", manager_agent).await;
    let foos = Api::<Foo>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for (name, friend) in [("foo-a", "jill"), ("foo-b", "jill"), ("foo-c", "joe")] {
        foos.create(&PostParams::default(), &Foo::new(name, FooSpec { name: friend.into() }))
            .await
            .expect("create Foo");
    }
    for name in ["foo-a", "foo-b", "foo-c"] {
        wait_happy(&foos, name, false).await;
    }
    pods.create(&PostParams::default(), &pod("jill"))
        .await
        .expect("create Pod");
    wait_happy(&foos, "foo-a", true).await;
    wait_happy(&foos, "foo-b", true).await;
    assert_eq!(happy(&foos, "foo-c").await, Some(false), "foo-c names joe, not jill");

    // A Pod nobody names wakes nobody: no reconcile runs, nothing is written.
    let audit_log = ControlPlane::shared().audit_log_path().expect("audit log").to_owned();
    let before = settled_reconciles(&manager).await;
    let mark = audit::mark(&audit_log);
    pods.create(&PostParams::default(), &pod("stranger"))
        .await
        .expect("create Pod");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = reconciles(&manager).await;
    let writes: Vec<String> = audit::since(&audit_log, mark)
        .expect("audit log")
        .into_iter()
        .filter(|e| e.from_user_agent(&manager_agent(&ns)) && e.is_write())
        .map(|e| format!("{} {}", e.verb, e.request_uri))
        .collect();
    eprintln!("reconciles after a Pod nobody names: {before} -> {after}; writes: {writes:?}");
    assert_eq!(after, before, "a Pod no Foo names must not wake any Foo");
    assert!(writes.is_empty(), "{writes:?}");
    // The same signal moves when the Pod is named: joe appearing wakes foo-c.
    pods.create(&PostParams::default(), &pod("joe"))
        .await
        .expect("create Pod");
    wait_happy(&foos, "foo-c", true).await;
    assert!(
        reconciles(&manager).await > after,
        "the reconcile count shows a wake-up"
    );

    delete_now(&pods, "jill").await.expect("delete Pod");
    wait_happy(&foos, "foo-a", false).await;
    wait_happy(&foos, "foo-b", false).await;
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn renaming_the_friend_re_evaluates_happiness() {
    let ControllerTest { client, ns, manager } =
        ControllerTest::start_with_user_agent(CONTROLLER, "foo-rename", manager_agent).await;
    let foos = Api::<Foo>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod("jack"))
        .await
        .expect("create Pod");
    foos.create(
        &PostParams::default(),
        &Foo::new("foo-01", FooSpec { name: "jack".into() }),
    )
    .await
    .expect("create Foo");
    wait_happy(&foos, "foo-01", true).await;

    let rename = serde_json::json!({"spec": {"name": "joe"}});
    foos.patch("foo-01", &PatchParams::default(), &Patch::Merge(&rename))
        .await
        .expect("rename friend");
    wait_happy(&foos, "foo-01", false).await;
    assert_eq!(
        foos.get("foo-01")
            .await
            .expect("get")
            .status
            .and_then(|s| s.observed_generation),
        Some(2)
    );

    // jack going away no longer matters; joe appearing does.
    delete_now(&pods, "jack").await.expect("delete jack");
    pods.create(&PostParams::default(), &pod("joe"))
        .await
        .expect("create joe");
    wait_happy(&foos, "foo-01", true).await;
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn the_apiserver_rejects_a_foo_without_a_valid_friend_name() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &[Foo::crd()])
        .await
        .expect("install the Foo CRD");
    let ns = cp.namespace(&client, "foo-invalid").await.expect("namespace");
    let foos = Api::<Foo>::namespaced(client, &ns);
    for bad in ["", "Not_A_Name", "-leading-dash"] {
        let err = foos
            .create(&PostParams::default(), &Foo::new("bad", FooSpec { name: bad.into() }))
            .await
            .expect_err(bad);
        match err {
            kube::Error::Api(status) => assert_eq!(status.code, 422, "{bad:?}: {status:?}"),
            other => panic!("{bad:?}: expected a 422 validation error, got {other}"),
        }
    }
}
