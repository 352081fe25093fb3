//! The bundled chart, rendered without a cluster: `helm lint` is clean, the default and
//! non-default values render the RBAC, Deployment and security context we promise, and bad values
//! fail at install time with a message naming the value.
use std::{collections::BTreeSet, path::PathBuf, process::Command};

use capstan_e2e::{chart, helm, skip_without};
use serde_json::{Value, json};

fn helm_or_skip(test: &str) -> Option<PathBuf> {
    match helm::locate() {
        Ok(path) => Some(path),
        Err(missing) => {
            skip_without(test, &missing.to_string());
            None
        }
    }
}

/// A rule flattened to `(apiGroup, resource, verb)` triples, so rule order and grouping don't matter.
fn permissions(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().expect("rules is a list") {
        assert!(
            rule.get("resourceNames").is_none(),
            "an unexpected name-scoped rule: {rule}"
        );
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    out.insert((
                        group.as_str().expect("group").to_owned(),
                        resource.as_str().expect("resource").to_owned(),
                        verb.as_str().expect("verb").to_owned(),
                    ));
                }
            }
        }
    }
    out
}

fn triples(items: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs
                .iter()
                .map(move |verb| ((*group).to_owned(), (*resource).to_owned(), (*verb).to_owned()))
        })
        .collect()
}

const READ: &[&str] = &["get", "list", "watch"];

fn foo_permissions() -> BTreeSet<(String, String, String)> {
    triples(&[
        ("tutorial.capstan.dev", "foos", READ),
        ("tutorial.capstan.dev", "foos/status", &["get", "patch"]),
        ("", "pods", READ),
    ])
}

fn memcached_permissions() -> BTreeSet<(String, String, String)> {
    triples(&[
        ("cache.capstan.dev", "memcacheds", READ),
        ("cache.capstan.dev", "memcacheds/status", &["get", "patch"]),
        ("apps", "deployments", &["get", "list", "watch", "create", "patch"]),
        ("", "services", &["get", "list", "watch", "create", "patch"]),
        ("", "pods", READ),
    ])
}

fn redis_ha_permissions() -> BTreeSet<(String, String, String)> {
    const OWNED: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
    triples(&[
        ("cache.capstan.dev", "redishas", READ),
        ("cache.capstan.dev", "redishas/status", &["get", "patch"]),
        ("apps", "statefulsets", OWNED),
        ("", "services", OWNED),
        ("", "configmaps", OWNED),
        ("policy", "poddisruptionbudgets", OWNED),
        // patch: role labels; delete: the healer rolls its OnDelete Pods one at a time.
        ("", "pods", &["get", "list", "watch", "patch", "delete"]),
        // By name only: the operator never lists or watches Secrets.
        ("", "secrets", &["get"]),
    ])
}

fn events_permissions() -> BTreeSet<(String, String, String)> {
    triples(&[("events.k8s.io", "events", &["create", "patch"])])
}

fn manager_args(objects: &[Value]) -> Vec<String> {
    let deployment = chart::find(objects, "Deployment", "capstan").expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg").to_owned())
        .collect()
}

#[test]
fn helm_lint_is_clean() {
    let Some(helm) = helm_or_skip("helm_lint_is_clean") else {
        return;
    };
    let output = capstan_e2e::run(Command::new(&helm).args(["lint", "--strict"]).arg(chart::chart_dir()))
        .expect("helm lint --strict passes");
    println!("{output}");
    assert!(output.contains("0 chart(s) failed"), "{output}");
    assert!(!output.contains("[WARNING]") && !output.contains("[ERROR]"), "{output}");
}

#[test]
fn default_values_give_cluster_wide_least_privilege_rbac_and_a_restricted_pod() {
    let Some(helm) = helm_or_skip("default_values_give_cluster_wide_least_privilege_rbac_and_a_restricted_pod") else {
        return;
    };
    let objects = chart::template(&helm, "capstan", "capstan-system", &[]).expect("default values render");
    println!("rendered: {:?}", chart::kinds(&objects));

    // Every controller the manager has runs, and the chart knows each one's rules.
    let manager_controllers: Vec<&str> = capstan_manager::controller_names();
    let args = manager_args(&objects);
    assert!(
        args.contains(&format!("--controllers={}", manager_controllers.join(","))),
        "the chart must run every controller the manager has ({manager_controllers:?}): {args:?}"
    );
    assert!(args.contains(&"--leader-elect".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--leader-election-namespace=capstan-system".to_owned()),
        "{args:?}"
    );

    // RBAC: exactly what the controllers use, cluster-wide; nothing about Secrets or RBAC itself.
    let role = chart::find(&objects, "ClusterRole", "capstan").expect("a ClusterRole");
    let granted = permissions(&role["rules"]);
    let expected: BTreeSet<_> = foo_permissions()
        .into_iter()
        .chain(memcached_permissions())
        .chain(redis_ha_permissions())
        .chain(events_permissions())
        .collect();
    assert_eq!(granted, expected, "the ClusterRole's rules");
    let binding = chart::find(&objects, "ClusterRoleBinding", "capstan").expect("a ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], "capstan");
    assert_eq!(binding["subjects"][0]["namespace"], "capstan-system");
    assert!(
        chart::find(&objects, "Role", "capstan").is_none(),
        "no namespaced Role for the controllers"
    );

    // Leader election: create any Lease, read and update only ours, in the release namespace.
    let lease_role = chart::find(&objects, "Role", "leader-election").expect("the Lease Role");
    assert_eq!(lease_role["metadata"]["namespace"], "capstan-system");
    assert_eq!(
        lease_role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["capstan"],
             "verbs": ["get", "update"]},
        ])
    );
    assert!(args.contains(&"--leader-election-id=capstan".to_owned()), "{args:?}");

    // The restricted Pod Security Standard, with a numeric user.
    let deployment = chart::find(&objects, "Deployment", "capstan").expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "capstan");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        pod["securityContext"]["runAsUser"].as_u64().is_some_and(|uid| uid > 0),
        "numeric non-root uid"
    );
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        container["image"],
        format!("ghcr.io/capstan-dev/capstan-manager:{}", env!("CARGO_PKG_VERSION")),
        "the image tag defaults to the chart's appVersion, which is the manager's version"
    );
    assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);

    // Metrics Service on; ServiceMonitor and dashboard off.
    let service = chart::find(&objects, "Service", "metrics").expect("the metrics Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert!(chart::find(&objects, "ServiceMonitor", "").is_none());
    assert!(chart::find(&objects, "ConfigMap", "dashboard").is_none());
}

#[test]
fn non_default_values_give_a_namespaced_role_and_the_optional_objects() {
    let Some(helm) = helm_or_skip("non_default_values_give_a_namespaced_role_and_the_optional_objects") else {
        return;
    };
    let objects = chart::template(
        &helm,
        "ops",
        "operators",
        &[
            "watchNamespace=apps",
            "controllers={memcached}",
            "leaderElection.enabled=false",
            "image.repository=localhost/capstan-manager",
            "image.tag=dev",
            "logFormat=text",
            "metrics.serviceMonitor.enabled=true",
            "dashboard.enabled=true",
            "podSecurityContext.runAsUser=1000",
            "nodeSelector.disk=ssd",
        ],
    )
    .expect("non-default values render");
    println!("rendered: {:?}", chart::kinds(&objects));

    assert!(
        chart::find(&objects, "ClusterRole", "").is_none(),
        "a watch namespace needs no ClusterRole"
    );
    assert!(chart::find(&objects, "ClusterRoleBinding", "").is_none());
    let role = chart::find(&objects, "Role", "ops-capstan").expect("a Role");
    assert_eq!(
        role["metadata"]["namespace"], "apps",
        "the Role lives in the watched namespace"
    );
    let expected: BTreeSet<_> = memcached_permissions()
        .into_iter()
        .chain(events_permissions())
        .collect();
    assert_eq!(permissions(&role["rules"]), expected, "only memcached's rules");
    let binding = chart::find(&objects, "RoleBinding", "ops-capstan").expect("a RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "apps");
    assert_eq!(binding["subjects"][0]["namespace"], "operators");
    assert!(
        chart::find(&objects, "Role", "leader-election").is_none(),
        "no Lease Role without election"
    );

    let args = manager_args(&objects);
    for expected in ["--controllers=memcached", "--namespace=apps", "--log-format=text"] {
        assert!(args.contains(&expected.to_owned()), "{expected} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--leader-elect")), "{args:?}");
    let deployment = chart::find(&objects, "Deployment", "capstan").expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "localhost/capstan-manager:dev");
    assert_eq!(pod["securityContext"]["runAsUser"], 1000);
    assert_eq!(pod["nodeSelector"], json!({"disk": "ssd"}));

    let monitor = chart::find(&objects, "ServiceMonitor", "ops-capstan").expect("a ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let dashboard = chart::find(&objects, "ConfigMap", "dashboard").expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(dashboard["data"]["capstan.json"].as_str().expect("dashboard data"))
        .expect("the dashboard is JSON");
    let exprs = json["panels"].to_string();
    for metric in [
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "controller_runtime_active_workers",
        "leader_election_master_status",
    ] {
        assert!(exprs.contains(metric), "the dashboard charts {metric}");
    }
}

#[test]
fn bad_values_fail_with_a_message_naming_the_value() {
    let Some(helm) = helm_or_skip("bad_values_fail_with_a_message_naming_the_value") else {
        return;
    };
    let cases: &[(&[&str], &[&str])] = &[
        (&["logFormat=xml"], &["/logFormat", "'text', 'json'"]),
        (&["replicaCount=-1"], &["/replicaCount", "minimum"]),
        (&["imag.tag=x"], &["additional properties 'imag'"]),
        (&["leaderElection.leaseDuration=15"], &["/leaderElection/leaseDuration"]),
        (&["metrics.port=70000"], &["/metrics/port"]),
        (
            &["controllers={redis}"],
            &["unknown controller \"redis\"", "foo, memcached, redis-ha"],
        ),
        (
            &["replicaCount=2", "leaderElection.enabled=false"],
            &["replicaCount > 1 needs leaderElection.enabled=true"],
        ),
    ];
    for (set, expected) in cases {
        let error = chart::template(&helm, "capstan", "default", set)
            .err()
            .unwrap_or_else(|| panic!("{set:?} must be refused"));
        let message = error.to_string();
        println!("{set:?} -> {}", message.lines().last().unwrap_or_default());
        for fragment in *expected {
            assert!(
                message.contains(fragment),
                "{set:?}: expected {fragment:?} in: {message}"
            );
        }
    }
}

#[test]
fn chart_app_version_is_the_manager_version() {
    let chart_yaml = std::fs::read_to_string(chart::chart_dir().join("Chart.yaml")).expect("Chart.yaml");
    let chart: serde_yaml::Value = serde_yaml::from_str(&chart_yaml).expect("Chart.yaml is YAML");
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml's appVersion (the default image tag) must follow the workspace version"
    );
}
