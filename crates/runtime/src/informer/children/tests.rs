use super::*;
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::ConfigMap},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::api::ObjectMeta;

fn child(ns: &str, name: &str, owner_uid: Option<&str>, data: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            owner_references: owner_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "cache.capstan.dev/v1alpha1".into(),
                    kind: "Memcached".into(),
                    name: "owner".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_owned(), data.to_owned())].into()),
        ..ConfigMap::default()
    }
}

fn names(children: &[Arc<ConfigMap>]) -> Vec<String> {
    let mut names: Vec<String> = children.iter().filter_map(|c| c.metadata.name.clone()).collect();
    names.sort();
    names
}

#[test]
fn a_child_reads_back_as_stored_and_a_delete_removes_it() {
    let cache = child_cache_from([child("ns", "a", Some("u1"), "one")]);
    let stored = child("ns", "a", Some("u1"), "one");
    assert_eq!(cache.get(&ObjectRef::new("a").within("ns")).as_deref(), Some(&stored));
    assert!(cache.get(&ObjectRef::new("a").within("other")).is_none());
    cache.delete(&stored);
    assert!(cache.get(&ObjectRef::new("a").within("ns")).is_none());
    assert!(cache.is_empty());
}

#[test]
fn siblings_compress_against_the_first_child_and_read_back_whole() {
    let template = "a Pod template every sibling shares, with its labels and probes ".repeat(20);
    let siblings: Vec<ConfigMap> = (0..50)
        .map(|i| child("ns", &format!("cache-{i}"), Some(&format!("uid-{i}")), &template))
        .collect();
    let cache = child_cache_from(siblings.clone());
    for sibling in &siblings {
        let reference = ObjectRef::new(sibling.metadata.name.as_deref().unwrap_or_default()).within("ns");
        assert_eq!(cache.get(&reference).as_deref(), Some(sibling));
    }
    let objects = cache.read();
    let last = &objects.by_key[&("ns".into(), "cache-49".into())].packed;
    let alone = lz4_flex::compress_prepend_size(&serde_json::to_vec(&siblings[49]).expect("json"));
    assert!(
        last.len() * 4 < alone.len(),
        "against the dictionary {} bytes, alone {}",
        last.len(),
        alone.len()
    );
    drop(objects);
    // A relist builds a new dictionary; what vanished still decodes with the old one.
    let mut listed = listing();
    list_insert(&mut listed, &child("ns", "other", None, "unrelated"));
    let vanished = cache.replace(listed);
    assert_eq!(vanished.len(), 50);
    assert!(
        vanished
            .iter()
            .all(|c| c.data.as_ref().is_some_and(|d| d["k"] == template))
    );
    assert_eq!(
        cache.get(&ObjectRef::new("other").within("ns")).as_deref(),
        Some(&child("ns", "other", None, "unrelated"))
    );
}

#[test]
fn the_owner_index_follows_updates_that_change_hands_and_deletes() {
    let cache = child_cache_from([
        child("ns", "a", Some("u1"), ""),
        child("ns", "b", Some("u1"), ""),
        child("other", "c", Some("u1"), ""),
        child("ns", "d", None, ""),
    ]);
    assert_eq!(names(&cache.controlled_by("u1", "ns")), ["a", "b"]);
    assert_eq!(names(&cache.controlled_by("u1", "other")), ["c"]);
    cache.apply(&child("ns", "b", Some("u2"), ""));
    assert_eq!(names(&cache.controlled_by("u1", "ns")), ["a"]);
    assert_eq!(names(&cache.controlled_by("u2", "ns")), ["b"]);
    cache.apply(&child("ns", "a", Some("u1"), "changed"));
    assert_eq!(
        cache.controlled_by("u1", "ns")[0]
            .data
            .as_ref()
            .map(|d| d["k"].as_str()),
        Some("changed")
    );
    cache.delete(&child("ns", "a", Some("u1"), ""));
    assert!(cache.controlled_by("u1", "ns").is_empty());
    assert_eq!(names(&cache.controlled_by("u1", "other")), ["c"]);
    cache.delete(&child("other", "c", Some("u1"), ""));
    assert!(
        !cache.read().by_owner.contains_key("u1" as &str),
        "an owner with no children left is dropped"
    );
}

#[test]
fn a_created_child_reads_from_its_create_answer_until_the_watch_shows_it() {
    let cache = child_cache_from(Vec::<ConfigMap>::new());
    let reference = ObjectRef::new("a").within("ns");
    cache.remember_created(&child("ns", "a", Some("u1"), "answer"));
    let read = cache.get(&reference).expect("remembered");
    assert_eq!(read.data.as_ref().map(|d| d["k"].as_str()), Some("answer"));
    assert!(cache.is_empty(), "not a watched child: not listed, not pruned");
    assert!(cache.controlled_by("u1", "ns").is_empty());
    cache.apply(&child("ns", "a", Some("u1"), "watched"));
    cache.delete(&child("ns", "a", Some("u1"), "watched"));
    assert!(
        cache.get(&reference).is_none(),
        "the watch's deletion also ends the memory"
    );
    // A create answered after the watch showed the object's deletion is stale.
    cache.remember_created(&child("ns", "a", Some("u1"), "late"));
    assert!(cache.get(&reference).is_none());
}

#[test]
fn a_remembered_creation_expires() {
    let mut objects = Objects::default();
    objects.remember_created(&child("ns", "a", Some("u1"), ""));
    let key: Key = ("ns".into(), "a".into());
    let now = Instant::now();
    assert!(objects.get(&key, now).is_some());
    assert!(objects.get(&key, now + CREATED_FOR).is_none(), "read after its time");
    objects.sweep(now + CREATED_FOR * 2);
    assert!(objects.created.is_empty() && objects.deleted.is_empty());
}

#[test]
fn a_relist_replaces_everything_and_reports_what_vanished() {
    let cache = child_cache_from([child("ns", "a", Some("u1"), ""), child("ns", "b", Some("u1"), "")]);
    let mut listed = listing();
    list_insert(&mut listed, &child("ns", "b", Some("u1"), "new"));
    list_insert(&mut listed, &child("ns", "c", Some("u1"), ""));
    let vanished = cache.replace(listed);
    assert_eq!(names(&vanished), ["a"]);
    assert_eq!(names(&cache.controlled_by("u1", "ns")), ["b", "c"]);
    assert_eq!(cache.len(), 2);
}

#[test]
fn a_deployment_is_stored_in_a_fraction_of_its_json_and_reads_back_whole() {
    let labels = serde_json::json!({
        "app.kubernetes.io/name": "memcached",
        "app.kubernetes.io/instance": "mc-00042",
        "app.kubernetes.io/managed-by": "capstan",
    });
    let condition = |type_: &str, reason: &str| {
        serde_json::json!({"type": type_, "status": "True", "reason": reason,
            "lastUpdateTime": "2026-12-02T23:51:02Z", "lastTransitionTime": "2026-12-02T23:51:02Z",
            "message": "ReplicaSet \"mc-00042-5d8f7c9b6f\" has successfully progressed."})
    };
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mc-00042", "namespace": "bench-memcached", "labels": labels,
            "uid": "0b5c3c52-8f5e-4f0a-9d1e-2f6a1c3e4b5d", "resourceVersion": "123456", "generation": 1},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "memcached", "image": "memcached:1.6.38",
                    "args": ["-m", "64", "-p", "11211"],
                    "ports": [{"name": "memcached", "containerPort": 11211, "protocol": "TCP"}],
                    "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}}]}
            }
        },
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
            "availableReplicas": 1,
            "conditions": [condition("Available", "MinimumReplicasAvailable"),
                condition("Progressing", "NewReplicaSetAvailable")]}
    }))
    .expect("a Deployment");
    // The dictionary is the first child stored: a sibling with its own name, UID and times.
    let sibling: Deployment = serde_json::from_str(
        &serde_json::to_string(&deployment)
            .expect("JSON")
            .replace("00042", "00007")
            .replace("0b5c3c52-8f5e", "7e1d9a04-3c2b")
            .replace("23:51:02", "23:50:48"),
    )
    .expect("a sibling");
    let cache = child_cache_from([sibling, deployment.clone()]);
    let json = serde_json::to_vec(&deployment).expect("JSON");
    let alone = lz4_flex::compress_prepend_size(&json).len();
    let stored = cache.read().by_key[&("bench-memcached".into(), "mc-00042".into())]
        .packed
        .len();
    eprintln!(
        "typed struct {} B, JSON {} B, LZ4 alone {alone} B, against its sibling {stored} B",
        std::mem::size_of::<Deployment>(),
        json.len()
    );
    assert!(
        alone * 10 < json.len() * 7,
        "LZ4 alone {alone} B of {} B of JSON",
        json.len()
    );
    assert!(stored * 3 < alone, "against its sibling {stored} B, alone {alone} B");
    let read = cache.get(&ObjectRef::new("mc-00042").within("bench-memcached"));
    assert_eq!(read.as_deref(), Some(&deployment));
}
