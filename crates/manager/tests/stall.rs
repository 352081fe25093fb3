//! An apiserver that accepts connections and never answers (SIGSTOPped: the kernel still
//! completes TCP handshakes, nothing replies). The manager must stay alive and say so, its leader
//! must step down, and SIGTERM must still end it within the default 30 s termination grace
//! period (drain deadline, bounded Lease release). Its own test binary: stalling the shared
//! apiserver would stall every other test of the binary.
use capstan_memcached::Memcached;
use capstan_testenv::{ControlPlane, eventually, http_get};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::PostParams};
use std::{
    process::Command,
    time::{Duration, Instant},
};

mod common;
use common::ManagerProcess;

const WAIT: Duration = Duration::from_secs(60);

/// Continues the apiserver when dropped, so a failing test does not leave it stopped.
struct Stalled(u32);

impl Stalled {
    fn apiserver(cp: &ControlPlane) -> Stalled {
        let pid = cp.pid("kube-apiserver").expect("apiserver pid");
        signal("-STOP", pid);
        Stalled(pid)
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: u32) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which} {pid}");
}

#[tokio::test]
async fn a_leader_facing_a_stalled_apiserver_steps_down_stays_alive_and_exits_within_the_grace_period() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &capstan_manager::crds()).await.expect("CRDs");
    let ns = cp.namespace(&client, "stall").await.expect("namespace");
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let mut manager = ManagerProcess::start(
        cp.kubeconfig_path(),
        &["--namespace", &ns, "--leader-elect", "--leader-election-namespace", &ns],
    );
    eventually("the manager leads", WAIT, || async {
        manager.is_leader().await.then_some(())
    })
    .await;
    let mc: Memcached = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": "cache"}, "spec": {"size": 0}
    }))
    .expect("memcached");
    memcacheds.create(&PostParams::default(), &mc).await.expect("create");
    eventually("converged", WAIT, || async {
        deployments.get_opt("cache").await.ok()?.map(|_| ())
    })
    .await;

    let stalled = Stalled::apiserver(cp);
    let stalled_at = Instant::now();
    // The renew deadline is 10 s; each renewal attempt times out instead of hanging.
    eventually("the leader steps down", Duration::from_secs(30), || async {
        (!manager.is_leader().await).then_some(())
    })
    .await;
    let stepped_down = stalled_at.elapsed();
    eprintln!("stepped down {stepped_down:?} after the apiserver stalled");
    assert!(
        stepped_down >= Duration::from_secs(7),
        "not before the renew deadline (10 s after the last renewal): {stepped_down:?}"
    );
    let (code, _) = http_get(manager.health, "/healthz").await.expect("healthz");
    assert_eq!(code, 200, "alive while the apiserver stalls");
    assert!(manager.alive());

    let terminated_at = Instant::now();
    let exit = manager.terminate(Duration::from_secs(30));
    let took = terminated_at.elapsed();
    eprintln!("exited {took:?} after SIGTERM with the apiserver stalled: {exit:?}");
    let exit = exit.expect("the manager exits within the 30 s termination grace period");
    assert!(exit.success(), "{exit}");
    drop(stalled);
}
