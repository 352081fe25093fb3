//! The harness proves itself against the real control plane: the controller-manager does its job,
//! RBAC is enforced for ServiceAccount tokens, and nothing outlives a dropped control plane.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use capstan_testenv::{ControlPlane, Options, eventually, process};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet},
        core::v1::{ConfigMap, Pod, Secret, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test object deserializes")
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..ConfigMap::default()
    }
}

fn web_deployment(replicas: i32) -> Deployment {
    from_json(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] },
            },
        },
    }))
}

async fn web_pods(pods: &Api<Pod>) -> Result<Vec<Pod>, String> {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .map(|list| list.items)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_deployment_gets_its_pods_from_the_controller_manager() {
    let control_plane = ControlPlane::shared();
    let client = control_plane.client().await;
    let namespace = control_plane
        .namespace(&client, "deployment-pods")
        .await
        .expect("test namespace");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    let deployment = deployments
        .create(&PostParams::default(), &web_deployment(3))
        .await
        .expect("create the Deployment");

    let created = eventually("3 Pods for a 3-replica Deployment", WAIT, || async {
        let found = web_pods(&pods).await?;
        if found.len() == 3 {
            Ok(found)
        } else {
            Err(format!("{} Pods", found.len()))
        }
    })
    .await;

    let replica_set = replica_sets
        .list(&ListParams::default())
        .await
        .expect("list ReplicaSets")
        .items
        .into_iter()
        .next()
        .expect("the Deployment's ReplicaSet");
    let controller_of =
        |refs: &[OwnerReference]| refs.iter().find(|r| r.controller == Some(true)).map(|r| r.uid.clone());
    assert_eq!(
        controller_of(replica_set.owner_references()),
        deployment.metadata.uid,
        "the ReplicaSet is controlled by the Deployment"
    );
    for pod in &created {
        assert_eq!(
            controller_of(pod.owner_references()),
            replica_set.metadata.uid,
            "Pod {} is controlled by the ReplicaSet",
            pod.name_any()
        );
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        assert!(
            matches!(phase, None | Some("Pending")),
            "no kubelet runs, so Pod {} stays Pending, got {phase:?}",
            pod.name_any()
        );
    }
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let control_plane = ControlPlane::shared();
    let client = control_plane.client().await;
    let namespace = control_plane
        .namespace(&client, "garbage-collection")
        .await
        .expect("test namespace");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);

    let owner = config_maps
        .create(&PostParams::default(), &config_map("owner"))
        .await
        .expect("create the owner");
    let mut dependent = config_map("dependent");
    dependent.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.name_any(),
        uid: owner.uid().expect("owner uid"),
        ..OwnerReference::default()
    }]);
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .expect("create the dependent");

    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .expect("delete the owner");

    eventually("the garbage collector deletes the dependent", WAIT, || async {
        match config_maps.get_opt("dependent").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("the dependent still exists".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

#[tokio::test]
async fn deleting_a_deployment_collects_its_replica_set_and_pods() {
    let control_plane = ControlPlane::shared();
    let client = control_plane.client().await;
    let namespace = control_plane
        .namespace(&client, "deployment-gc")
        .await
        .expect("test namespace");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    deployments
        .create(&PostParams::default(), &web_deployment(2))
        .await
        .expect("create the Deployment");
    eventually("2 Pods for a 2-replica Deployment", WAIT, || async {
        let found = web_pods(&pods).await?.len();
        if found == 2 {
            Ok(())
        } else {
            Err(format!("{found} Pods"))
        }
    })
    .await;

    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete the Deployment");
    eventually("the ReplicaSet and its Pods are collected", WAIT, || async {
        let sets = replica_sets
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        let found = web_pods(&pods).await?.len();
        if sets == 0 && found == 0 {
            Ok(())
        } else {
            Err(format!("{sets} ReplicaSets, {found} Pods"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_service_account_token_gets_exactly_what_rbac_grants() {
    let control_plane = ControlPlane::shared();
    let admin = control_plane.client().await;
    let namespace = control_plane.namespace(&admin, "rbac").await.expect("test namespace");

    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &namespace);
    accounts
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "reader" } })),
        )
        .await
        .expect("create the ServiceAccount");
    let roles: Api<Role> = Api::namespaced(admin.clone(), &namespace);
    roles
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "configmap-reader" },
                "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }],
            })),
        )
        .await
        .expect("create the Role");
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &namespace);
    bindings
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "reader-reads-configmaps" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader" },
                "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": namespace }],
            })),
        )
        .await
        .expect("create the RoleBinding");

    let token = control_plane
        .token_for(&admin, &namespace, "reader")
        .await
        .expect("a token from the TokenRequest API");
    let reader: Client = control_plane
        .client_for_token(&token)
        .await
        .expect("a client with the token");

    // The RBAC authorizer reads from a cache, so the fresh binding may take a moment to count.
    let reader_config_maps: Api<ConfigMap> = Api::namespaced(reader.clone(), &namespace);
    eventually("the granted list of ConfigMaps succeeds", WAIT, || async {
        reader_config_maps
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())
    })
    .await;

    let reader_secrets: Api<Secret> = Api::namespaced(reader.clone(), &namespace);
    match reader_secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(
            status.code, 403,
            "listing Secrets is refused as forbidden, not unauthenticated: {status:?}"
        ),
        other => panic!("listing Secrets must be forbidden, got {other:?}"),
    }
    let reader_other_namespace: Api<ConfigMap> = Api::namespaced(reader, "default");
    match reader_other_namespace.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the Role grants nothing outside its namespace, got {other:?}"),
    }
}

#[tokio::test]
async fn the_audit_log_records_each_write_with_its_user_agent() {
    let control_plane = ControlPlane::shared();
    let admin = control_plane.client().await;
    let namespace = control_plane.namespace(&admin, "audit").await.expect("test namespace");
    // kube-rs sends no User-Agent of its own: a client that wants its requests told apart in the
    // audit log has to set one.
    let mut config = control_plane.kube_config();
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static("capstan-audit-test/1"),
    ));
    let client = Client::try_from(config).expect("a client with a user agent");
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &namespace);
    config_maps
        .create(&PostParams::default(), &config_map("audited"))
        .await
        .expect("create a ConfigMap");

    let audit_log = control_plane
        .audit_log_path()
        .expect("the shared control plane writes an audit log");
    let creates = eventually("the create appears in the audit log", WAIT, || async {
        let text = std::fs::read_to_string(audit_log).map_err(|e| e.to_string())?;
        let creates: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| {
                event["verb"] == "create"
                    && event["objectRef"]["namespace"] == namespace.as_str()
                    && event["objectRef"]["name"] == "audited"
            })
            .collect();
        if creates.is_empty() {
            Err("no matching event".to_owned())
        } else {
            Ok(creates)
        }
    })
    .await;
    assert_eq!(creates.len(), 1, "one event per request: {creates:#?}");
    assert_eq!(creates[0]["level"], "Metadata");
    assert_eq!(
        creates[0]["userAgent"], "capstan-audit-test/1",
        "the event names the user agent: {:#}",
        creates[0]
    );
    assert_eq!(creates[0]["user"]["username"], "admin");
}

#[tokio::test]
async fn the_apiserver_restarts_on_the_same_address_with_its_data() {
    let control_plane = tokio::task::spawn_blocking(|| ControlPlane::start(Options::default()))
        .await
        .expect("startup thread")
        .unwrap_or_else(|e| panic!("{e}"));
    let client = control_plane.client().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    config_maps
        .create(&PostParams::default(), &config_map("survivor"))
        .await
        .expect("create a ConfigMap");

    let control_plane = tokio::task::spawn_blocking(move || {
        control_plane.stop_apiserver();
        control_plane
    })
    .await
    .expect("stop thread");
    assert!(
        config_maps.get("survivor").await.is_err(),
        "requests fail while the apiserver is down"
    );

    let started = Instant::now();
    let control_plane = tokio::task::spawn_blocking(move || {
        control_plane.start_apiserver().unwrap_or_else(|e| panic!("{e}"));
        control_plane
    })
    .await
    .expect("start thread");
    eprintln!("apiserver restart: took {:.2}s", started.elapsed().as_secs_f64());
    let fresh: Api<ConfigMap> = Api::namespaced(control_plane.client().await, "default");
    let survivor = fresh.get("survivor").await.expect("the ConfigMap survives");
    assert_eq!(survivor.data, config_map("survivor").data);
    drop(fresh);
    tokio::task::spawn_blocking(move || drop(control_plane))
        .await
        .expect("drop thread");
}

#[test]
fn dropping_a_control_plane_stops_its_processes_and_removes_its_files() {
    let control_plane = ControlPlane::start(Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let pids: Vec<(&str, u32)> = ["etcd", "kube-apiserver", "kube-controller-manager"]
        .into_iter()
        .map(|component| {
            let pid = control_plane
                .pid(component)
                .unwrap_or_else(|| panic!("{component} has a pid"));
            assert!(process::is_alive(pid), "{component} runs before the drop");
            (component, pid)
        })
        .collect();
    let dir = control_plane
        .kubeconfig_path()
        .parent()
        .expect("the kubeconfig lives in the temp dir")
        .to_path_buf();

    let started = Instant::now();
    drop(control_plane);
    eprintln!("drop: took {:.2}s", started.elapsed().as_secs_f64());

    for (component, pid) in pids {
        assert!(
            !process::is_alive(pid),
            "{component} (pid {pid}) is gone after the drop"
        );
    }
    assert!(!dir.exists(), "{} is removed", dir.display());
}
