//! Helm installs a chart's `crds/` but never upgrades them. The README's "Upgrading" command,
//! `kubectl apply --server-side --force-conflicts -f deploy/charts/capstan/crds/`, takes a cluster
//! from an older CRD (applied by Helm's field manager) to the current one.
use std::{process::Command, time::Duration};

use capstan_e2e::{chart, kubectl, run, scenarios::wait_for, skip_without};
use capstan_memcached::Memcached;
use capstan_testenv::ControlPlane;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const TEST: &str = "the_readme_upgrade_command_takes_an_older_crd_to_the_current_one";

#[tokio::test]
async fn the_readme_upgrade_command_takes_an_older_crd_to_the_current_one() {
    let Some(kubectl) = kubectl() else {
        skip_without(TEST, "no kubectl on PATH (or KUBECTL)");
        return;
    };
    let control_plane = ControlPlane::shared();
    let client = control_plane.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // The CRD as the chart ships it (the derived schema plus the name limits `crd()` adds).
    let current = capstan_memcached::crd();
    let name = current.metadata.name.clone().expect("CRD name");

    // The older release: the same kind without `spec.memoryMB`, installed the way Helm 4 does
    // (server-side apply, field manager "helm").
    let mut older = serde_json::to_value(&current).expect("CRD as JSON");
    let spec_schema = &mut older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec_schema["properties"]
        .as_object_mut()
        .expect("spec properties")
        .remove("memoryMB");
    crds.patch(&name, &PatchParams::apply("helm").force(), &Patch::Apply(&older))
        .await
        .expect("apply the older CRD");
    wait_for("the older CRD is Established", Duration::from_secs(30), || {
        let crds = crds.clone();
        let name = name.clone();
        async move { Ok(established(&crds.get(&name).await?).then_some(())) }
    })
    .await
    .expect("established");
    let stored = |crd: &CustomResourceDefinition| {
        serde_json::to_value(crd).expect("JSON")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"]["properties"]
            .get("memoryMB")
            .cloned()
    };
    assert_eq!(
        stored(&crds.get(&name).await.expect("CRD")),
        None,
        "the older CRD lacks memoryMB"
    );

    let crds_dir = chart::crds_dir();
    let output = run(Command::new(&kubectl)
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(&crds_dir)
        .env("KUBECONFIG", control_plane.kubeconfig_path()))
    .expect("the README's upgrade command");
    println!("{output}");

    let upgraded = crds.get(&name).await.expect("CRD");
    let expected = serde_json::to_value(&current).expect("JSON");
    assert_eq!(
        serde_json::to_value(&upgraded).expect("JSON")["spec"]["versions"],
        expected["spec"]["versions"],
        "the CRD now is the generated one"
    );
    assert!(stored(&upgraded).is_some());

    // The apiserver serves the new field: it is stored, not pruned.
    let ns = control_plane
        .namespace(&client, "crd-upgrade")
        .await
        .expect("namespace");
    let memcacheds: Api<Memcached> = Api::namespaced(client.clone(), &ns);
    let object: Memcached = serde_json::from_value(json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "Memcached",
        "metadata": {"name": "upgraded"}, "spec": {"size": 0, "memoryMB": 32}
    }))
    .expect("a Memcached");
    let created = wait_for(
        "a Memcached keeps spec.memoryMB under the upgraded CRD",
        Duration::from_secs(30),
        || {
            let memcacheds = memcacheds.clone();
            let object = object.clone();
            async move {
                let _ = memcacheds.delete("upgraded", &Default::default()).await;
                let created = memcacheds.create(&PostParams::default(), &object).await?;
                let raw: Value = serde_json::to_value(&created)?;
                Ok((raw["spec"]["memoryMB"] == 32).then_some(raw))
            }
        },
    )
    .await
    .expect("memoryMB kept");
    println!("stored spec: {}", created["spec"]);
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}
