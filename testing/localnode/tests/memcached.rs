//! Memcached Pods run for real, answer on their Pod IPs, are replaced with new addresses, and sit
//! behind a ClusterIP Service reachable from the host and from a Pod.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Endpoints, Pod, Service},
};
use kube::{Api, api::DeleteParams};
use support::*;

const TIMEOUT: Duration = Duration::from_secs(120);

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      securityContext: {{runAsUser: 11211, runAsGroup: 11211, runAsNonRoot: true}}
      containers:
      - name: memcached
        image: memcached:1.6
        args: ["-m", "64", "-o", "modern", "-v"]
        ports: [{{name: memcached, containerPort: 11211}}]
        readinessProbe:
          tcpSocket: {{port: memcached}}
          periodSeconds: 1
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memcached_deployment_runs_answers_and_replaces_a_deleted_pod() {
    let Some(NodeTest { client, ns, .. }) = on_local_node(
        "a_memcached_deployment_runs_answers_and_replaces_a_deleted_pod",
        "memcached",
    )
    .await
    else {
        return;
    };
    apply_yaml(&client, &ns, &deployment("memcached", 3)).await;

    let pods = eventually("3 Running Ready memcached Pods", TIMEOUT, || async {
        let pods = ready_pods(&client, &ns, "app=memcached").await;
        if pods.len() == 3 {
            Ok(pods)
        } else {
            Err(describe(&pods))
        }
    })
    .await;
    for pod in &pods {
        let ip = pod_ip(pod).expect("podIP");
        let answer = memcached_version(&format!("{ip}:11211"))
            .await
            .expect("memcached answers");
        assert!(answer.starts_with("VERSION "), "{ip} answered {answer:?}");
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually("Deployment readyReplicas 3 and Available", TIMEOUT, || async {
        let d = deployments.get("memcached").await.map_err(|e| e.to_string())?;
        let status = d.status.unwrap_or_default();
        let available = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"));
        if status.ready_replicas == Some(3) && available {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await;

    let victim = pods[0].clone();
    let victim_name = victim.metadata.name.clone().expect("name");
    let victim_ip = pod_ip(&victim).expect("ip");
    let pid = node()
        .await
        .container_pid(&ns, &victim_name, "memcached")
        .expect("a pid");
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.delete(&victim_name, &DeleteParams::default())
        .await
        .expect("delete");
    let replaced = eventually("a replacement Pod with a new IP", TIMEOUT, || async {
        let pods = ready_pods(&client, &ns, "app=memcached").await;
        let fresh = pods.iter().all(|p| p.metadata.name.as_deref() != Some(&victim_name));
        if pods.len() == 3 && fresh {
            Ok(pods)
        } else {
            Err(describe(&pods))
        }
    })
    .await;
    assert!(
        replaced.iter().all(|p| pod_ip(p).as_deref() != Some(&victim_ip)),
        "an IP was reused"
    );
    eventually("the deleted Pod's object and process to be gone", TIMEOUT, || async {
        let object = api.get_opt(&victim_name).await.map_err(|e| e.to_string())?;
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        if object.is_none() && !alive {
            Ok(())
        } else {
            Err(format!("object {} process {alive}", object.is_some()))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ip_service_answers_from_host_and_pod_and_follows_endpoints() {
    let Some(NodeTest { client, ns, .. }) = on_local_node(
        "a_cluster_ip_service_answers_from_host_and_pod_and_follows_endpoints",
        "service",
    )
    .await
    else {
        return;
    };
    apply_yaml(&client, &ns, &deployment("cache", 2)).await;
    apply_yaml(
        &client,
        &ns,
        "apiVersion: v1\nkind: Service\nmetadata: {name: cache}\nspec:\n  selector: {app: cache}\n  ports: [{name: memcached, port: 11211, targetPort: memcached, protocol: TCP}]\n",
    )
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let cluster_ip = services
        .get("cache")
        .await
        .expect("service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("clusterIP");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let ready_ips = || async {
        let e = endpoints.get_opt("cache").await.ok().flatten();
        let mut ips: Vec<String> = e
            .iter()
            .flat_map(|e| e.subsets.iter().flatten())
            .flat_map(|s| s.addresses.iter().flatten())
            .map(|a| a.ip.clone())
            .collect();
        ips.sort();
        ips
    };
    eventually("2 ready endpoints", TIMEOUT, || async {
        let ips = ready_ips().await;
        if ips.len() == 2 {
            Ok(())
        } else {
            Err(format!("{ips:?}"))
        }
    })
    .await;
    let address = format!("{cluster_ip}:11211");
    eventually("the Service answers from the host", TIMEOUT, || async {
        memcached_version(&address)
            .await
            .and_then(|a| if a.starts_with("VERSION") { Ok(()) } else { Err(a) })
    })
    .await;

    let pods = ready_pods(&client, &ns, "app=cache").await;
    let client_pod = pods[0].metadata.name.clone().expect("name");
    let script = format!(
        "exec 3<>/dev/tcp/{cluster_ip}/11211; printf 'version\\r\\n' >&3; timeout 2 head -c 14 <&3; echo; getent hosts cache"
    );
    let answer = eventually(
        "the Service answers from inside a Pod (and its name resolves)",
        TIMEOUT,
        || async {
            let output = exec_in(&ns, &client_pod, "memcached", &["bash", "-c", &script]).await?;
            if output.contains("VERSION") && output.contains(&cluster_ip) {
                Ok(output)
            } else {
                Err(output)
            }
        },
    )
    .await;
    eprintln!("from the Pod: {answer}");
    // In-cluster access: the `kubernetes` Service reaches the apiserver through the node's relay.
    let api = exec_in(
        &ns,
        &client_pod,
        "memcached",
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/$KUBERNETES_SERVICE_HOST/$KUBERNETES_SERVICE_PORT && echo connected",
        ],
    )
    .await
    .expect("exec");
    assert!(api.contains("connected"), "the kubernetes Service from a Pod: {api}");

    // Delete one endpoint Pod: the Service must follow to the remaining ones.
    let victim = pods[1].clone();
    let victim_ip = pod_ip(&victim).expect("ip");
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.delete(victim.metadata.name.as_deref().expect("name"), &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the endpoints to drop the deleted Pod", TIMEOUT, || async {
        let ips = ready_ips().await;
        if !ips.contains(&victim_ip) {
            Ok(())
        } else {
            Err(format!("{ips:?}"))
        }
    })
    .await;
    // The rules follow the Endpoints within moments (like kube-proxy): then every connection lands.
    eventually("20 answers in a row through the Service", TIMEOUT, || async {
        for i in 0..20 {
            let answer = memcached_version(&address)
                .await
                .map_err(|e| format!("answer {i}: {e}"))?;
            if !answer.starts_with("VERSION") {
                return Err(format!("answer {i}: {answer}"));
            }
        }
        Ok(())
    })
    .await;
}

/// Issue 12, item 5: a Pod reaches Services through the host's one table — another Pod, and
/// itself (hairpin) — and an unserved ClusterIP is refused, while the Pod's own network namespace
/// holds no nftables rules at all; and a Service change costs one `nft` process, not one per Pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_services_through_the_hosts_table_and_a_change_costs_one_nft_process() {
    let Some(NodeTest { client, ns, node }) = on_local_node(
        "pods_reach_services_through_the_hosts_table_and_a_change_costs_one_nft_process",
        "hairpin",
    )
    .await
    else {
        return;
    };
    apply_yaml(&client, &ns, &deployment("a", 1)).await;
    apply_yaml(&client, &ns, &deployment("b", 1)).await;
    // More Pods than the table costs processes: a copy per Pod would show in the count below.
    apply_yaml(&client, &ns, &deployment("extra", 2)).await;
    let pods = eventually("4 Ready Pods", TIMEOUT, || async {
        let pods = ready_pods(&client, &ns, "app in (a, b, extra)").await;
        if pods.len() == 4 {
            Ok(pods)
        } else {
            Err(describe(&pods))
        }
    })
    .await;
    let a = pods
        .iter()
        .find(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str)
                == Some("a")
        })
        .and_then(|p| p.metadata.name.clone())
        .expect("Pod a");

    let before = capstan_localnode::services_activity();
    let service = |name: &str, app: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {app}}}\n  ports: [{{name: memcached, port: 11211, targetPort: memcached, protocol: TCP}}]\n"
        )
    };
    apply_yaml(&client, &ns, &service("to-a", "a")).await;
    apply_yaml(&client, &ns, &service("to-b", "b")).await;
    apply_yaml(&client, &ns, &service("nobody", "nobody")).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let mut cluster_ips = Vec::new();
    for name in ["to-a", "to-b", "nobody"] {
        let ip = services
            .get(name)
            .await
            .expect("service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("clusterIP");
        cluster_ips.push(ip);
    }
    let (to_a, to_b, nobody) = (&cluster_ips[0], &cluster_ips[1], &cluster_ips[2]);

    // Five connections each way, every one answered: to Pod b, and back to Pod a itself.
    let script = format!(
        "for i in 1 2 3 4 5; do for ip in {to_b} {to_a}; do \
         exec 3<>/dev/tcp/$ip/11211 && printf 'version\\r\\n' >&3 && timeout 2 head -c 14 <&3; echo \" via $ip\"; \
         exec 3<&-; done; done"
    );
    let answers = eventually("Pod a reaches Pod b and itself through ClusterIPs", TIMEOUT, || async {
        let output = exec_in(&ns, &a, "memcached", &["bash", "-c", &script]).await?;
        let answered = output.lines().filter(|l| l.starts_with("VERSION")).count();
        if answered == 10 { Ok(output) } else { Err(output) }
    })
    .await;
    eprintln!("{answers}");
    let after = capstan_localnode::services_activity();
    let changes = after.table_changes - before.table_changes;
    let spawned = after.nft_processes - before.nft_processes;
    eprintln!("{changes} table changes, {spawned} nft processes, 4 Pods in this namespace");
    assert!(changes >= 1, "the new Services never changed the table");
    // One process per change; +1 for a load under way when `before` was read.
    assert!(
        spawned <= changes + 1,
        "{spawned} nft processes for {changes} table changes"
    );

    let started = std::time::Instant::now();
    let refused = exec_in(
        &ns,
        &a,
        "memcached",
        &[
            "bash",
            "-c",
            &format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{nobody}/11211' 2>&1; echo rc=$?"),
        ],
    )
    .await
    .expect("exec");
    eprintln!(
        "unserved {nobody} from Pod a, {:.2?}: {}",
        started.elapsed(),
        refused.trim()
    );
    assert!(
        refused.contains("refused"),
        "an unserved ClusterIP was not refused: {refused}"
    );

    let netns = node.pod_netns(&ns, &a).expect("netns");
    let in_pod = |args: &[&str]| {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", &netns])
            .args(args)
            .output()
            .expect("ip netns exec");
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let ruleset = in_pod(&["nft", "list", "ruleset"]);
    assert_eq!(ruleset.trim(), "", "the Pod's namespace holds nftables rules");
    let routes = in_pod(&["ip", "route"]);
    eprintln!("Pod a's routes:\n{routes}");
    assert!(!routes.contains("default"), "a Pod has a default route: {routes}");
}
