//! The Foo controller against a real apiserver (capstan-testenv): each test runs its own manager
//! scoped to its own namespace.
use capstan_foo::{Foo, FooSpec};
use capstan_runtime::testing::{RunningManager, eventually, spawn_manager};
use capstan_testenv::ControlPlane;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::{
    Api, Client, CustomResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn setup(prefix: &str) -> (Client, String, RunningManager) {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &[Foo::crd()])
        .await
        .expect("install the Foo CRD");
    let ns = cp.namespace(&client, prefix).await.expect("test namespace");
    let manager = spawn_manager(client.clone(), &ns, |m| m.add(capstan_foo::controller))
        .await
        .expect("manager starts");
    (client, ns, manager)
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
    let (client, ns, manager) = setup("foo-flip").await;
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
    let (client, ns, manager) = setup("foo-shared").await;
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

    delete_now(&pods, "jill").await.expect("delete Pod");
    wait_happy(&foos, "foo-a", false).await;
    wait_happy(&foos, "foo-b", false).await;
    manager.stop().await.expect("manager stops");
}

#[tokio::test]
async fn renaming_the_friend_re_evaluates_happiness() {
    let (client, ns, manager) = setup("foo-rename").await;
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
