//! The Memcached controller with a real workload: on the local node (capstan-localnode) its Pods
//! run memcached as real processes, so readiness, `Available` and `status.nodes` follow real Pods.
//! Its own test binary: a local node runs every Pending Pod of the control plane it serves.
use capstan_memcached::{AVAILABLE, Memcached};
use capstan_runtime::{
    conditions::{READY, is_true},
    testing::{eventually, spawn_manager},
};
use capstan_testenv::{ControlPlane, local_node_available};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(120);

/// memcached's `version` command on a Pod IP (the local node's Pod network, on this host).
async fn memcached_version(ip: &str) -> Result<String, String> {
    let connect = TcpStream::connect((ip, 11211));
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| format!("{ip}: connect timed out"))?
        .map_err(|e| format!("{ip}: {e}"))?;
    stream.write_all(b"version\r\n").await.map_err(|e| e.to_string())?;
    let mut reply = vec![0; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
        .await
        .map_err(|_| format!("{ip}: no reply"))?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&reply[..n]).trim().to_owned())
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memcached_becomes_available_with_pods_that_answer_and_follows_a_deleted_pod() {
    if !local_node_available("a_memcached_becomes_available_with_pods_that_answer_and_follows_a_deleted_pod") {
        return;
    }
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &[Memcached::crd()]).await.expect("CRD");
    let ns = cp.namespace(&client, "mc-node").await.expect("namespace");
    tokio::task::spawn_blocking(ControlPlane::shared_local_node)
        .await
        .expect("local node");
    let manager = spawn_manager(client.clone(), &ns, |m| m.add(capstan_memcached::controller))
        .await
        .expect("manager");
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let mc: Memcached = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": "cache"}, "spec": {"size": 3}
    }))
    .expect("memcached");
    memcacheds.create(&PostParams::default(), &mc).await.expect("create");

    let status = eventually("readyReplicas 3, Available and Ready", WAIT, || async {
        let status = memcacheds.get("cache").await.ok()?.status?;
        (status.ready_replicas == 3 && is_true(&status.conditions, AVAILABLE) && is_true(&status.conditions, READY))
            .then_some(status)
    })
    .await;
    assert_eq!(status.nodes.len(), 3, "{:?}", status.nodes);

    let running = pods.list(&ListParams::default()).await.expect("pods").items;
    assert_eq!(running.len(), 3);
    for pod in &running {
        let ip = pod_ip(pod).expect("a Running Pod has an IP");
        let version = memcached_version(&ip).await.expect("memcached answers");
        assert!(version.starts_with("VERSION 1."), "{}: {version}", pod.name_any());
        assert!(
            status.nodes.contains(&pod.name_any()),
            "status.nodes lists {}",
            pod.name_any()
        );
    }

    let victim = &running[0];
    let (victim_name, victim_ip) = (victim.name_any(), pod_ip(victim).expect("ip"));
    pods.delete(&victim_name, &DeleteParams::default())
        .await
        .expect("delete a Pod");
    let replaced = eventually("status.nodes follows the replacement Pod", WAIT, || async {
        let status = memcacheds.get("cache").await.ok()?.status?;
        (status.ready_replicas == 3 && status.nodes.len() == 3 && !status.nodes.contains(&victim_name))
            .then_some(status.nodes)
    })
    .await;
    let newcomer = replaced
        .iter()
        .find(|name| !running.iter().any(|p| &p.name_any() == *name))
        .expect("a new Pod");
    // readyReplicas may still count the old Pod while it terminates; wait for the new one to run.
    let new_ip = eventually("the replacement Pod runs with an IP", WAIT, || async {
        pod_ip(&pods.get(newcomer).await.ok()?)
    })
    .await;
    assert_ne!(new_ip, victim_ip, "the replacement has a new IP");
    assert!(
        memcached_version(&new_ip)
            .await
            .expect("answers")
            .starts_with("VERSION")
    );
    manager.stop().await.expect("manager stops");
}
