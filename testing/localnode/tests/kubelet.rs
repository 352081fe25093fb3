//! Lifecycle hooks with the grace period, startup and httpGet probes, DNS policy, `cut_network`,
//! local rejects for unserved Services, and the agent's refusals (a second agent, another agent's
//! host objects, an apiserver off loopback, no named kubeconfig).

mod support;

use std::time::{Duration, Instant};

use capstan_localnode::{Error, LocalNodeConfig};
use capstan_testenv::ControlPlane;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Service};
use kube::{Api, api::DeleteParams};
use support::*;

const TIMEOUT: Duration = Duration::from_secs(120);

async fn status_of(pods: &Api<Pod>, pod: &str) -> Result<(Pod, ContainerStatus), String> {
    let p = pods.get(pod).await.map_err(|e| e.to_string())?;
    let c = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first().cloned())
        .ok_or_else(|| "no container status yet".to_owned())?;
    Ok((p, c))
}

/// How long after `started` the Pod object is gone.
async fn wait_gone(pods: &Api<Pod>, pod: &str, started: Instant, timeout: Duration) -> Duration {
    loop {
        if pods.get_opt(pod).await.expect("get").is_none() {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "{pod} still exists after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_stop_runs_before_sigterm_within_the_grace_period() {
    let Some(NodeTest { client, ns, node }) =
        on_local_node("pre_stop_runs_before_sigterm_within_the_grace_period", "prestop").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{name: data, persistentVolumeClaim: {claimName: hooks}}]
  containers:
  - name: main
    image: busybox:1.36
    volumeMounts: [{name: data, mountPath: /data}]
    command: ["sh", "-c", "trap 'echo term >> /data/log; exit 0' TERM; echo started >> /data/log; while true; do sleep 0.2; done"]
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo prestop-begin >> /data/log; sleep 2; echo prestop-end >> /data/log"]
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      preStop:
        exec: {command: ["sleep", "60"]}
"#,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let log = node.state_dir().join("claims").join(&ns).join("hooks/log");
    eventually("both Pods running", TIMEOUT, || async {
        let ready = ready_pods(&client, &ns, "").await;
        let started = std::fs::read_to_string(&log).unwrap_or_default();
        if ready.len() == 2 && started.contains("started") {
            Ok(())
        } else {
            Err(describe(&ready))
        }
    })
    .await;

    let deleted = Instant::now();
    pods.delete("hooked", &DeleteParams::default()).await.expect("delete");
    pods.delete("stubborn", &DeleteParams::default()).await.expect("delete");
    let hooked = wait_gone(&pods, "hooked", deleted, TIMEOUT).await;
    let stubborn = wait_gone(&pods, "stubborn", deleted, TIMEOUT).await;
    let text = std::fs::read_to_string(&log).expect("the hook log");
    eprintln!("hooked gone after {hooked:.2?}, stubborn after {stubborn:.2?}; log: {text:?}");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["started", "prestop-begin", "prestop-end", "term"],
        "preStop finished before SIGTERM"
    );
    assert!(
        hooked >= Duration::from_millis(1900),
        "the preStop hook's 2 s sleep: {hooked:?}"
    );
    // A preStop hook longer than the grace period is cut at 3 s, then SIGTERM (ignored) gets the
    // kubelet's 2 s minimum before SIGKILL: about 5 s, never the hook's 60 s.
    assert!(
        stubborn >= Duration::from_millis(4800) && stubborn < Duration::from_secs(15),
        "grace period of 3 s not honoured: {stubborn:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_start_runs_and_its_failure_restarts_the_container() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("post_start_runs_and_its_failure_restarts_the_container", "poststart").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: good}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: work, emptyDir: {}}]
  containers:
  - name: main
    image: busybox:1.36
    volumeMounts: [{name: work, mountPath: /work}]
    command: ["sh", "-c", "exec sleep 3600"]
    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "echo from-post-start > /work/mark"]}
---
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "exec sleep 3600"]
    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "exit 7"]}
"#,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually("postStart's file", TIMEOUT, || async {
        let out = exec_in(&ns, "good", "main", &["cat", "/work/mark"]).await?;
        if out.trim() == "from-post-start" {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    let (_, good) = status_of(&pods, "good").await.expect("status");
    assert_eq!(good.restart_count, 0);
    let message = eventually("the failing postStart restarts its container", TIMEOUT, || async {
        let (_, c) = status_of(&pods, "bad").await?;
        let last = c.last_state.and_then(|s| s.terminated);
        match last {
            Some(t) if c.restart_count >= 1 => Ok(t.message.unwrap_or_default()),
            _ => Err(format!("restarts {}", c.restart_count)),
        }
    })
    .await;
    assert!(message.contains("PostStartHookError"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_probe_holds_back_readiness_and_restarts_on_failure() {
    let Some(NodeTest { client, ns, .. }) = on_local_node(
        "a_startup_probe_holds_back_readiness_and_restarts_on_failure",
        "startup",
    )
    .await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: slow}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "sleep 3; touch /tmp/up; exec sleep 3600"]
    startupProbe:
      exec: {command: ["test", "-f", "/tmp/up"]}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "exec sleep 3600"]
    startupProbe:
      exec: {command: ["test", "-f", "/tmp/never"]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running_at = eventually("slow Running, not started", TIMEOUT, || async {
        let (_, c) = status_of(&pods, "slow").await?;
        let running = c.state.as_ref().and_then(|s| s.running.as_ref()).is_some();
        if running {
            assert_ne!(c.started, Some(true), "started before the startup probe passed");
            assert!(!c.ready);
            Ok(Instant::now())
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    eventually("slow started and Ready", TIMEOUT, || async {
        let (p, c) = status_of(&pods, "slow").await?;
        if c.started == Some(true) && is_ready(&p) {
            Ok(())
        } else {
            Err(format!("started {:?} ready {}", c.started, c.ready))
        }
    })
    .await;
    let took = running_at.elapsed();
    eprintln!("Ready {took:.2?} after Running was seen (the file appears after 3 s)");
    assert!(
        took >= Duration::from_secs(2),
        "Ready before the startup probe could pass: {took:?}"
    );
    let message = eventually("never restarted by its startup probe", TIMEOUT, || async {
        let (_, c) = status_of(&pods, "never").await?;
        match c.last_state.and_then(|s| s.terminated) {
            Some(t) if c.restart_count >= 1 => Ok(t.message.unwrap_or_default()),
            _ => Err(format!("restarts {}", c.restart_count)),
        }
    })
    .await;
    assert!(message.contains("startup probe"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_pod_with_http_probes_runs_like_the_operator_chart() {
    let Some(NodeTest { client, ns, .. }) = on_local_node(
        "a_restricted_pod_with_http_probes_runs_like_the_operator_chart",
        "restricted",
    )
    .await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
  volumes: [{name: www, emptyDir: {}}]
  containers:
  - name: main
    image: busybox:1.36
    volumeMounts: [{name: www, mountPath: /www}]
    command: ["sh", "-c", "touch /www/healthz /www/readyz; exec busybox httpd -f -p 8080 -h /www"]
    ports: [{name: http, containerPort: 8080}]
    securityContext:
      runAsNonRoot: true
      runAsUser: 65532
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
    readinessProbe:
      httpGet: {path: /readyz, port: http}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      httpGet: {path: /healthz, port: 8080, httpHeaders: [{name: X-Probe, value: liveness}]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually("web Ready through its httpGet readiness probe", TIMEOUT, || async {
        let (p, _) = status_of(&pods, "web").await?;
        if is_ready(&p) { Ok(()) } else { Err(describe(&[p])) }
    })
    .await;
    let id = exec_in(&ns, "web", "main", &["id", "-u"]).await.expect("exec");
    assert_eq!(id.trim(), "65532");
    exec_in(&ns, "web", "main", &["rm", "/www/readyz"]).await.expect("exec");
    eventually("web not Ready once /readyz answers 404", TIMEOUT, || async {
        let (p, _) = status_of(&pods, "web").await?;
        if is_ready(&p) {
            Err("still ready".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    let (_, before) = status_of(&pods, "web").await.expect("status");
    assert_eq!(before.restart_count, 0, "readiness failures never restart");
    exec_in(&ns, "web", "main", &["rm", "/www/healthz"])
        .await
        .expect("exec");
    let message = eventually("web restarted by its httpGet liveness probe", TIMEOUT, || async {
        let (_, c) = status_of(&pods, "web").await?;
        match c.last_state.and_then(|s| s.terminated) {
            Some(t) if c.restart_count >= 1 => Ok(t.message.unwrap_or_default()),
            _ => Err(format!("restarts {}", c.restart_count)),
        }
    })
    .await;
    assert!(message.contains("liveness") && message.contains("404"), "{message}");
    // The restarted container makes both files again: Ready again.
    eventually("web Ready again", TIMEOUT, || async {
        let (p, _) = status_of(&pods, "web").await?;
        if is_ready(&p) { Ok(()) } else { Err(describe(&[p])) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_policy_and_config_shape_resolv_conf() {
    let Some(NodeTest { client, ns, .. }) = on_local_node("dns_policy_and_config_shape_resolv_conf", "dns").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: merged}
spec:
  terminationGracePeriodSeconds: 1
  dnsConfig:
    searches: [extra.example]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  containers:
  - {name: main, image: busybox:1.36, command: ["sh", "-c", "exec sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: none}
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: "None"
  dnsConfig: {nameservers: [10.244.0.1], searches: [only.example]}
  containers:
  - {name: main, image: busybox:1.36, command: ["sh", "-c", "exec sleep 3600"]}
"#,
    )
    .await;
    let merged = eventually("merged resolv.conf", TIMEOUT, || {
        exec_in(&ns, "merged", "main", &["cat", "/etc/resolv.conf"])
    })
    .await;
    assert_eq!(
        merged,
        format!(
            "nameserver 10.244.0.1\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local extra.example\noptions ndots:2 edns0\n"
        )
    );
    let none = eventually("None resolv.conf", TIMEOUT, || {
        exec_in(&ns, "none", "main", &["cat", "/etc/resolv.conf"])
    })
    .await;
    assert_eq!(none, "nameserver 10.244.0.1\nsearch only.example\n");
}

async fn connects(address: &str, within: Duration) -> Result<(), String> {
    match tokio::time::timeout(within, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {within:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_network_isolates_a_pod_until_restored() {
    let Some(NodeTest { client, ns, node }) = on_local_node("cut_network_isolates_a_pod_until_restored", "cut").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: cache, labels: {app: cache}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: memcached, image: memcached:1.6}\n",
    )
    .await;
    let pods = eventually("memcached Ready", TIMEOUT, || async {
        let pods = ready_pods(&client, &ns, "app=cache").await;
        if pods.len() == 1 {
            Ok(pods)
        } else {
            Err(describe(&pods))
        }
    })
    .await;
    let ip = pod_ip(&pods[0]).expect("ip");
    let address = format!("{ip}:11211");
    let version = memcached_version(&address).await.expect("memcached answers");
    assert!(version.starts_with("VERSION"), "{version}");

    node.cut_network(&ns, "cache").await.expect("cut");
    let cut = connects(&address, Duration::from_secs(2)).await;
    eprintln!("while cut: {cut:?}");
    assert!(cut.is_err(), "a cut Pod answered");
    let netns = node.pod_netns(&ns, "cache").expect("netns");
    let addr = std::process::Command::new("ip")
        .args(["-n", &netns, "-br", "addr", "show", "eth0"])
        .output()
        .expect("ip");
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains(&ip),
        "the Pod keeps its address"
    );

    node.restore_network(&ns, "cache").await.expect("restore");
    eventually("memcached answers again", Duration::from_secs(30), || async {
        memcached_version(&address).await
    })
    .await;
    assert_eq!(
        pod_ip(
            &Api::<Pod>::namespaced(client.clone(), &ns)
                .get("cache")
                .await
                .expect("pod")
        ),
        Some(ip)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unserved_service_is_rejected_on_the_machine() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("an_unserved_service_is_rejected_on_the_machine", "unserved").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        "apiVersion: v1\nkind: Service\nmetadata: {name: nobody}\nspec:\n  selector: {app: nobody}\n  ports: [{port: 80, protocol: TCP}]\n",
    )
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let ip = services
        .get("nobody")
        .await
        .expect("service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let route = std::process::Command::new("ip")
        .args(["route", "get", &ip])
        .output()
        .expect("ip");
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    eprintln!("route to {ip}: {}", route.trim());
    assert!(
        route.contains("dev capst0"),
        "a ClusterIP would leave by another route: {route}"
    );
    let refused = eventually("the Service's address refused at once", TIMEOUT, || async {
        let started = Instant::now();
        match connects(&format!("{ip}:80"), Duration::from_secs(3)).await {
            Err(e) if e.contains("refused") => Ok(started.elapsed()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("refused in {refused:.2?}");
    assert!(refused < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_is_refused_and_touches_nothing() {
    let Some(NodeTest { client, ns, node }) =
        on_local_node("a_second_agent_is_refused_and_touches_nothing", "second").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: cache, labels: {app: cache}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: memcached, image: memcached:1.6}\n",
    )
    .await;
    let pods = eventually("memcached Ready", TIMEOUT, || async {
        let pods = ready_pods(&client, &ns, "app=cache").await;
        if pods.len() == 1 {
            Ok(pods)
        } else {
            Err(describe(&pods))
        }
    })
    .await;
    let address = format!("{}:11211", pod_ip(&pods[0]).expect("ip"));
    let kubeconfig = ControlPlane::shared().kubeconfig_path();

    // The same state directory: the lock says another agent runs.
    let same = capstan_localnode::LocalNode::start(LocalNodeConfig::new(kubeconfig)).await;
    match same {
        Err(Error::AlreadyRunning { lock }) => eprintln!("refused: holds {}", lock.display()),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a second agent started"),
    }
    // Another state directory: its start-up cleanup leaves our objects alone and it refuses the
    // bridge it does not own.
    let mut other = LocalNodeConfig::new(kubeconfig);
    other.state_dir = std::env::temp_dir().join(format!("capstan-localnode-second-{}", std::process::id()));
    let refused = capstan_localnode::LocalNode::start(other.clone()).await;
    match refused {
        Err(e) => {
            eprintln!("refused: {e}");
            assert!(e.to_string().contains("is not this agent's"), "{e}");
        }
        Ok(_) => panic!("a second agent with another state directory started"),
    }
    let _ = std::fs::remove_file(format!("{}.lock", other.state_dir.display()));
    // An apiserver off loopback is refused before anything else.
    let remote = other.state_dir.with_extension("kubeconfig");
    let text = std::fs::read_to_string(kubeconfig)
        .expect("kubeconfig")
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}server: https://192.0.2.10:6443")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&remote, text).expect("write");
    let mut far = LocalNodeConfig::new(&remote);
    far.state_dir = other.state_dir.clone();
    match capstan_localnode::LocalNode::start(far).await {
        Err(e) => {
            eprintln!("refused: {e}");
            assert!(e.to_string().contains("not on loopback"), "{e}");
        }
        Ok(_) => panic!("started against a remote apiserver"),
    }
    let _ = std::fs::remove_file(&remote);
    let _ = std::fs::remove_file(format!("{}.lock", other.state_dir.display()));
    assert!(
        !other.state_dir.exists(),
        "the refused agents made their state directory"
    );

    // The running node is untouched: its Pod still answers, its namespace is still there.
    assert!(
        node.pod_netns(&ns, "cache")
            .is_some_and(|n| std::path::Path::new(&format!("/run/netns/{n}")).exists())
    );
    let version = memcached_version(&address).await.expect("memcached still answers");
    assert!(version.starts_with("VERSION"));
}

#[test]
fn the_binary_wants_a_named_kubeconfig() {
    let home = std::env::temp_dir().join(format!("capstan-localnode-home-{}", std::process::id()));
    std::fs::create_dir_all(home.join(".kube")).expect("home");
    std::fs::write(home.join(".kube/config"), "apiVersion: v1\nkind: Config\n").expect("config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_capstan-localnode"))
        .arg("run")
        .env_remove("KUBECONFIG")
        .env("HOME", &home)
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    let _ = std::fs::remove_dir_all(&home);
    assert!(!output.status.success());
    assert!(stderr.contains("never falls back to ~/.kube/config"), "{stderr}");
}
