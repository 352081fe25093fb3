//! Leader election between real `capstan-manager` processes sharing one Lease: one writer at a
//! time, takeover after SIGKILL within the lease duration plus a retry, and within a retry
//! after a graceful SIGTERM (the leader releases the Lease).
use capstan_memcached::Memcached;
use capstan_testenv::{ControlPlane, eventually, http_get};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use std::time::{Duration, Instant};

mod common;
use common::ManagerProcess;

const WAIT: Duration = Duration::from_secs(60);

fn elect_args(ns: &str) -> Vec<&str> {
    vec!["--namespace", ns, "--leader-elect", "--leader-election-namespace", ns]
}

/// Waits until exactly one of `managers` is leader and returns its index.
async fn sole_leader(managers: &[&ManagerProcess]) -> usize {
    eventually("exactly one manager leads", WAIT, || async {
        let mut leaders = Vec::new();
        for (i, m) in managers.iter().enumerate() {
            if m.is_leader().await {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

async fn writes(manager: &ManagerProcess) -> f64 {
    manager.metric("capstan_apply_total{").await
}

async fn replicas(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    deployments.get_opt(name).await.ok()??.spec.replicas
}

#[tokio::test]
async fn one_leader_writes_and_a_follower_takes_over_after_kill_and_after_sigterm() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &capstan_manager::crds()).await.expect("CRDs");
    let ns = cp.namespace(&client, "leader").await.expect("namespace");
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);

    let first = ManagerProcess::start(cp.kubeconfig_path(), &elect_args(&ns));
    let second = ManagerProcess::start(cp.kubeconfig_path(), &elect_args(&ns));
    let leader_index = sole_leader(&[&first, &second]).await;
    let (leader, follower) = if leader_index == 0 {
        (first, second)
    } else {
        (second, first)
    };
    // A follower is ready (caches synced) so a rolling update can proceed, but never leads.
    eventually("the follower is ready", WAIT, || async {
        (http_get(follower.health, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;

    let mc: Memcached = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": "cache"}, "spec": {"size": 1}
    }))
    .expect("memcached");
    memcacheds.create(&PostParams::default(), &mc).await.expect("create");
    eventually("the leader creates the Deployment", WAIT, || async {
        replicas(&deployments, "cache").await
    })
    .await;
    eventually("the leader writes status", WAIT, || async {
        memcacheds.get("cache").await.ok()?.status.map(|_| ())
    })
    .await;
    let (leader_writes, follower_writes) = (writes(&leader).await, writes(&follower).await);
    eprintln!("applies: leader {leader_writes}, follower {follower_writes}");
    assert!(leader_writes >= 2.0, "the leader applied the Deployment and the status");
    assert_eq!(follower_writes, 0.0, "a follower must not write");
    assert_eq!(
        follower.metric("controller_runtime_reconcile_total{").await,
        0.0,
        "a follower must not reconcile"
    );

    // SIGKILL: the Lease is not released; the follower waits out the lease duration (15 s).
    leader.kill();
    let killed_at = Instant::now();
    let scale = serde_json::json!({"spec": {"size": 2}});
    memcacheds
        .patch("cache", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scale while leaderless");
    eventually("the follower takes over and converges the change", WAIT, || async {
        (follower.is_leader().await && replicas(&deployments, "cache").await == Some(2)).then_some(())
    })
    .await;
    let takeover = killed_at.elapsed();
    eprintln!("takeover after SIGKILL: {takeover:?} (lease duration 15 s + retry 2 s)");
    assert!(
        takeover <= Duration::from_secs(15 + 2 + 8),
        "takeover took {takeover:?}"
    );
    // Not before the killed leader's lease could have expired: it renewed at most one retry
    // (2 s) before the kill, and the follower saw that renewal at most one retry later.
    assert!(
        takeover >= Duration::from_secs(15 - 2 - 2),
        "a follower took over {takeover:?} after the kill, before the lease could expire"
    );

    // SIGTERM: the leader drains, releases the Lease, and a new follower takes over within a retry.
    let successor = ManagerProcess::start(cp.kubeconfig_path(), &elect_args(&ns));
    eventually("the new follower is ready", WAIT, || async {
        (http_get(successor.health, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    assert!(!successor.is_leader().await);
    let terminated_at = Instant::now();
    follower.stop();
    eventually("the successor leads after SIGTERM", WAIT, || async {
        successor.is_leader().await.then_some(())
    })
    .await;
    let handover = terminated_at.elapsed();
    eprintln!("handover after SIGTERM: {handover:?} (target 3 s)");
    assert!(handover <= Duration::from_secs(6), "handover took {handover:?}");
    successor.stop();
}
