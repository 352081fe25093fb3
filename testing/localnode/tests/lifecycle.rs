//! Init containers hand data to containers, readiness gates endpoints, crashing containers restart
//! with growing back-off.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::Api;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_containers_output_is_visible_to_the_main_container() {
    let Some(NodeTest { client, ns, node }) =
        on_local_node("an_init_containers_output_is_visible_to_the_main_container", "init").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: greeter, labels: {app: greeter}}
spec:
  initContainers:
  - name: write
    image: busybox:1.36
    command: ["sh", "-c", "echo hello-from-init > /work/greeting"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: read
    image: busybox:1.36
    command: ["sh", "-c", "cat /work/greeting; exec sleep 3600"]
    volumeMounts: [{name: work, mountPath: /work}]
  volumes: [{name: work, emptyDir: {}}]
"#,
    )
    .await;
    eventually(
        "the main container to print the init container's file",
        TIMEOUT,
        || async {
            let log = node.container_log(&ns, "greeter", "read").ok_or("no log yet")?;
            let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
            if text.contains("hello-from-init") {
                Ok(())
            } else {
                Err(format!("log: {text:?}"))
            }
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually("the Pod Running and Ready, Initialized", TIMEOUT, || async {
        let pod = pods.get("greeter").await.map_err(|e| e.to_string())?;
        let status = pod.status.clone().unwrap_or_default();
        let initialized = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Initialized" && c.status == "True");
        if is_ready(&pod) && initialized {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_readiness_probe_keeps_a_pod_out_of_endpoints() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("a_failing_readiness_probe_keeps_a_pod_out_of_endpoints", "readiness").await
    else {
        return;
    };
    let pod = |name: &str, probe_port: u16| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  containers:
  - name: memcached
    image: memcached:1.6
    ports: [{{containerPort: 11211, name: memcached}}]
    readinessProbe:
      tcpSocket: {{port: {probe_port}}}
      periodSeconds: 1
      failureThreshold: 1
"#
        )
    };
    apply_yaml(&client, &ns, &pod("good", 11211)).await;
    apply_yaml(&client, &ns, &pod("bad", 11999)).await;
    apply_yaml(
        &client,
        &ns,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 11211, protocol: TCP}]\n",
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let (good_ip, bad_ip) = eventually("both Pods running, only one ready", TIMEOUT, || async {
        let good = pods.get("good").await.map_err(|e| e.to_string())?;
        let bad = pods.get("bad").await.map_err(|e| e.to_string())?;
        let running = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        match (pod_ip(&good), pod_ip(&bad)) {
            (Some(g), Some(b)) if running(&good) && running(&bad) && is_ready(&good) => Ok((g, b)),
            _ => Err(describe(&[good, bad])),
        }
    })
    .await;
    // Long enough for many probe periods: the bad Pod must stay out all along.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(5) {
        let e = endpoints.get_opt("web").await.expect("endpoints").unwrap_or_default();
        let subsets = e.subsets.unwrap_or_default();
        let ready: Vec<String> = subsets
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .map(|a| a.ip.clone())
            .collect();
        let not_ready: Vec<String> = subsets
            .iter()
            .flat_map(|s| s.not_ready_addresses.iter().flatten())
            .map(|a| a.ip.clone())
            .collect();
        assert!(
            !ready.contains(&bad_ip),
            "the unready Pod {bad_ip} is in the endpoints: {ready:?}"
        );
        if watched.elapsed() > Duration::from_secs(2) {
            assert!(
                ready.contains(&good_ip),
                "the ready Pod {good_ip} is missing: {ready:?}"
            );
            assert!(
                not_ready.contains(&bad_ip),
                "the unready Pod is not listed as not ready: {not_ready:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let bad = pods.get("bad").await.expect("bad");
    assert!(!is_ready(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_restarts_with_growing_back_off() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("a_crashing_container_restarts_with_growing_back_off", "crash").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - name: crash
    image: busybox:1.36
    command: ["sh", "-c", "echo crashing; exit 3"]
"#,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // Record when restartCount changes; with a 1 s initial back-off the gaps are about 1, 2, 4 s.
    let mut seen: Vec<(i32, Instant)> = Vec::new();
    let started = Instant::now();
    let mut last_status = String::new();
    while seen.last().is_none_or(|(count, _)| *count < 4) {
        assert!(
            started.elapsed() < TIMEOUT,
            "restartCount did not reach 4: {last_status}"
        );
        if let Ok(pod) = pods.get("crasher").await {
            let status = pod
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|c| c.into_iter().next());
            if let Some(status) = status {
                last_status = format!("{status:?}");
                if seen.last().is_none_or(|(count, _)| *count != status.restart_count) {
                    seen.push((status.restart_count, Instant::now()));
                    if status.restart_count > 0 {
                        let terminated = status
                            .last_state
                            .and_then(|s| s.terminated)
                            .expect("lastState.terminated");
                        assert_eq!(terminated.exit_code, 3);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gaps: Vec<f64> = seen
        .windows(2)
        .filter(|w| w[0].0 >= 1)
        .map(|w| (w[1].1 - w[0].1).as_secs_f64())
        .collect();
    eprintln!(
        "restart counts {:?}, gaps between restarts {gaps:.2?} s",
        seen.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert!(gaps.len() >= 2, "too few restarts observed: {gaps:?}");
    for pair in gaps.windows(2) {
        assert!(pair[1] > pair[0] * 1.4, "back-off does not grow: {gaps:?}");
    }
    assert!(
        last_status.contains("CrashLoopBackOff") || last_status.contains("Running"),
        "{last_status}"
    );
}
