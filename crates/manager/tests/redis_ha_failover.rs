//! RedisHA failover end to end: the real `capstan-manager` binary, the local node running
//! Debian's `redis-server` and `redis-sentinel` with the configuration the operator renders, and a
//! client writing through the `<name>-master` Service every 100 ms with `WAIT 1`. One RedisHA
//! (3 Redis, 3 Sentinels, a password) goes through each fault in turn; after each, the master
//! Service routes to the one master, `status.master` names it, the Sentinels agree, and every
//! acknowledged write is still there. Outages are printed; the bound asserted is generous (these
//! are shared 2-core machines) and the goals live in `cargo xtask bench`.
use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use capstan_redis_ha::{
    RedisHA,
    build::COMPONENT_REDIS,
    members::REVISION_LABEL,
    observe::{Converged, Observer},
    write_probe::{ProbeLog, WriteProbe, count_existing},
};
use capstan_runtime::{labels, testing::eventually};
use capstan_testenv::{ControlPlane, local_node_available};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use tokio::time::Instant;

mod common;
use common::ManagerProcess;

const NAME: &str = "ha";
const PASSWORD: &str = "s3cret-for-the-failover-test";
/// Each fault must converge within this (generous on a shared 2-core machine).
const CONVERGE: Duration = Duration::from_secs(240);
/// The write outage each fault may cause in this test; the goals (2 s / 10 s) are the bench's.
const OUTAGE_BOUND: Duration = Duration::from_secs(30);
/// How long the master stays cut off (issue 13).
const CUT_FOR: Duration = Duration::from_secs(60);

struct Fixture {
    rhas: Api<RedisHA>,
    pods: Api<Pod>,
    observer: Observer,
    node: &'static capstan_localnode::LocalNode,
}

impl Fixture {
    fn redis_pod_selector() -> String {
        format!("{}={NAME},{}={COMPONENT_REDIS}", labels::INSTANCE, labels::COMPONENT)
    }

    async fn redis_pods(&self) -> Vec<Pod> {
        self.pods
            .list(&ListParams::default().labels(&Self::redis_pod_selector()))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    async fn converged(&self, what: &str, replicas: usize) -> Converged {
        let started = Instant::now();
        loop {
            let missing = match self.observer.converged(replicas).await {
                Ok(converged) => {
                    eprintln!("{what}: converged after {:?}: {converged:?}", started.elapsed());
                    return converged;
                }
                Err(missing) => missing,
            };
            assert!(
                started.elapsed() < CONVERGE,
                "{what}: not converged within {CONVERGE:?}: {missing}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until `status.master` names a Pod other than `old` and the master Service routes to
    /// it alone; returns when that was first seen.
    async fn new_master_routed(&self, old: &str) -> Instant {
        eventually("a new master behind the master Service", CONVERGE, || async {
            self.observer.new_master_routed(old).await.map(|_| Instant::now())
        })
        .await
    }

    /// Every write the probe saw acknowledged is on the master.
    async fn assert_no_acknowledged_write_lost(&self, probe: &ProbeLog, master: SocketAddr, what: &str) {
        let found = count_existing(master, Some(PASSWORD), &probe.acknowledged)
            .await
            .expect("reading the keys back through the master Service");
        assert_eq!(
            found,
            probe.acknowledged.len(),
            "{what}: acknowledged writes lost ({} of {} found)",
            found,
            probe.acknowledged.len()
        );
        eprintln!("{what}: all {found} acknowledged writes present");
    }
}

/// Prints and bounds the outage the probe saw between `fault` and `settled`, and checks writes
/// are acknowledged again afterwards.
async fn report_outage(probe: &WriteProbe, what: &str, fault: Instant, settled: Instant) -> Duration {
    eventually("acknowledged writes again", Duration::from_secs(60), || async {
        (probe.snapshot().acknowledged_since(settled) >= 3).then_some(())
    })
    .await;
    let log = probe.snapshot();
    let outage = log.longest_outage(fault, settled.max(fault));
    eprintln!(
        "{what}: write outage {outage:?} (client writing through the master Service every 100 ms; {} failed writes so far, last error {:?})",
        log.failures, log.last_error
    );
    assert!(outage <= OUTAGE_BOUND, "{what}: outage {outage:?} > {OUTAGE_BOUND:?}");
    outage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_ha_fails_over_on_each_fault_and_keeps_every_acknowledged_write() {
    if !local_node_available("a_redis_ha_fails_over_on_each_fault_and_keeps_every_acknowledged_write") {
        return;
    }
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &capstan_manager::crds()).await.expect("CRDs");
    let ns = cp.namespace(&client, "rha-failover").await.expect("namespace");
    let node = tokio::task::spawn_blocking(ControlPlane::shared_local_node)
        .await
        .expect("local node");
    let f = Fixture {
        rhas: Api::namespaced(client.clone(), &ns),
        pods: Api::namespaced(client.clone(), &ns),
        observer: Observer::new(client.clone(), &ns, NAME, Some(PASSWORD), "cluster.local"),
        node,
    };
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ha-auth"},
        "stringData": {"password": PASSWORD}
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
    let rha: RedisHA = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "RedisHA", "metadata": {"name": NAME},
        "spec": {"replicas": 3, "sentinel": {"replicas": 3}, "auth": {"secretName": "ha-auth"}}
    }))
    .expect("redis-ha");
    f.rhas
        .create(&PostParams::default(), &rha)
        .await
        .expect("create RedisHA");
    let manager_args = ["--namespace", ns.as_str(), "--controllers", "redis-ha"];
    let mut manager = Some(ManagerProcess::start(cp.kubeconfig_path(), &manager_args));

    let mut state = f.converged("created", 3).await;
    assert_eq!(state.master, format!("{NAME}-0"), "ordinal 0 bootstraps as master");
    let master_service = f.observer.master_service().await.expect("the master Service");
    let probe = WriteProbe::start(
        master_service,
        Some(PASSWORD.to_owned()),
        "probe",
        Duration::from_millis(100),
        20_000,
    );
    eventually("the first acknowledged writes", Duration::from_secs(60), || async {
        (probe.snapshot().acknowledged.len() >= 10).then_some(())
    })
    .await;
    let mut outages = Vec::new();

    // 1. The master Pod deleted: its preStop hands over before the process stops.
    let old = state.master.clone();
    let fault = Instant::now();
    f.pods
        .delete(&old, &DeleteParams::default())
        .await
        .expect("delete the master Pod");
    let routed = f.new_master_routed(&old).await;
    outages.push((
        "master Pod deleted",
        report_outage(&probe, "master Pod deleted", fault, routed).await,
    ));
    let after = f.converged("master Pod deleted", 3).await;
    assert_ne!(after.master, old);
    assert_eq!(after.epoch, state.epoch + 1, "exactly one failover");
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "master Pod deleted")
        .await;
    state = after;

    // 2. The master's redis-server killed with SIGKILL; the Pod stays and its container restarts.
    let old = state.master.clone();
    let fault = Instant::now();
    f.node
        .kill_container(&ns, &old, "redis", 9)
        .await
        .expect("SIGKILL the master's redis-server");
    let routed = f.new_master_routed(&old).await;
    outages.push((
        "master killed",
        report_outage(&probe, "master killed", fault, routed).await,
    ));
    let after = f.converged("master killed", 3).await;
    assert_ne!(after.master, old, "the restarted Pod never serves as master again");
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "master killed")
        .await;
    state = after;

    // 3. The master cut off for 60 s: the others fail over, the isolated master stops taking
    //    writes (min-replicas-to-write), and rejoins as a replica once the network heals.
    let old = state.master.clone();
    let fault = Instant::now();
    f.node.cut_network(&ns, &old).await.expect("cut the master off");
    let routed = f.new_master_routed(&old).await;
    outages.push((
        "master cut off",
        report_outage(&probe, "master cut off", fault, routed).await,
    ));
    let refused = eventually(
        "the isolated master refuses writes",
        Duration::from_secs(45),
        || async {
            let out = f
                .node
                .exec(
                    &ns,
                    &old,
                    "redis",
                    &["redis-cli", "--no-auth-warning", "-a", PASSWORD, "SET", "isolated", "x"],
                )
                .await
                .ok()?;
            let reply = String::from_utf8_lossy(&out.stdout).into_owned();
            reply.contains("NOREPLICAS").then_some(reply)
        },
    )
    .await;
    eprintln!("the isolated master answers: {}", refused.trim());
    tokio::time::sleep(CUT_FOR.saturating_sub(fault.elapsed())).await;
    f.node.restore_network(&ns, &old).await.expect("restore the network");
    let after = f.converged("network restored", 3).await;
    assert_ne!(after.master, old, "the isolated master rejoined as a replica");
    let isolated = count_existing(master_service, Some(PASSWORD), &["isolated".to_owned()])
        .await
        .expect("read");
    assert_eq!(isolated, 0, "a write refused by the isolated master never appears");
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "master cut off")
        .await;
    state = after;

    // 4. The operator killed during a failover and restarted: it converges without a second one.
    let old = state.master.clone();
    let fault = Instant::now();
    f.pods
        .delete(&old, &DeleteParams::default())
        .await
        .expect("delete the master Pod");
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(running) = manager.take() {
        running.kill();
    }
    eprintln!(
        "operator SIGKILLed {:?} after the master Pod was deleted",
        fault.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    manager = Some(ManagerProcess::start(cp.kubeconfig_path(), &manager_args));
    let routed = f.new_master_routed(&old).await;
    outages.push((
        "master deleted, operator killed",
        report_outage(&probe, "master deleted, operator killed", fault, routed).await,
    ));
    let after = f.converged("operator restarted", 3).await;
    assert_eq!(after.epoch, state.epoch + 1, "one failover, no second needless one");
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "operator killed")
        .await;
    state = after;

    // 5. Scale 3 → 5 → 3 while the client writes: the master is never removed.
    f.rhas
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale to 5");
    let up = f.converged("scaled to 5", 5).await;
    assert_eq!(up.redis_pods, 5);
    f.rhas
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale to 3");
    let down = f.converged("scaled back to 3", 3).await;
    let ordinal: u32 = down
        .master
        .trim_start_matches(&format!("{NAME}-"))
        .parse()
        .expect("ordinal");
    assert!(ordinal < 3, "the master is among the Pods kept: {}", down.master);
    assert!(
        down.epoch <= state.epoch + 1,
        "at most one planned failover for the scale"
    );
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "scale 3 → 5 → 3")
        .await;
    state = down;

    // 6. A spec change that rolls every Pod (OnDelete: the operator rolls replicas, fails over
    //    once, then rolls the old master).
    let before_roll: BTreeSet<String> = f.redis_pods().await.iter().filter_map(|p| p.uid()).collect();
    f.rhas
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"config": {"maxmemory": "96mb"}}})),
        )
        .await
        .expect("change the config");
    let sets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    eventually("every Redis Pod runs the new template", CONVERGE * 2, || async {
        let set = sets.get(NAME).await.ok()?;
        let status = set.status?;
        (status.observed_generation >= set.metadata.generation).then_some(())?;
        let revision = status.update_revision?;
        let pods = f.redis_pods().await;
        (pods.len() == 3
            && pods.iter().all(|p| {
                p.labels().get(REVISION_LABEL) == Some(&revision)
                    && p.uid().is_some_and(|uid| !before_roll.contains(&uid))
            }))
        .then_some(())
    })
    .await;
    let rolled = f.converged("rolled", 3).await;
    assert_eq!(
        rolled.epoch,
        state.epoch + 1,
        "the roll fails over exactly once (planned)"
    );
    let log = probe.stop().await;
    f.assert_no_acknowledged_write_lost(&log, master_service, "roll").await;

    eprintln!("\nRedisHA failover outages (goals: 2 s for a deleted Pod, 10 s for a kill or cut):");
    for (what, outage) in &outages {
        eprintln!("  {what:<34} {outage:?}");
    }
    eprintln!(
        "  {} writes acknowledged, {} failed or unacknowledged in all",
        log.acknowledged.len(),
        log.failures
    );
    if let Some(running) = manager.take() {
        running.stop();
    }
}
