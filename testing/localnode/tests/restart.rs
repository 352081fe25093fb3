//! Starting and stopping the node repeatedly, with a Pod running each time, leaves no interface,
//! network namespace, nftables table, mount or process behind.

mod support;

use std::time::{Duration, Instant};

use capstan_localnode::{LocalNode, LocalNodeConfig, host_leftovers};
use capstan_testenv::ControlPlane;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(120);

fn our_mounts(state_dir: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(state_dir) || l.contains("/run/netns/capst"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_starts_and_stops_leave_nothing_behind() {
    let Some((client, ns)) = namespace_for_own_node("five_starts_and_stops_leave_nothing_behind", "restart").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleeper}
spec:
  replicas: 1
  selector: {matchLabels: {app: sleeper}}
  template:
    metadata: {labels: {app: sleeper}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: sleep
        image: busybox:1.36
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#,
    )
    .await;
    let mut previous = String::new();
    for round in 1..=5 {
        let started = Instant::now();
        let node = LocalNode::start(LocalNodeConfig::new(ControlPlane::shared().kubeconfig_path()))
            .await
            .expect("the node starts");
        let state_dir = node.state_dir().to_string_lossy().into_owned();
        let pods = eventually(&format!("round {round}: a Running sleeper Pod"), TIMEOUT, || async {
            let pods = ready_pods(&client, &ns, "app=sleeper").await;
            let fresh = pods
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some(previous.as_str()));
            if pods.len() == 1 && fresh {
                Ok(pods)
            } else {
                Err(describe(&pods))
            }
        })
        .await;
        let name = pods[0].metadata.name.clone().expect("name");
        let pid = node.container_pid(&ns, &name, "sleep").expect("a container pid");
        let netns = node.pod_netns(&ns, &name).expect("a netns");
        previous = name;
        assert!(
            !host_leftovers().is_empty(),
            "the running node shows its bridge and {netns}"
        );
        node.stop().await.expect("the node stops cleanly");
        eprintln!(
            "round {round}: up, Pod running, down in {:.2}s",
            started.elapsed().as_secs_f64()
        );
        let left = host_leftovers();
        assert!(left.is_empty(), "round {round}: left behind: {left:?}");
        assert!(
            our_mounts(&state_dir).is_empty(),
            "round {round}: mounts left: {:?}",
            our_mounts(&state_dir)
        );
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let alive = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|state| !state.trim().starts_with('Z'));
        assert!(
            !alive,
            "round {round}: the container process survived: {}",
            status.lines().take(8).collect::<Vec<_>>().join("; ")
        );
        assert!(
            !std::path::Path::new(&state_dir).exists(),
            "round {round}: {state_dir} survived"
        );
    }
}
