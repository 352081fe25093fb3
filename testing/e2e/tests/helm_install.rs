//! The chart on a real apiserver (RBAC on) with the local node: the operator Pod runs the locally
//! built manager under the chart's least-privilege identity, in-cluster (the `kubernetes` Service
//! and the service-account token), with leader election on. Proves: readiness follows /readyz,
//! every controller reconciles the samples with no 403, a `helm upgrade` rolls the operator without
//! losing a reconcile, RedisHA's day-2 operations (a roll, a password rotation, a scale 3 → 5 → 3)
//! finish under that identity, the identity is refused what the operator never needs, and `helm uninstall`
//! keeps CRDs and custom resources but removes everything else.
//!
//! Run with `flock /tmp/capstan-localnode.lock cargo test -p capstan-e2e --test helm_install`.
use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use capstan_e2e::{chart, helm, kubectl, manager_binary, run, scenarios::wait_for, skip_without};
use capstan_foo::{Foo, FooSpec};
use capstan_memcached::Memcached;
use capstan_redis_ha::{
    RedisHA,
    config::{Endpoint, REDIS_PORT},
    testing::{
        Converged, ConvergenceWatch, pod_ip,
        redis_io::{Target, Timeouts, is_auth_refused, ping},
    },
};
use capstan_testenv::{ControlPlane, local_node_available};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Pod, Secret, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};

const RELEASE: &str = "capstan";
const TEST: &str = "the_chart_runs_a_least_privilege_operator_on_the_local_node";

struct Tools {
    helm: PathBuf,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Tools {
    fn helm(&self, args: &[&str]) -> String {
        run(Command::new(&self.helm).args(args).env("KUBECONFIG", &self.kubeconfig)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, capstan_e2e::CommandFailed> {
        run(Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig))
    }
}

/// The operator Pods of the release, with whether each is Ready.
async fn operator_pods(pods: &Api<Pod>) -> Vec<(String, bool, Option<String>)> {
    let selector = format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=manager");
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(|pod| {
            let status = pod.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (pod.name_any(), ready, status.pod_ip)
        })
        .collect()
}

async fn readyz(pod_ip: &str) -> Option<u16> {
    let addr = format!("{pod_ip}:8081").parse().ok()?;
    capstan_e2e::http::readyz_status(addr).await
}

fn log_of(node: &capstan_localnode::LocalNode, namespace: &str, pod: &str) -> String {
    node.container_log(namespace, pod, "manager")
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default()
}

fn assert_no_forbidden(log: &str, pod: &str) {
    let forbidden: Vec<&str> = log
        .lines()
        .filter(|line| {
            // "403" as a word of its own: timestamps and identities contain those digits too.
            line.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| word == "403")
                || line.to_ascii_lowercase().contains("forbidden")
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "{pod} was refused something:\n{}",
        forbidden.join("\n")
    );
}

#[test]
fn refusals_are_told_from_digits_that_happen_to_read_403() {
    let timestamp = "2026-12-02T08:29:51.906403Z  INFO capstan_runtime::manager: leader election";
    assert_no_forbidden(timestamp, "pod");
    let refused = "ERROR reconcile failed: ApiError: leases is forbidden (code: 403)";
    assert!(std::panic::catch_unwind(|| assert_no_forbidden(refused, "pod")).is_err());
    let bare = "ERROR request failed with status 403";
    assert!(std::panic::catch_unwind(|| assert_no_forbidden(bare, "pod")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_a_least_privilege_operator_on_the_local_node() {
    if !local_node_available(TEST) {
        return;
    }
    let helm = match helm::locate() {
        Ok(helm) => helm,
        Err(missing) => {
            skip_without(TEST, &missing.to_string());
            return;
        }
    };
    let Some(kubectl) = kubectl() else {
        skip_without(TEST, "no kubectl on PATH (or KUBECTL)");
        return;
    };
    let binary = manager_binary().expect("building capstan-manager");
    let control_plane = ControlPlane::shared();
    let node = ControlPlane::shared_local_node_with_images(vec![("capstan-manager".into(), binary.clone())]);
    let client = control_plane.client().await;
    let tools = Tools {
        helm,
        kubectl,
        kubeconfig: control_plane.kubeconfig_path().to_path_buf(),
    };
    let release_ns = control_plane
        .namespace(&client, "capstan-system")
        .await
        .expect("namespace");
    let samples_ns = control_plane.namespace(&client, "samples").await.expect("namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &release_ns);
    let chart_dir = chart::chart_dir();
    let chart_dir = chart_dir.to_str().expect("UTF-8 path");
    let image_values = [
        "--set",
        "image.repository=localhost/capstan-manager",
        "--set",
        concat!("image.tag=", env!("CARGO_PKG_VERSION")),
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "logFormat=text",
    ];

    // 1. Install without the CRDs first: the manager then waits for them and stays unready, so the
    //    Pod's readiness is seen following /readyz both ways; the CRDs then come through the
    //    README's upgrade command (what Helm never does for crds/ on upgrade).
    let started = Instant::now();
    let mut install = vec!["install", RELEASE, chart_dir, "--namespace", &release_ns, "--skip-crds"];
    install.extend(image_values);
    println!("{}", tools.helm(&install));
    let (pod_name, pod_ip) = wait_for("the operator Pod runs and has an IP", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            Ok(operator_pods(&pods)
                .await
                .into_iter()
                .find_map(|(name, _, ip)| Some((name, ip?))))
        }
    })
    .await
    .expect("an operator Pod");
    let pod = pods.get(&pod_name).await.expect("the operator Pod");
    let spec = pod.spec.clone().expect("spec");
    assert_eq!(
        spec.node_name.as_deref(),
        Some(node.node_names()[0].as_str()),
        "on the local node"
    );
    assert_eq!(spec.service_account_name.as_deref(), Some(RELEASE));

    // Unready while the CRDs are missing: /readyz 503 and the Pod not Ready, over several probe
    // periods (2 s each).
    let unready_since = Instant::now();
    let mut observations = 0;
    while unready_since.elapsed() < Duration::from_secs(8) {
        let code = readyz(&pod_ip).await;
        let ready = operator_pods(&pods)
            .await
            .iter()
            .any(|(name, ready, _)| name == &pod_name && *ready);
        if let Some(code) = code {
            assert_eq!(code, 503, "/readyz answers 503 while the CRDs are not served");
            observations += 1;
        }
        assert!(!ready, "the Pod must not be Ready while /readyz answers 503");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(observations >= 5, "/readyz answered {observations} times in 8 s");
    println!("unready without CRDs: /readyz 503 and Pod not Ready over 8 s ({observations} samples)");

    let crds = tools
        .kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &format!("{chart_dir}/crds/"),
        ])
        .expect("kubectl apply --server-side the chart's crds/");
    println!("{crds}");
    let became_ready = Instant::now();
    wait_for(
        "/readyz 200 and the Pod Ready once the CRDs are served",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let (pod_name, pod_ip) = (pod_name.clone(), pod_ip.clone());
            async move {
                let code = readyz(&pod_ip).await;
                let ready = operator_pods(&pods)
                    .await
                    .iter()
                    .any(|(name, ready, _)| name == &pod_name && *ready);
                if ready {
                    assert_eq!(code, Some(200), "a Ready Pod's /readyz answers 200");
                }
                Ok(ready.then_some(()))
            }
        },
    )
    .await
    .expect("ready");
    println!(
        "operator ready {:.1}s after the CRDs, {:.1}s after helm install",
        became_ready.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // Leader election through the chart's Lease Role.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &release_ns);
    let holder = wait_for("the operator holds the Lease", Duration::from_secs(30), || {
        let leases = leases.clone();
        let pod_name = pod_name.clone();
        async move {
            let lease = leases.get_opt(RELEASE).await?;
            let holder = lease.and_then(|l| l.spec?.holder_identity);
            Ok(holder.filter(|h| h.starts_with(&pod_name)))
        }
    })
    .await
    .expect("leader");
    println!("Lease {release_ns}/{RELEASE} held by {holder}");

    // 2. The samples: every controller reconciles them.
    let samples = capstan_e2e::workspace_root().join("samples");
    println!(
        "{}",
        tools
            .kubectl(&["apply", "-n", &samples_ns, "-f", samples.to_str().expect("path")])
            .expect("kubectl apply -f samples/")
    );
    let foos: Api<Foo> = Api::namespaced(client.clone(), &samples_ns);
    let memcacheds: Api<Memcached> = Api::namespaced(client.clone(), &samples_ns);
    wait_for(
        "foo-01 is happy (its friend jack exists) and foo-02 is not",
        Duration::from_secs(60),
        || {
            let foos = foos.clone();
            async move {
                let happy = |foo: Foo| foo.status.map(|s| (s.happy, s.observed_generation.is_some()));
                let one = happy(foos.get("foo-01").await?);
                let two = happy(foos.get("foo-02").await?);
                Ok((one == Some((true, true)) && two == Some((false, true))).then_some(()))
            }
        },
    )
    .await
    .expect("Foos reconciled");
    wait_for(
        "memcached-sample is Ready with 3 answering Pods",
        Duration::from_secs(120),
        || {
            let memcacheds = memcacheds.clone();
            async move {
                let status = memcacheds.get("memcached-sample").await?.status.unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                Ok((ready && status.ready_replicas == 3).then_some(()))
            }
        },
    )
    .await
    .expect("Memcached reconciled");

    // 3. helm upgrade changing a value rolls the operator; changes made during the roll are all
    //    reconciled (by one leader or the next).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &release_ns);
    let generation_before = deployments
        .get(RELEASE)
        .await
        .expect("operator Deployment")
        .metadata
        .generation;
    let mut upgrade = vec![
        "upgrade",
        RELEASE,
        chart_dir,
        "--namespace",
        &release_ns,
        "--set",
        "concurrency=8",
    ];
    upgrade.extend(image_values);
    let upgrade_started = Instant::now();
    println!("{}", tools.helm(&upgrade));
    let mut created = Vec::new();
    let mut index = 0;
    let rolled = loop {
        // A Foo every 300 ms while the operator rolls: each must end up reconciled.
        let name = format!("during-roll-{index}");
        index += 1;
        let friend = if index % 2 == 0 { "jack" } else { "nobody" };
        foos.create(
            &PostParams::default(),
            &Foo::new(&name, FooSpec { name: friend.into() }),
        )
        .await
        .expect("create a Foo during the roll");
        created.push((name, friend == "jack"));
        let current = operator_pods(&pods).await;
        let args_changed = deployments
            .get(RELEASE)
            .await
            .ok()
            .and_then(|d| d.status)
            .is_some_and(|s| s.updated_replicas == Some(1) && s.replicas == Some(1) && s.ready_replicas == Some(1));
        if args_changed && current.len() == 1 && current[0].0 != pod_name && current[0].1 {
            break current[0].0.clone();
        }
        assert!(
            upgrade_started.elapsed() < Duration::from_secs(120),
            "the operator did not roll within 120 s: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let generation_after = deployments.get(RELEASE).await.expect("Deployment").metadata.generation;
    assert!(
        generation_after > generation_before,
        "the upgrade changed the Deployment"
    );
    println!(
        "operator rolled {pod_name} -> {rolled} in {:.1}s; {} Foos created meanwhile",
        upgrade_started.elapsed().as_secs_f64(),
        created.len()
    );
    assert!(created.len() >= 2, "Foos were created while the operator rolled");
    wait_for(
        "every Foo created during the roll is reconciled",
        Duration::from_secs(60),
        || {
            let foos = foos.clone();
            let created = created.clone();
            async move {
                for (name, happy) in &created {
                    let status = foos.get(name).await?.status;
                    if status.map(|s| s.happy) != Some(*happy) {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            }
        },
    )
    .await
    .expect("no reconcile lost");
    wait_for("the new operator Pod holds the Lease", Duration::from_secs(60), || {
        let leases = leases.clone();
        let rolled = rolled.clone();
        async move {
            let holder = leases.get_opt(RELEASE).await?.and_then(|l| l.spec?.holder_identity);
            Ok(holder.filter(|h| h.starts_with(&rolled)))
        }
    })
    .await
    .expect("new leader");

    // 4. RedisHA's day-2 operations, carried out by the operator under the chart's identity.
    redis_ha_day_two(&client, &samples_ns).await;

    // No 403 anywhere in either operator's log, and each did reconcile.
    for pod in [&pod_name, &rolled] {
        let log = log_of(node, &release_ns, pod);
        assert!(!log.is_empty(), "no log for {pod}");
        assert_no_forbidden(&log, pod);
        println!("{pod}: {} log lines, none forbidden", log.lines().count());
    }

    // A write the chart's identity is refused surfaces on the RedisHA, and clears once allowed.
    refused_roll_is_reported_and_resumes(&client, &samples_ns).await;

    // 5. The identity is refused what the operator never needs.
    let identity = format!("system:serviceaccount:{release_ns}:{RELEASE}");
    // `kubectl auth can-i` prints yes/no on stdout and exits 1 for no.
    // `resource/name` asks about one object; a subresource goes in `--subresource`.
    let can_i = |verb: &str, resource: &str, namespace: &str| {
        let (resource, subresource) = match resource.split_once("#") {
            Some((resource, subresource)) => (resource, Some(subresource)),
            None => (resource, None),
        };
        let mut command = Command::new(&tools.kubectl);
        command.args(["auth", "can-i", verb, resource, "--as", &identity, "-n", namespace]);
        if let Some(subresource) = subresource {
            command.arg(format!("--subresource={subresource}"));
        }
        let output = command
            .env("KUBECONFIG", &tools.kubeconfig)
            .output()
            .expect("kubectl auth can-i");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    for (verb, resource, namespace) in [
        ("patch", "deployments.apps", samples_ns.as_str()),
        ("create", "events.events.k8s.io", samples_ns.as_str()),
        ("patch", "memcacheds.cache.capstan.dev#status", samples_ns.as_str()),
        ("patch", "foos.tutorial.capstan.dev#status", samples_ns.as_str()),
        ("update", "leases.coordination.k8s.io/capstan", release_ns.as_str()),
        // RedisHA: its auth Secret by name, Pods' role labels, owned StatefulSets and budgets.
        ("get", "secrets", samples_ns.as_str()),
        ("patch", "pods", samples_ns.as_str()),
        ("delete", "pods", samples_ns.as_str()),
        ("delete", "statefulsets.apps", samples_ns.as_str()),
        ("patch", "poddisruptionbudgets.policy", samples_ns.as_str()),
        ("watch", "poddisruptionbudgets.policy", samples_ns.as_str()),
        ("patch", "redishas.cache.capstan.dev#status", samples_ns.as_str()),
    ] {
        let answer = can_i(verb, resource, namespace);
        assert_eq!(answer.trim(), "yes", "{identity} may {verb} {resource}");
    }
    for (verb, resource, namespace) in [
        ("list", "secrets", samples_ns.as_str()),
        ("watch", "secrets", samples_ns.as_str()),
        ("delete", "namespaces", "default"),
        ("create", "clusterroles.rbac.authorization.k8s.io", "default"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", "default"),
        ("impersonate", "users", "default"),
        ("impersonate", "serviceaccounts", samples_ns.as_str()),
        ("delete", "deployments.apps", samples_ns.as_str()),
        ("update", "memcacheds.cache.capstan.dev", samples_ns.as_str()),
        ("delete", "persistentvolumeclaims", samples_ns.as_str()),
        ("update", "leases.coordination.k8s.io/someone-else", release_ns.as_str()),
    ] {
        let answer = can_i(verb, resource, namespace);
        assert_eq!(answer, "no", "{identity} must not {verb} {resource}");
        println!("refused: {verb} {resource}");
    }

    // 6. helm uninstall keeps CRDs and custom resources, removes the rest.
    println!(
        "{}",
        tools.helm(&["uninstall", RELEASE, "--namespace", &release_ns, "--wait"])
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in capstan_manager_crd_names() {
        assert!(crds.get_opt(&crd).await.expect("get CRD").is_some(), "CRD {crd} kept");
    }
    assert!(foos.get_opt("foo-01").await.expect("get").is_some(), "Foos kept");
    assert!(
        memcacheds.get_opt("memcached-sample").await.expect("get").is_some(),
        "Memcacheds kept"
    );
    assert_gone(&client, &release_ns).await;
}

/// The sample RedisHA (samples/redis-ha.yaml) and its password.
const SAMPLE_REDIS_HA: &str = "redis-ha-sample";
const SAMPLE_SECRET: &str = "redis-ha-sample-auth";
const SAMPLE_PASSWORD: &str = "change-me-please";
const ROTATED_PASSWORD: &str = "rotated-under-the-chart-identity";
/// Each day-2 operation finishes within this on a shared 2-core machine (a roll of three Pods
/// with one planned failover takes about a minute here).
const DAY_TWO: Duration = Duration::from_secs(300);

async fn redis_ha_converged(observer: &ConvergenceWatch, what: &str, replicas: usize) -> Converged {
    let started = Instant::now();
    let converged = wait_for(what, DAY_TWO, || async {
        // What is missing is printed by the timeout's last error.
        observer.converged(replicas).await.map(Some).map_err(anyhow::Error::msg)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{what}: {converged:?} after {:.1}s", started.elapsed().as_secs_f64());
    converged
}

async fn redis_uids(observer: &ConvergenceWatch) -> BTreeSet<String> {
    observer.redis_pods().await.iter().filter_map(|p| p.uid()).collect()
}

/// Waits until `replicas` Redis Pods run, none of them one of `before`.
async fn every_redis_pod_replaced(observer: &ConvergenceWatch, before: &BTreeSet<String>, replicas: usize, what: &str) {
    wait_for(what, DAY_TWO, || async {
        let pods = observer.redis_pods().await;
        Ok((pods.len() == replicas
            && pods
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_none() && p.uid().is_some_and(|uid| !before.contains(&uid))))
        .then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The day-2 operations a platform team runs on a RedisHA, carried out by the operator under the
/// chart's ServiceAccount (not cluster-admin): a spec change rolls every Redis Pod (the healer
/// deletes them one at a time), a password rotation leaves the old password refused by every
/// Redis, and a scale 3 → 5 → 3 finishes. A verb the chart lacks stalls one of them, and the
/// operator's log shows the 403 (checked after this).
async fn redis_ha_day_two(client: &Client, ns: &str) {
    let rhas: Api<RedisHA> = Api::namespaced(client.clone(), ns);
    let patch_spec = |spec: serde_json::Value| {
        let rhas = rhas.clone();
        async move {
            rhas.patch(
                SAMPLE_REDIS_HA,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .expect("patch the RedisHA's spec");
        }
    };
    let observer = ConvergenceWatch::new(
        client.clone(),
        ns,
        SAMPLE_REDIS_HA,
        Some(SAMPLE_PASSWORD),
        "cluster.local",
    );
    redis_ha_converged(&observer, "the sample RedisHA converged", 3).await;

    let before = redis_uids(&observer).await;
    patch_spec(serde_json::json!({"config": {"maxmemory": "64mb"}})).await;
    every_redis_pod_replaced(&observer, &before, 3, "a spec change rolled every Redis Pod").await;
    redis_ha_converged(&observer, "rolled", 3).await;

    let before = redis_uids(&observer).await;
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            SAMPLE_SECRET,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"password": ROTATED_PASSWORD}})),
        )
        .await
        .expect("rotate the password");
    every_redis_pod_replaced(&observer, &before, 3, "the rotation restarted every Redis Pod").await;
    let rotated = ConvergenceWatch::new(
        client.clone(),
        ns,
        SAMPLE_REDIS_HA,
        Some(ROTATED_PASSWORD),
        "cluster.local",
    );
    redis_ha_converged(&rotated, "password rotated", 3).await;
    for pod in rotated.redis_pods().await {
        let ip = pod_ip(&pod).expect("a Redis Pod's IP");
        let endpoint = Endpoint::new(ip, REDIS_PORT);
        let old = ping(Target::new(&endpoint, Some(SAMPLE_PASSWORD), Timeouts::default())).await;
        assert!(
            old.as_ref().is_err_and(is_auth_refused),
            "{} still takes the old password: {old:?}",
            pod.name_any()
        );
        ping(Target::new(&endpoint, Some(ROTATED_PASSWORD), Timeouts::default()))
            .await
            .unwrap_or_else(|e| panic!("{} refuses the new password: {e}", pod.name_any()));
    }
    println!("every Redis refuses the old password and takes the new one");

    patch_spec(serde_json::json!({"replicas": 5})).await;
    redis_ha_converged(&rotated, "scaled to 5", 5).await;
    patch_spec(serde_json::json!({"replicas": 3})).await;
    let down = redis_ha_converged(&rotated, "scaled back to 3", 3).await;
    assert_eq!(down.redis_pods, 3);
}

/// The healer's Pod deletion refused (the chart's ClusterRole without `delete` on Pods, as an
/// older chart had it): the RedisHA shows `Degraded` with reason `DeletePodsRefused` and a
/// Warning Event of that reason, and once the verb is granted again the roll finishes and the
/// condition clears.
async fn refused_roll_is_reported_and_resumes(client: &Client, ns: &str) {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let granted = roles.get(RELEASE).await.expect("the chart's ClusterRole");
    let mut without_delete = granted.clone();
    for rule in without_delete.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == "pods") {
            rule.verbs.retain(|v| v != "delete");
        }
    }
    roles
        .replace(RELEASE, &PostParams::default(), &without_delete)
        .await
        .expect("take delete on Pods away");
    let observer = ConvergenceWatch::new(
        client.clone(),
        ns,
        SAMPLE_REDIS_HA,
        Some(ROTATED_PASSWORD),
        "cluster.local",
    );
    let before = redis_uids(&observer).await;
    let rhas: Api<RedisHA> = Api::namespaced(client.clone(), ns);
    rhas.patch(
        SAMPLE_REDIS_HA,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"config": {"maxmemory": "48mb"}}})),
    )
    .await
    .expect("a spec change that needs a roll");
    let degraded = |rha: &RedisHA| {
        rha.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let message = wait_for(
        "the refused roll shows as Degraded/DeletePodsRefused",
        DAY_TWO,
        || async {
            let rha = rhas.get(SAMPLE_REDIS_HA).await?;
            Ok(degraded(&rha).filter(|(status, reason, _)| status == "True" && reason == "DeletePodsRefused"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
    .2;
    println!("Degraded: {message}");
    assert!(message.contains("refused to delete pods/redis-ha-sample-"), "{message}");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    wait_for(
        "a Warning Event DeletePodsRefused on the RedisHA",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("DeletePodsRefused")
                        && e.type_.as_deref() == Some("Warning")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(SAMPLE_REDIS_HA)
                })
                .then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    let mut restored = roles.get(RELEASE).await.expect("ClusterRole");
    restored.rules = granted.rules;
    roles
        .replace(RELEASE, &PostParams::default(), &restored)
        .await
        .expect("grant delete on Pods again");
    wait_for("the roll resumes and Degraded clears", DAY_TWO, || async {
        let rha = rhas.get(SAMPLE_REDIS_HA).await?;
        Ok(degraded(&rha).filter(|(status, _, _)| status == "False").map(drop))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    every_redis_pod_replaced(&observer, &before, 3, "the roll finished once allowed").await;
    redis_ha_converged(&observer, "rolled once allowed", 3).await;
}

fn capstan_manager_crd_names() -> Vec<String> {
    std::fs::read_dir(chart::crds_dir())
        .expect("crds/")
        .map(|entry| {
            let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
            name.trim_end_matches(".yaml").to_owned()
        })
        .collect()
}

async fn assert_gone(client: &Client, ns: &str) {
    wait_for(
        "helm uninstall removed every object it installed",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let ns = ns.to_owned();
            async move {
                let left = [
                    Api::<Deployment>::namespaced(client.clone(), &ns)
                        .get_opt(RELEASE)
                        .await?
                        .is_some(),
                    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                        .get_opt(RELEASE)
                        .await?
                        .is_some(),
                    Api::<Service>::namespaced(client.clone(), &ns)
                        .get_opt("capstan-metrics")
                        .await?
                        .is_some(),
                    Api::<Role>::namespaced(client.clone(), &ns)
                        .get_opt("capstan-leader-election")
                        .await?
                        .is_some(),
                    Api::<RoleBinding>::namespaced(client.clone(), &ns)
                        .get_opt("capstan-leader-election")
                        .await?
                        .is_some(),
                    Api::<ClusterRole>::all(client.clone())
                        .get_opt(RELEASE)
                        .await?
                        .is_some(),
                    Api::<ClusterRoleBinding>::all(client.clone())
                        .get_opt(RELEASE)
                        .await?
                        .is_some(),
                ];
                Ok((!left.iter().any(|present| *present)).then_some(()))
            }
        },
    )
    .await
    .expect("uninstalled");
}
