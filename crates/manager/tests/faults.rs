//! Faults the manager must survive without losing or duplicating anything: an apiserver outage,
//! a SIGKILL in the middle of a burst, deletions while it is down, and a hundred objects it can
//! never converge. Each test holds `FAULTS` because an apiserver outage affects every test sharing
//! this binary's control plane.
use capstan_memcached::Memcached;
use capstan_testenv::{ControlPlane, eventually, http_get, namespace_with_crds};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use tokio::sync::Mutex;

mod common;
use capstan_testenv::audit;
use common::ManagerProcess;

static FAULTS: Mutex<()> = Mutex::const_new(());
const WAIT: Duration = Duration::from_secs(120);

fn memcached(name: &str, size: i32) -> Memcached {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": name}, "spec": {"size": size}
    }))
    .expect("memcached")
}

/// Every controller's CRDs and a fresh namespace; the manager runs as a process.
async fn setup(prefix: &str) -> (&'static ControlPlane, Client, String) {
    let (client, ns) = namespace_with_crds(capstan_manager::CONTROLLERS, prefix).await;
    (ControlPlane::shared(), client, ns)
}

async fn replicas(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    deployments.get_opt(name).await.ok()??.spec.replicas
}

#[tokio::test]
async fn the_manager_rides_out_a_20_s_apiserver_outage_and_converges_changes_made_after() {
    let _serial = FAULTS.lock().await;
    let (cp, client, ns) = setup("outage").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &["--namespace", &ns]);
    memcacheds
        .create(&PostParams::default(), &memcached("before", 1))
        .await
        .expect("create");
    eventually("converged before the outage", WAIT, || async {
        replicas(&deployments, "before").await
    })
    .await;

    tokio::task::spawn_blocking(|| ControlPlane::shared().stop_apiserver())
        .await
        .expect("stop apiserver");
    let down_since = Instant::now();
    while down_since.elapsed() < Duration::from_secs(20) {
        let (code, _) = http_get(manager.health, "/healthz")
            .await
            .expect("the manager still answers");
        assert_eq!(code, 200, "liveness must not fail while the apiserver is away");
        assert!(manager_alive(&manager), "the manager must keep running");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::task::spawn_blocking(|| ControlPlane::shared().start_apiserver())
        .await
        .expect("join")
        .expect("restart apiserver");
    let client = cp.client().await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let back = Instant::now();
    memcacheds
        .create(&PostParams::default(), &memcached("after", 2))
        .await
        .expect("create after the outage");
    memcacheds
        .patch(
            "before",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"size": 3}})),
        )
        .await
        .expect("scale after the outage");
    eventually("changes made after the outage converge", WAIT, || async {
        (replicas(&deployments, "after").await == Some(2) && replicas(&deployments, "before").await == Some(3))
            .then_some(())
    })
    .await;
    eprintln!("converged {:?} after the apiserver came back", back.elapsed());
    eventually("ready again", WAIT, || async {
        (http_get(manager.health, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    manager.stop();
}

fn manager_alive(manager: &ManagerProcess) -> bool {
    std::path::Path::new(&format!("/proc/{}", manager.pid())).exists()
}

#[tokio::test]
async fn a_manager_killed_mid_burst_converges_every_object_exactly_once_after_restart() {
    let _serial = FAULTS.lock().await;
    let (cp, client, ns) = setup("burst").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    const N: usize = 200;
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &["--namespace", &ns]);

    // Size 0 keeps the controller-manager from creating 200 Pods; the Deployments are the point.
    let create = |i: usize| {
        let memcacheds = memcacheds.clone();
        async move {
            memcacheds
                .create(&PostParams::default(), &memcached(&format!("mc-{i:03}"), 0))
                .await
                .map(|_| ())
        }
    };
    let mut creations = futures::stream::iter(0..N).map(create).buffer_unordered(16);
    let mut created = 0;
    let mut manager = Some(manager);
    while let Some(result) = creations.next().await {
        result.expect("create Memcached");
        created += 1;
        if created == N / 2 {
            manager.take().expect("running").kill();
            eprintln!("SIGKILLed the manager after {created} creations");
        }
    }
    drop(creations);
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &["--namespace", &ns]);
    let started = Instant::now();
    let owners: BTreeMap<String, String> = memcacheds
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|m| (m.name_any(), m.metadata.uid.unwrap_or_default()))
        .collect();
    assert_eq!(owners.len(), N);
    eventually(&format!("all {N} Memcacheds have their Deployment"), WAIT, || async {
        let list = deployments.list(&ListParams::default()).await.ok()?;
        (list.items.len() == N).then_some(())
    })
    .await;
    eprintln!("converged {N} objects {:?} after the restart", started.elapsed());
    let list = deployments
        .list(&ListParams::default())
        .await
        .expect("list Deployments");
    assert_eq!(
        list.items.len(),
        N,
        "exactly one Deployment per Memcached, nothing extra"
    );
    for d in &list.items {
        let owner = d.owner_references().first().expect("every Deployment is owned");
        assert_eq!(
            owners.get(&d.name_any()),
            Some(&owner.uid),
            "{} is owned by its own Memcached",
            d.name_any()
        );
    }
    eventually("every status observed its generation", WAIT, || async {
        let items = memcacheds.list(&ListParams::default()).await.ok()?.items;
        items
            .iter()
            .all(|m| m.status.as_ref().and_then(|s| s.observed_generation) == m.metadata.generation)
            .then_some(())
    })
    .await;
    manager.stop();
}

#[tokio::test]
async fn an_object_deleted_while_the_manager_is_down_is_cleaned_up_by_garbage_collection() {
    let _serial = FAULTS.lock().await;
    let (cp, client, ns) = setup("gc-down").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &["--namespace", &ns]);
    memcacheds
        .create(&PostParams::default(), &memcached("gone", 1))
        .await
        .expect("create");
    eventually("the Deployment exists", WAIT, || async {
        replicas(&deployments, "gone").await
    })
    .await;
    manager.stop();
    memcacheds
        .delete("gone", &DeleteParams::default())
        .await
        .expect("delete while the manager is down");
    // The garbage collector learns a new CRD on its 30 s discovery resync, hence the long wait.
    eventually(
        "the Deployment is garbage-collected without the manager",
        Duration::from_secs(180),
        || async { deployments.get_opt("gone").await.ok()?.is_none().then_some(()) },
    )
    .await;
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &["--namespace", &ns]);
    eventually("a restarted manager is ready", WAIT, || async {
        (http_get(manager.health, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    assert!(
        deployments.get_opt("gone").await.expect("get").is_none(),
        "nothing is recreated for a deleted Memcached"
    );
    manager.stop();
}

#[tokio::test]
async fn a_hundred_unconvergeable_objects_back_off_instead_of_hot_looping() {
    let _serial = FAULTS.lock().await;
    let (cp, client, ns) = setup("refused").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    const N: usize = 100;
    let foreign = |i: usize| -> Deployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("taken-{i:03}")},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "other"}},
                     "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        }))
        .expect("deployment")
    };
    futures::stream::iter(0..N)
        .map(|i| {
            let deployments = deployments.clone();
            async move {
                deployments
                    .create(&PostParams::default(), &foreign(i))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("foreign Deployments");
    let audit_log = cp.audit_log_path().expect("audit log").to_owned();
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &["--namespace", &ns]);
    eventually("ready", WAIT, || async {
        (http_get(manager.health, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    futures::stream::iter(0..N)
        .map(|i| {
            let memcacheds = memcacheds.clone();
            async move {
                memcacheds
                    .create(&PostParams::default(), &memcached(&format!("taken-{i:03}"), 1))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("Memcacheds");
    eventually("all report Degraded/ResourceExists", WAIT, || async {
        let items = memcacheds.list(&ListParams::default()).await.ok()?.items;
        items
            .iter()
            .all(|m| {
                m.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Degraded" && c.reason == "ResourceExists")
                })
            })
            .then_some(())
    })
    .await;
    // Measure a window after the first attempts: a hot loop would show thousands of requests.
    let window = Duration::from_secs(30);
    let offset = audit::mark(&audit_log);
    tokio::time::sleep(window).await;
    let requests = common::manager_requests(&audit_log, offset).len();
    let rate = requests as f64 / window.as_secs_f64();
    eprintln!(
        "{N} refused objects: {requests} manager requests in {window:?} ({rate:.1}/s, {:.2}/s per object)",
        rate / N as f64
    );
    // A foreign child is a permanent error: reported once, then nothing until the object changes.
    assert!(
        rate / (N as f64) < 1.0,
        "requests per object per second must stay bounded, saw {rate:.1}/s for {N} objects"
    );
    let untouched = deployments.list(&ListParams::default()).await.expect("list").items;
    assert!(
        untouched
            .iter()
            .all(|d| d.owner_references().is_empty() && d.spec.replicas == Some(0)),
        "foreign Deployments untouched"
    );
    manager.stop();
}
