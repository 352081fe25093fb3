//! The classic master/replica StatefulSet replicates, found through DNS.

mod support;

use std::time::Duration;

use support::*;

const TIMEOUT: Duration = Duration::from_secs(180);

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  clusterIP: None
  selector: {app: redis}
  ports: [{name: redis, port: 6379, protocol: TCP}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: redis}
spec:
  serviceName: redis
  replicas: 3
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      containers:
      - name: redis
        image: redis:7.0
        command: ["sh", "-c"]
        args:
        - |
          if [ "$(hostname)" = "redis-0" ]; then
            exec redis-server --port 6379
          else
            exec redis-server --port 6379 --replicaof redis-0.redis 6379
          fi
        ports: [{name: redis, containerPort: 6379, protocol: TCP}]
        readinessProbe:
          tcpSocket: {port: redis}
          periodSeconds: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_replica_statefulset_replicates_through_cluster_dns() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("a_master_replica_statefulset_replicates_through_cluster_dns", "redis").await
    else {
        return;
    };
    apply_yaml(&client, &ns, MANIFESTS).await;
    let pods = eventually("3 Running Ready redis Pods", TIMEOUT, || async {
        let pods = ready_pods(&client, &ns, "app=redis").await;
        if pods.len() == 3 {
            Ok(pods)
        } else {
            Err(describe(&pods))
        }
    })
    .await;
    let ip_of = |name: &str| {
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .and_then(pod_ip)
            .map(|ip| format!("{ip}:6379"))
            .expect("the Pod's IP")
    };
    let (master, replica) = (ip_of("redis-0"), ip_of("redis-1"));
    let reply = redis(&master, &["SET", "capstan", "replicated"])
        .await
        .expect("SET on the master");
    assert_eq!(reply, "OK");
    eventually("the key on the replica", TIMEOUT, || async {
        let value = redis(&replica, &["GET", "capstan"]).await?;
        if value == "replicated" {
            Ok(())
        } else {
            Err(format!("GET gave {value:?}"))
        }
    })
    .await;
    let info = redis(&replica, &["INFO", "replication"]).await.expect("INFO");
    assert!(info.contains("role:slave"), "{info}");
    assert!(info.contains("master_link_status:up"), "{info}");
}
