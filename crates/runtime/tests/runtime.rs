//! The runtime's own behaviour against a real apiserver (capstan-testenv), with ConfigMaps as
//! both owners and children so no custom resource is needed: owned children (controller
//! reference, foreign-object refusal with one GET, prune), the leader-checked delete, and how a
//! controller treats panics, deadlines, permanent errors and a broken trigger.
use capstan_runtime::{
    Action, ApplyOutcome, ChildCache, Context, Error, EventPublisher, Leadership, ReconcileError, Reconciler,
    parts::{Informers, Metrics, Readiness, client, managed_by_capstan},
};
use capstan_testenv::{ControlPlane, audit, eventually, spawn_manager, spawn_manager_with, test_args};
use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(60);

fn config_map(name: &str, data: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("key".to_owned(), data.to_owned())])),
        ..Default::default()
    }
}

/// A client whose requests the audit log can single out.
fn client_with_agent(cp: &ControlPlane, agent: &'static str) -> Client {
    let mut config = cp.kube_config();
    config
        .headers
        .push((http::header::USER_AGENT, http::HeaderValue::from_static(agent)));
    Client::try_from(config).expect("client")
}

/// A cache of the capstan-labelled ConfigMaps of `ns`, filled.
async fn child_cache(client: Client, ns: &str) -> ChildCache<ConfigMap> {
    let mut informers = Informers::new(client, Some(ns.to_owned()), Readiness::new());
    // Nobody reads the changes: dropping the receiver lets the informer carry on without them.
    let (store, _) = informers.subscribe_children::<ConfigMap>(managed_by_capstan());
    let started = informers.start();
    for (_, driver) in started.drivers {
        tokio::spawn(driver);
    }
    started.synced.await;
    store
}

#[tokio::test]
async fn children_get_a_controller_reference_foreign_objects_are_refused_and_leftovers_pruned() {
    let cp = ControlPlane::shared();
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "rt-children").await.expect("namespace");
    let audit_log = cp.audit_log_path().expect("audit log").to_owned();
    const AGENT: &str = "capstan-runtime-test-children/1";
    let client = client_with_agent(cp, AGENT);
    let maps = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    let owner = maps
        .create(&PostParams::default(), &config_map("owner", "o"))
        .await
        .expect("owner");
    maps.create(&PostParams::default(), &config_map("taken", "someone else's"))
        .await
        .expect("foreign object");
    let cache = child_cache(client.clone(), &ns).await;
    let ctx = Context::new(
        client.clone(),
        "test",
        Metrics::new().expect("metrics"),
        None,
        Leadership::fixed(true),
    );

    let mut children = ctx.children(&owner).expect("children");
    let created = children
        .apply(&cache, config_map("child-a", "1"))
        .await
        .expect("apply a");
    assert_eq!(created.outcome, ApplyOutcome::Applied);
    assert!(created.previous.is_none());
    children
        .apply(&cache, config_map("child-b", "1"))
        .await
        .expect("apply b");
    let child = maps.get("child-a").await.expect("child-a");
    let reference = &child.owner_references()[0];
    assert_eq!(
        (reference.uid.as_str(), reference.controller, reference.kind.as_str()),
        (owner.metadata.uid.as_deref().expect("uid"), Some(true), "ConfigMap")
    );
    assert_eq!(
        child.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("capstan")
    );

    // The foreign object: one GET tells it apart, nothing is written.
    let mark = audit::mark(&audit_log);
    let refused = children
        .apply(&cache, config_map("taken", "mine now"))
        .await
        .expect_err("a foreign object is refused");
    assert!(matches!(refused, Error::ForeignChild { .. }), "{refused}");
    assert!(refused.is_permanent());
    tokio::time::sleep(Duration::from_secs(1)).await; // the audit log is written as requests complete
    let requests: Vec<String> = audit::since(&audit_log, mark)
        .expect("audit")
        .into_iter()
        .filter(|e| e.from_user_agent(AGENT) && e.target() == "configmaps")
        .map(|e| format!("{} {}", e.verb, e.request_uri))
        .collect();
    eprintln!("requests for the foreign object: {requests:?}");
    assert_eq!(requests.len(), 1, "exactly one read: {requests:?}");
    assert!(
        requests[0].starts_with("get ") && requests[0].contains("/taken"),
        "{requests:?}"
    );
    let taken = maps.get("taken").await.expect("taken");
    assert!(taken.owner_references().is_empty());
    assert_eq!(
        taken.data.and_then(|d| d.get("key").cloned()).as_deref(),
        Some("someone else's")
    );

    // Once cached, an unchanged child costs no request at all.
    eventually("the children are cached", WAIT, || async {
        (cache.len() == 2).then_some(())
    })
    .await;
    let mut again = ctx.children(&owner).expect("children");
    let unchanged = again.apply(&cache, config_map("child-a", "1")).await.expect("apply a");
    assert_eq!(unchanged.outcome, ApplyOutcome::Unchanged);
    // child-b is no longer desired.
    let pruned = again.prune(&cache).await.expect("prune");
    assert_eq!(pruned, ["child-b"]);
    eventually("child-b is gone", WAIT, || async {
        maps.get_opt("child-b").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(maps.get_opt("child-a").await.expect("get").is_some(), "kept");
    assert!(
        maps.get_opt("taken").await.expect("get").is_some(),
        "never pruned: not ours"
    );
}

#[tokio::test]
async fn a_follower_deletes_nothing() {
    let cp = ControlPlane::shared();
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "rt-follower").await.expect("namespace");
    let audit_log = cp.audit_log_path().expect("audit log").to_owned();
    const AGENT: &str = "capstan-runtime-test-follower/1";
    let maps = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    maps.create(&PostParams::default(), &config_map("victim", "v"))
        .await
        .expect("create");
    let follower = Context::new(
        client_with_agent(cp, AGENT),
        "test",
        Metrics::new().expect("metrics"),
        None,
        Leadership::fixed(false),
    );
    let mark = audit::mark(&audit_log);
    let refused = follower.delete::<ConfigMap>(&ns, "victim").await;
    assert!(matches!(refused, Err(Error::NotLeader)), "{refused:?}");
    let leader = Context::new(
        client_with_agent(cp, AGENT),
        "test",
        Metrics::new().expect("metrics"),
        None,
        Leadership::fixed(true),
    );
    leader
        .delete::<ConfigMap>(&ns, "victim")
        .await
        .expect("the leader deletes");
    leader
        .delete::<ConfigMap>(&ns, "victim")
        .await
        .expect("deleting what is gone is no error");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deletes = audit::since(&audit_log, mark)
        .expect("audit")
        .into_iter()
        .filter(|e| e.from_user_agent(AGENT) && e.verb == "delete")
        .count();
    assert_eq!(deletes, 2, "only the leader's two deletes reached the apiserver");
}

/// A reconciler of ConfigMaps whose behaviour per object name is set by the test.
#[derive(Clone, Default)]
struct Scripted {
    attempts: Arc<Mutex<BTreeMap<String, Vec<Instant>>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ScriptedError(&'static str, bool);

impl ReconcileError for ScriptedError {
    fn metric_label(&self) -> &'static str {
        self.0
    }
    fn is_permanent(&self) -> bool {
        self.1
    }
}

impl Scripted {
    fn attempts(&self, name: &str) -> Vec<Instant> {
        capstan_runtime::lock(&self.attempts)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

fn data_of(map: &ConfigMap) -> &str {
    map.data.as_ref().and_then(|d| d.get("key")).map_or("", String::as_str)
}

impl Reconciler for Scripted {
    type Object = ConfigMap;
    type Error = ScriptedError;
    const NAME: &'static str = "scripted";

    async fn reconcile(&self, obj: Arc<ConfigMap>, _ctx: &Context) -> Result<Action, ScriptedError> {
        let name = obj.name_any();
        let attempt = {
            let mut attempts = capstan_runtime::lock(&self.attempts);
            let list = attempts.entry(name.clone()).or_default();
            list.push(Instant::now());
            list.len()
        };
        match name.as_str() {
            "panics-once" if attempt == 1 => panic!("a bug in one reconcile"),
            "invalid" => Err(ScriptedError("invalid_spec", true)),
            "flaky" if data_of(&obj) == "fail" => Err(ScriptedError("transient", false)),
            "fails-slowly" => {
                // Long enough for the test to delete the object while this reconcile runs.
                tokio::time::sleep(Duration::from_secs(3)).await;
                Err(ScriptedError("transient", false))
            }
            "hangs" => {
                std::future::pending::<()>().await;
                Ok(Action::await_change())
            }
            _ => Ok(Action::await_change()),
        }
    }
}

#[tokio::test]
async fn a_panic_is_caught_counted_and_retried_with_backoff_while_others_carry_on() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "rt-panic").await.expect("namespace");
    let scripted = Scripted::default();
    let reconciler = scripted.clone();
    let manager = spawn_manager(client.clone(), &ns, move |m| m.add(move |_w| reconciler))
        .await
        .expect("manager");
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    maps.create(&PostParams::default(), &config_map("panics-once", "x"))
        .await
        .expect("create");
    let attempts = eventually("the panicking object is retried", WAIT, || async {
        let attempts = scripted.attempts("panics-once");
        (attempts.len() >= 2).then_some(attempts)
    })
    .await;
    let retry_after = attempts[1] - attempts[0];
    eprintln!("retried {retry_after:?} after the panic");
    assert!(
        retry_after >= Duration::from_millis(450),
        "a backoff, not an immediate retry: {retry_after:?}"
    );
    assert!(retry_after < Duration::from_secs(10), "{retry_after:?}");
    assert_eq!(
        manager
            .metric(r#"capstan_reconcile_errors_by_reason_total{controller="scripted",reason="panic"}"#)
            .await,
        1.0
    );
    maps.create(&PostParams::default(), &config_map("fine", "x"))
        .await
        .expect("create");
    eventually("another object is still reconciled", WAIT, || async {
        (!scripted.attempts("fine").is_empty()).then_some(())
    })
    .await;
    assert!(!manager.is_finished(), "the manager survives the panic");
    manager.stop().await.expect("stops");
}

#[tokio::test]
async fn a_permanent_error_waits_for_a_change_and_a_hung_reconcile_hits_its_deadline() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "rt-permanent").await.expect("namespace");
    let scripted = Scripted::default();
    let reconciler = scripted.clone();
    let args = capstan_runtime::RuntimeArgs {
        reconcile_deadline: Duration::from_secs(1),
        ..test_args(&ns)
    };
    let manager = spawn_manager_with(client.clone(), args, move |m| m.add(move |_w| reconciler))
        .await
        .expect("manager");
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    maps.create(&PostParams::default(), &config_map("invalid", "x"))
        .await
        .expect("create");
    maps.create(&PostParams::default(), &config_map("hangs", "x"))
        .await
        .expect("create");
    eventually("the invalid object was tried", WAIT, || async {
        (!scripted.attempts("invalid").is_empty()).then_some(())
    })
    .await;
    // A backoff from 0.5 s would have retried ~4 times in 5 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(scripted.attempts("invalid").len(), 1, "no retry without a change");
    maps.patch(
        "invalid",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"data": {"key": "changed"}})),
    )
    .await
    .expect("change it");
    eventually("a change brings one more attempt", WAIT, || async {
        (scripted.attempts("invalid").len() == 2).then_some(())
    })
    .await;

    let hung = scripted.attempts("hangs");
    assert!(
        hung.len() >= 2,
        "the hung reconcile was abandoned and retried: {}",
        hung.len()
    );
    let retry = hung[1] - hung[0];
    eprintln!("hung reconcile retried after {retry:?} (deadline 1 s + backoff)");
    assert!(retry >= Duration::from_millis(1400), "{retry:?}");
    assert!(
        manager
            .metric(r#"capstan_reconcile_errors_by_reason_total{controller="scripted",reason="deadline"}"#)
            .await
            >= 1.0
    );
    manager.stop().await.expect("stops");
}

#[tokio::test]
async fn failure_counts_are_dropped_on_success_and_with_their_objects() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "rt-failures").await.expect("namespace");
    let scripted = Scripted::default();
    let reconciler = scripted.clone();
    let manager = spawn_manager(client.clone(), &ns, move |m| m.add(move |_w| reconciler))
        .await
        .expect("manager");
    const FAILING: &str = r#"capstan_reconcile_failing_objects{controller="scripted"}"#;
    let failing_objects = || manager.metric(FAILING);
    let failing_is = |expected: f64, what: &'static str| {
        eventually(what, WAIT, move || async move {
            (failing_objects().await == expected).then_some(())
        })
    };
    assert_eq!(failing_objects().await, 0.0, "the gauge exists from the start");
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let set_data = |data: &'static str| {
        let maps = maps.clone();
        async move {
            maps.patch(
                "flaky",
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"data": {"key": data}})),
            )
            .await
            .expect("patch")
        }
    };

    // Failing: an entry exists. Succeeding: it is dropped while the object still exists.
    maps.create(&PostParams::default(), &config_map("flaky", "fail"))
        .await
        .expect("create");
    failing_is(1.0, "a failing object is counted").await;
    set_data("ok").await;
    failing_is(0.0, "a success drops the count").await;
    let attempts_at_success = scripted.attempts("flaky").len();
    assert!(maps.get_opt("flaky").await.expect("get").is_some(), "still there");

    // Failing again, then deleted: the entry goes with the object, and the retries stop.
    set_data("fail").await;
    failing_is(1.0, "failing again").await;
    assert!(scripted.attempts("flaky").len() > attempts_at_success);
    maps.delete("flaky", &Default::default()).await.expect("delete");
    let deleted_at = Instant::now();
    failing_is(0.0, "a deleted object's count is dropped").await;
    eprintln!("count dropped {:?} after the delete", deleted_at.elapsed());
    let attempts_after_delete = scripted.attempts("flaky").len();
    // Backoff from 0.5 s doubling: a kept entry would have retried within 4 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        scripted.attempts("flaky").len(),
        attempts_after_delete,
        "no retry of a deleted object"
    );

    // Deleted while its failing reconcile runs: the failure ends after the delete and must not
    // leave an entry behind (its retry finds no object, so nothing would ever remove it).
    const TRANSIENT: &str = r#"capstan_reconcile_errors_by_reason_total{controller="scripted",reason="transient"}"#;
    let transient_before = manager.metric(TRANSIENT).await;
    maps.create(&PostParams::default(), &config_map("fails-slowly", "x"))
        .await
        .expect("create");
    eventually("the slow reconcile started", WAIT, || async {
        (!scripted.attempts("fails-slowly").is_empty()).then_some(())
    })
    .await;
    maps.delete("fails-slowly", &Default::default()).await.expect("delete");
    let started = scripted.attempts("fails-slowly")[0];
    eprintln!("deleted {:?} into the 3 s reconcile", started.elapsed());
    eventually("the slow reconcile failed", WAIT, || async {
        (manager.metric(TRANSIENT).await > transient_before).then_some(())
    })
    .await;
    // The error policy runs right after the failure is counted; a leaked entry would stay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        failing_objects().await,
        0.0,
        "a failure that ended after its object's delete leaves no count"
    );
    assert_eq!(scripted.attempts("fails-slowly").len(), 1, "and no retry");
    manager.stop().await.expect("stops");
}

#[tokio::test]
async fn a_controller_that_dies_stops_the_manager_with_an_error() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "rt-dies").await.expect("namespace");
    let manager = spawn_manager(client.clone(), &ns, |m| {
        m.add(|w: &mut capstan_runtime::Watches<'_, ConfigMap>| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
            // A trigger stream whose mapper panics: kube's controller task dies with it.
            w.watches(
                futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }),
                |()| -> Option<kube::runtime::reflector::ObjectRef<ConfigMap>> { panic!("a broken mapper") },
            );
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = tx.send(());
                // Keep the sender so the stream does not simply end.
                std::future::pending::<()>().await;
            });
            Scripted::default()
        })
    })
    .await
    .expect("manager");
    let started = Instant::now();
    let ended = manager
        .join(Duration::from_secs(60))
        .await
        .expect("the manager stops on its own");
    eprintln!("manager stopped {:?} after start: {ended:?}", started.elapsed());
    assert!(
        matches!(&ended, Err(Error::Stopped(what)) if what.contains("scripted")),
        "{ended:?}"
    );
}

#[tokio::test]
async fn every_request_to_an_apiserver_that_never_answers_times_out() {
    // Accepts connections and reads requests, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let stalled = client::with_timeouts(config).expect("client");
    let maps = Api::<ConfigMap>::namespaced(stalled, "default");
    let started = Instant::now();
    let result = maps.get_opt("anything").await;
    let waited = started.elapsed();
    eprintln!("a GET to a stalled apiserver failed after {waited:?}: {result:?}");
    assert!(result.is_err());
    assert!(
        waited >= client::REQUEST_TIMEOUT - Duration::from_millis(100),
        "it waited for the timeout, not failed early: {waited:?}"
    );
    assert!(waited < client::REQUEST_TIMEOUT + Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn metadata_subscriptions_receive_only_metadata_and_caches_drop_managed_fields() {
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
    use kube::core::PartialObjectMeta;
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "rt-metadata").await.expect("namespace");
    let mut informers = Informers::new(client.clone(), Some(ns.clone()), Readiness::new());
    let pods = informers
        .subscribe_with::<PartialObjectMeta<Pod>>(kube::runtime::watcher::Config::default())
        .store();
    let maps = informers
        .subscribe_with::<ConfigMap>(kube::runtime::watcher::Config::default())
        .store();
    let started = informers.start();
    for (_, driver) in started.drivers {
        tokio::spawn(driver);
    }
    started.synced.await;
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let stored = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
    assert!(
        stored.metadata.managed_fields.is_some(),
        "the server keeps managedFields"
    );
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &config_map("m", "x"))
        .await
        .expect("create ConfigMap");
    let cached = eventually("the Pod is cached", WAIT, || async { pods.state().into_iter().next() }).await;
    // The apiserver answers a metadata request with PartialObjectMetadata; a full Pod would say "Pod".
    let kind = cached.types.as_ref().map(|t| t.kind.clone());
    eprintln!("cached Pod arrived as {kind:?}");
    assert_eq!(kind.as_deref(), Some("PartialObjectMetadata"));
    assert!(cached.metadata.managed_fields.is_none(), "managedFields are dropped");
    let map = eventually("the ConfigMap is cached", WAIT, || async {
        maps.state().into_iter().next()
    })
    .await;
    assert!(map.metadata.managed_fields.is_none(), "managedFields are dropped");
}

#[tokio::test]
async fn a_background_task_runs_while_leading_queues_reconciles_and_stops_with_the_manager() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "rt-task").await.expect("namespace");
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    maps.create(&PostParams::default(), &config_map("target", "x"))
        .await
        .expect("create");
    let scripted = Scripted::default();
    let reconciler = scripted.clone();
    let ticks = Arc::new(AtomicU32::new(0));
    let task_ticks = ticks.clone();
    let task_ns = ns.clone();
    let manager = spawn_manager(client.clone(), &ns, move |m| {
        m.add(move |w: &mut capstan_runtime::Watches<'_, ConfigMap>| {
            let trigger = w.trigger();
            w.background("ticker", move |task| {
                let (ticks, trigger, ns) = (task_ticks.clone(), trigger.clone(), task_ns.clone());
                async move {
                    loop {
                        task.leadership.check()?;
                        if ticks.fetch_add(1, Ordering::SeqCst) == 20 {
                            // Something outside Kubernetes changed: reconcile "target" again.
                            trigger.reconcile(&ns, "target");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), Error>(())
                }
            });
            reconciler
        })
    })
    .await
    .expect("manager");
    eventually(
        "the task queued a second reconcile of an unchanged object",
        WAIT,
        || async { (scripted.attempts("target").len() >= 2).then_some(()) },
    )
    .await;
    let running = ticks.load(Ordering::SeqCst);
    assert!(running > 20, "{running}");
    manager.stop().await.expect("stops");
    let at_stop = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        at_stop,
        "the task stopped with the manager"
    );
}

/// Events on the real apiserver: a repeat within six minutes is counted in the first Event's
/// series (the apiserver takes the merge patch), another reason is an Event of its own, and a note
/// over the apiserver's 1 KB limit is cut instead of refused.
#[tokio::test]
async fn repeated_events_count_in_one_series_and_long_notes_are_cut() {
    let cp = ControlPlane::shared();
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "rt-events").await.expect("namespace");
    let owner = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &config_map("owner", "v"))
        .await
        .expect("create");
    let regarding = owner.object_ref(&());
    let publisher = EventPublisher::new(admin.clone(), "test", None);
    let events = Api::<Event>::namespaced(admin.clone(), &ns);
    let with_reason = |reason: &'static str| {
        let events = events.clone();
        move || {
            let events = events.clone();
            async move {
                let list = events.list(&Default::default()).await.map_err(|e| e.to_string())?;
                list.items
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some(reason))
                    .ok_or_else(|| format!("no {reason} Event"))
            }
        }
    };

    publisher.warning(&regarding, "Refused", "Apply", "first".into());
    let first = eventually("the first Warning is written", WAIT, with_reason("Refused")).await;
    assert_eq!(first.series, None);
    assert_eq!(first.type_.as_deref(), Some("Warning"));
    assert_eq!(first.reporting_controller.as_deref(), Some("capstan-test"));
    assert_eq!(
        first.regarding.as_ref().and_then(|r| r.uid.as_deref()),
        owner.uid().as_deref()
    );
    for (note, count) in [("second", 2), ("third", 3)] {
        publisher.warning(&regarding, "Refused", "Apply", note.into());
        let counted = eventually(&format!("repeat {count} is counted in the series"), WAIT, || async {
            let event = events.get(&first.name_any()).await.map_err(|e| e.to_string())?;
            match event.series.as_ref().map(|s| s.count) {
                Some(seen) if seen == count => Ok(event),
                seen => Err(format!("series count {seen:?}")),
            }
        })
        .await;
        assert_eq!(counted.note.as_deref(), Some("first"), "a series keeps its first note");
    }

    publisher.normal(&regarding, "Scaled", "Scale", "é".repeat(3000));
    let long = eventually(
        "the Event with an over-long note is written",
        WAIT,
        with_reason("Scaled"),
    )
    .await;
    let note = long.note.unwrap_or_default();
    assert!(note.len() <= 1024 && note.ends_with(" …"), "{} bytes", note.len());

    let all = events.list(&Default::default()).await.expect("list").items;
    assert_eq!(all.len(), 2, "the repeats wrote no Events of their own: {all:#?}");
}
