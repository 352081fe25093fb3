//! The real `capstan-manager` binary against the local control plane: both controllers in one
//! process, readiness after cache sync, metric names, and no writes on a no-op resync.
use capstan_foo::{Foo, FooSpec};
use capstan_memcached::Memcached;
use capstan_runtime::testing::{eventually, http_get};
use capstan_testenv::ControlPlane;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(60);

/// A `capstan-manager run` child process and the admin addresses it logged.
struct ManagerProcess {
    child: Child,
    metrics: SocketAddr,
    health: SocketAddr,
}

impl ManagerProcess {
    fn start(kubeconfig: &Path, namespace: &str) -> ManagerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_capstan-manager"))
            .args(["run", "--namespace", namespace, "--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start capstan-manager");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  manager| {line}");
                if line.contains("admin server listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the manager logs its admin addresses");
        ManagerProcess { child, metrics: logged_addr(&line, "metrics_addr="), health: logged_addr(&line, "health_addr=") }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        let started = std::time::Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                assert!(exit.success(), "the manager exits cleanly on SIGTERM: {exit}");
                eprintln!("manager stopped {:?} after SIGTERM", started.elapsed());
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the manager did not stop within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logged_addr(line: &str, key: &str) -> SocketAddr {
    let start = line.find(key).map(|i| i + key.len()).expect(key);
    let value: String = line[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    value.trim_matches('"').parse().unwrap_or_else(|e| panic!("{key} in {line:?}: {e}"))
}

/// Writes (POST, PUT, PATCH, DELETE) by the manager's user agent in the audit log after `offset`.
fn manager_writes(audit_log: &Path, offset: usize) -> Vec<String> {
    let text = std::fs::read_to_string(audit_log).expect("read audit log");
    text[offset.min(text.len())..]
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["userAgent"].as_str().is_some_and(|ua| ua.starts_with("capstan-manager/")))
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch" | "delete" | "deletecollection")))
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect()
}

fn audit_len(path: &Path) -> usize {
    std::fs::metadata(path).map(|m| m.len() as usize).unwrap_or(0)
}

#[tokio::test]
async fn one_manager_runs_both_controllers_and_a_no_op_resync_writes_nothing() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "manager").await.expect("namespace");
    let audit_log = cp.audit_log_path().expect("the shared control plane keeps an audit log").to_owned();

    // Started before its CRDs exist: alive, not ready, and says why.
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &ns);
    let (code, _) = http_get(manager.health, "/healthz").await.expect("healthz");
    assert_eq!(code, 200);
    let (code, body) = http_get(manager.health, "/readyz").await.expect("readyz");
    assert_eq!(code, 503, "not ready before the CRDs exist: {body}");

    cp.apply_crds(&client, &capstan_manager::crds()).await.expect("install CRDs");
    eventually("/readyz turns 200 after the caches sync", WAIT, || async {
        (http_get(manager.health, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;

    let foos = Api::<Foo>::namespaced(client.clone(), &ns);
    let memcacheds = Api::<Memcached>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &Pod {
        metadata: ObjectMeta { name: Some("jack".into()), ..Default::default() },
        spec: Some(PodSpec { containers: vec![Container { name: "c".into(), image: Some("busybox".into()), ..Default::default() }], ..Default::default() }),
        ..Default::default()
    })
    .await
    .expect("pod");
    foos.create(&PostParams::default(), &Foo::new("foo-01", FooSpec { name: "jack".into() })).await.expect("foo");
    let mc: Memcached = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached", "metadata": {"name": "cache"}, "spec": {"size": 2}
    }))
    .expect("memcached");
    memcacheds.create(&PostParams::default(), &mc).await.expect("memcached");

    eventually("the Foo is happy", WAIT, || async { foos.get("foo-01").await.ok()?.status?.happy.then_some(()) }).await;
    eventually("the Memcached lists 2 nodes", WAIT, || async {
        (memcacheds.get("cache").await.ok()?.status?.nodes.len() == 2).then_some(())
    })
    .await;

    let (_, metrics) = http_get(manager.metrics, "/metrics").await.expect("metrics");
    for name in [
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    for controller in ["foo", "memcached"] {
        assert!(metrics.contains(&format!(r#"controller_runtime_reconcile_total{{controller="{controller}",result="success"}}"#)));
    }
    manager.stop();

    // A restarted manager lists everything and reconciles every object again: all of it is
    // converged, so it must not send a single write.
    let offset = audit_len(&audit_log);
    let manager = ManagerProcess::start(cp.kubeconfig_path(), &ns);
    eventually("the restarted manager is ready", WAIT, || async {
        (http_get(manager.health, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    let reconciled = eventually("both controllers reconciled their objects again", WAIT, || async {
        let (_, metrics) = http_get(manager.metrics, "/metrics").await.ok()?;
        let count = |c: &str| -> f64 {
            let prefix = format!(r#"controller_runtime_reconcile_total{{controller="{c}",result="success"}} "#);
            metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0)
        };
        (count("foo") >= 1.0 && count("memcached") >= 1.0).then(|| metrics.clone())
    })
    .await;
    assert!(reconciled.contains(r#"capstan_apply_skipped_total{controller="memcached",target="Deployment"}"#), "the Deployment apply was skipped as a no-op");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = manager_writes(&audit_log, offset);
    eprintln!("writes by the restarted manager: {}", writes.len());
    assert!(writes.is_empty(), "a no-op resync must not write, but sent: {writes:#?}");
    manager.stop();
}

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    for crd in capstan_manager::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        let path = dir.join(format!("{name}.yaml"));
        let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crds`", path.display()));
        let stored: serde_json::Value = serde_yaml::from_str(&stored).expect("stored CRD is YAML");
        let generated = serde_json::to_value(&crd).expect("CRD as JSON");
        assert!(stored == generated, "{} is stale: run `cargo xtask crds` and commit the result", path.display());
    }
}
