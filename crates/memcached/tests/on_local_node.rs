//! The Memcached controller with a real workload: on the local node (capstan-localnode) its Pods
//! run memcached as real processes, so readiness, `Available` and `status.nodes` follow real Pods.
//! Its own test binary: a local node runs every Pending Pod of the control plane it serves.
use capstan_memcached::{AVAILABLE, DEGRADED, Memcached, PROGRESSING};
use capstan_runtime::conditions::{READY, is_true};
use capstan_testenv::{ControlPlane, RunningManager, eventually, local_node_available, spawn_manager};
use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
};
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};
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
    cp.apply_crds(&client, &[capstan_memcached::crd()]).await.expect("CRD");
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

/// A namespace with the Memcached CRD, the local node and a manager running the controller.
async fn on_local_node(prefix: &str) -> (kube::Client, String, RunningManager) {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    cp.apply_crds(&client, &[capstan_memcached::crd()]).await.expect("CRD");
    let ns = cp.namespace(&client, prefix).await.expect("namespace");
    tokio::task::spawn_blocking(ControlPlane::shared_local_node)
        .await
        .expect("local node");
    let manager = spawn_manager(client.clone(), &ns, |m| m.add(capstan_memcached::controller))
        .await
        .expect("manager");
    (client, ns, manager)
}

fn memcached(name: &str, spec: serde_json::Value) -> Memcached {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": name}, "spec": spec
    }))
    .expect("memcached")
}

/// The IPs of the Running, ready Pods of Memcached `name`.
async fn ready_pod_ips(pods: &Api<Pod>, name: &str) -> BTreeSet<String> {
    let selector = format!("app.kubernetes.io/name=memcached,app.kubernetes.io/instance={name}");
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(pod_ip)
        .collect()
}

/// What `getent hosts <name>` answers inside `pod` (through the node's cluster DNS and the
/// Pod's search path), as a set of addresses.
async fn resolve_in_pod(ns: &str, pod: &str, name: &str) -> Result<BTreeSet<String>, String> {
    let node = ControlPlane::shared_local_node();
    let output = node
        .exec(ns, pod, "memcached", &["getent", "ahostsv4", name])
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_is_progressing_until_rolled_out_and_the_service_resolves_to_the_ready_pods() {
    if !local_node_available(
        "a_template_change_is_progressing_until_rolled_out_and_the_service_resolves_to_the_ready_pods",
    ) {
        return;
    }
    let (client, ns, manager) = on_local_node("mc-rollout").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    memcacheds
        .create(
            &PostParams::default(),
            &memcached("cache", serde_json::json!({"size": 2})),
        )
        .await
        .expect("create");
    eventually("Ready with 2 Pods", WAIT, || async {
        let status = memcacheds.get("cache").await.ok()?.status?;
        (status.ready_replicas == 2 && is_true(&status.conditions, READY)).then_some(())
    })
    .await;

    // The headless Service's name resolves, inside a Pod, to exactly the ready Pods.
    let before = ready_pod_ips(&pods, "cache").await;
    assert_eq!(before.len(), 2, "{before:?}");
    let asker = pods
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .find(|p| pod_ip(p).is_some_and(|ip| before.contains(&ip)))
        .expect("a ready Pod")
        .name_any();
    let resolved = eventually("the Service name resolves to both ready Pods", WAIT, || async {
        resolve_in_pod(&ns, &asker, "cache")
            .await
            .ok()
            .filter(|ips| *ips == before)
    })
    .await;
    eprintln!("cache resolves to {resolved:?}");

    // Watch the Memcached from here on: every status capstan writes is seen, none is missed
    // between polls.
    let current = memcacheds.get("cache").await.expect("get");
    let resource_version = current.resource_version().expect("resourceVersion");
    let mut watch = memcacheds
        .watch(&WatchParams::default().fields("metadata.name=cache"), &resource_version)
        .await
        .expect("watch")
        .boxed();
    let started = Instant::now();
    memcacheds
        .patch(
            "cache",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"memoryMB": 48}})),
        )
        .await
        .expect("change the memory (a template change)");
    let mut statuses = Vec::new();
    let ready_at = tokio::time::timeout(WAIT, async {
        while let Some(event) = watch.next().await {
            let (WatchEvent::Added(mc) | WatchEvent::Modified(mc)) = event.expect("watch event") else {
                continue;
            };
            let Some(status) = mc.status else { continue };
            if status.observed_generation != Some(2) {
                continue;
            }
            let ready = is_true(&status.conditions, READY);
            statuses.push((is_true(&status.conditions, PROGRESSING), ready, status.ready_replicas));
            if ready {
                return started.elapsed();
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("Ready again within the timeout");
    eprintln!("statuses for generation 2 (progressing, ready, readyReplicas): {statuses:?}; Ready after {ready_at:?}");
    assert_eq!(
        statuses.first().map(|s| (s.0, s.1)),
        Some((true, false)),
        "the first status for the new spec says Progressing, not Ready"
    );
    // Ready means rolled out: every Pod runs the new template.
    let deployment = deployments.get("cache").await.expect("deployment");
    let deployment_status = deployment.status.clone().expect("status");
    assert!(deployment_status.observed_generation >= deployment.metadata.generation);
    assert_eq!(
        (deployment_status.updated_replicas, deployment_status.ready_replicas),
        (Some(2), Some(2))
    );
    let after = ready_pod_ips(&pods, "cache").await;
    for pod in pods.list(&ListParams::default()).await.expect("pods").items {
        if pod_ip(&pod).is_some_and(|ip| after.contains(&ip)) {
            let args = pod.spec.as_ref().expect("spec").containers[0]
                .args
                .clone()
                .expect("args");
            assert_eq!(args[..2], ["-m".to_owned(), "48".to_owned()], "{}", pod.name_any());
        }
    }
    assert!(
        ready_at > Duration::from_millis(500),
        "a rollout of 2 real Pods takes time: {ready_at:?}"
    );

    // The Service follows the new Pods.
    let asker = pods
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .find(|p| pod_ip(p).is_some_and(|ip| after.contains(&ip)))
        .expect("a ready Pod")
        .name_any();
    eventually("the Service name resolves to the new ready Pods", WAIT, || async {
        let now = ready_pod_ips(&pods, "cache").await;
        let ips = resolve_in_pod(&ns, &asker, "cache").await.ok()?;
        (ips == now && now.len() == 2).then_some(())
    })
    .await;
    manager.stop().await.expect("manager stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_the_node_cannot_run_is_degraded_once_the_progress_deadline_passes() {
    if !local_node_available("an_image_the_node_cannot_run_is_degraded_once_the_progress_deadline_passes") {
        return;
    }
    let (client, ns, manager) = on_local_node("mc-badimage").await;
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let deadline = 5;
    let started = Instant::now();
    memcacheds
        .create(
            &PostParams::default(),
            &memcached(
                "cache",
                serde_json::json!({"size": 1, "image": "registry.invalid/no-such-image:1", "progressDeadlineSeconds": deadline}),
            ),
        )
        .await
        .expect("create");
    let degraded = eventually("Degraded=True/ProgressDeadlineExceeded", WAIT, || async {
        let status = memcacheds.get("cache").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == DEGRADED && c.status == "True" && c.reason == "ProgressDeadlineExceeded")
    })
    .await;
    let took = started.elapsed();
    eprintln!("Degraded after {took:?}: {}", degraded.message);
    assert!(
        took >= Duration::from_secs(deadline),
        "not before the {deadline} s deadline: {took:?}"
    );
    assert!(degraded.message.contains("progress"), "{}", degraded.message);
    let status = memcacheds.get("cache").await.expect("get").status.expect("status");
    assert!(!is_true(&status.conditions, READY));
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == PROGRESSING)
        .expect("Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "ProgressDeadlineExceeded")
    );
    manager.stop().await.expect("manager stops");
}
