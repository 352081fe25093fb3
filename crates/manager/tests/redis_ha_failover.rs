//! RedisHA failover end to end: the real `capstan-manager` binary, the local node running
//! Debian's `redis-server` and `redis-sentinel` with the configuration the operator renders, a
//! client writing through the `<name>-master` Service every 100 ms with `WAIT 1`, and beside it a
//! Sentinel-aware client (the master the Sentinels name, its FQDN resolved by the local node's DNS). One RedisHA
//! (3 Redis, 3 Sentinels, a password) goes through each fault in turn, then a password rotation; after each, the master
//! Service routes to the one master, `status.master` names it, the Sentinels agree, and every
//! acknowledged write is still there. Outages are printed; the bound asserted is generous (these
//! are shared 2-core machines) and the goals live in `cargo xtask bench`.
use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use capstan_redis_ha::{
    RedisHA,
    config::{Endpoint, REDIS_PORT, SENTINEL_PORT},
    members::REVISION_LABEL,
    observe::{Converged, Observer, pod_ip},
    redis_io::{
        Target, Timeouts, config_set, is_auth_refused, pause_writes, ping, sentinel_failover,
        sentinel_sees_priority_zero,
    },
    write_probe::{ProbeLog, Route, WriteProbe, count_existing},
};
use capstan_runtime::testing::eventually;
use capstan_testenv::{ControlPlane, local_node_available};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use tokio::time::Instant;

mod common;
use common::ManagerProcess;

const NAME: &str = "ha";
const PASSWORD: &str = "s3cret-for-the-failover-test";
const NEW_PASSWORD: &str = "rotated-s3cret-for-the-failover-test";
/// Each fault must converge within this (generous on a shared 2-core machine).
const CONVERGE: Duration = Duration::from_secs(240);
/// The write outage each fault may cause in this test; the goals (2 s / 10 s) are the bench's.
const OUTAGE_BOUND: Duration = Duration::from_secs(30);
/// How long the test's own planned failover pauses writes on the master: as the operator's, the
/// Sentinels' failover-timeout (20 s) and a margin, so writes never resume there before the switch.
const PLANNED_PAUSE: Duration = Duration::from_secs(30);
/// How long the master stays cut off (issue 13).
const CUT_FOR: Duration = Duration::from_secs(60);

struct Fixture {
    ns: String,
    /// The password in force (the test rotates it at the end).
    password: String,
    observer: Observer,
    rhas: Api<RedisHA>,
    pods: Api<Pod>,
    client: Client,
    node: &'static capstan_localnode::LocalNode,
}

/// The RedisHA tests of this file run one at a time: each runs real Redis Pods on the one local
/// node, and the outages they print are only meaningful on an otherwise quiet node.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Fixture {
    /// A namespace, the auth Secret and RedisHA `ha` of 3 Redis and 3 Sentinels with `extra_spec`
    /// merged into its spec; the manager is the caller's to start.
    async fn create(cp: &ControlPlane, prefix: &str, extra_spec: serde_json::Value) -> (Fixture, LogsOnPanic) {
        let client = cp.client().await;
        cp.apply_crds(&client, &capstan_manager::crds()).await.expect("CRDs");
        let ns = cp.namespace(&client, prefix).await.expect("namespace");
        let node = tokio::task::spawn_blocking(ControlPlane::shared_local_node)
            .await
            .expect("local node");
        let f = Fixture {
            rhas: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client.clone(), &ns),
            client: client.clone(),
            ns: ns.clone(),
            password: PASSWORD.to_owned(),
            observer: Observer::new(client.clone(), &ns, NAME, Some(PASSWORD), "cluster.local"),
            node,
        };
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ha-auth"},
            "stringData": {"password": PASSWORD}
        }))
        .expect("secret");
        Api::<Secret>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create Secret");
        let mut spec =
            serde_json::json!({"replicas": 3, "sentinel": {"replicas": 3}, "auth": {"secretName": "ha-auth"}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            spec.extend(extra.clone());
        }
        let rha: RedisHA = serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "RedisHA", "metadata": {"name": NAME},
            "spec": spec
        }))
        .expect("redis-ha");
        f.rhas
            .create(&PostParams::default(), &rha)
            .await
            .expect("create RedisHA");
        (f, LogsOnPanic { ns, node })
    }

    async fn redis_pods(&self) -> Vec<Pod> {
        self.observer.redis_pods().await
    }

    async fn sentinel_ips(&self) -> Vec<String> {
        self.observer.sentinel_ips().await
    }

    fn fqdn(&self, pod: &str) -> String {
        self.observer.fqdn(pod)
    }

    async fn master_service(&self) -> SocketAddr {
        self.observer.master_service().await.expect("the master Service")
    }

    /// The password in force changes (the test rotates it at the end).
    fn use_password(&mut self, password: &str) {
        self.password = password.to_owned();
        self.observer = Observer::new(self.client.clone(), &self.ns, NAME, Some(password), "cluster.local");
    }

    async fn check_converged(&self, replicas: usize) -> Result<Converged, String> {
        self.observer.converged(replicas).await
    }

    async fn converged(&self, what: &str, replicas: usize) -> Converged {
        let started = Instant::now();
        loop {
            let missing = match self.check_converged(replicas).await {
                Ok(converged) => {
                    eprintln!("{what}: converged after {:?}: {converged:?}", started.elapsed());
                    return converged;
                }
                Err(missing) => missing,
            };
            assert!(
                started.elapsed() < CONVERGE,
                "{what}: not converged within {CONVERGE:?}: {missing}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until `status.master` names a Pod other than `old` and the master Service routes to
    /// it alone; returns when that was first seen.
    async fn new_master_routed(&self, old: &str) -> Instant {
        eventually("a new master behind the master Service", CONVERGE, || async {
            self.observer.new_master_routed(old).await.map(|_| Instant::now())
        })
        .await
    }

    /// Has the Sentinels fail over to a Pod with an ordinal of at least `ordinal` (the others get
    /// `replica-priority 0` meanwhile, restored afterwards), as a user's failover could. The
    /// operator owns replica priorities (it restores any it did not set once the set is settled),
    /// so it is stopped until Sentinel has accepted, and `start_operator` runs it again then.
    async fn move_master_to_ordinal_at_least(
        &self,
        ordinal: u32,
        before: &Converged,
        start_operator: impl FnOnce(),
    ) -> Converged {
        let pods = self.redis_pods().await;
        let below: Vec<Endpoint> = pods
            .iter()
            .filter(|p| {
                p.name_any()
                    .trim_start_matches(&format!("{NAME}-"))
                    .parse::<u32>()
                    .is_ok_and(|o| o < ordinal)
            })
            .filter_map(|p| Some(Endpoint::new(pod_ip(p)?, REDIS_PORT)))
            .collect();
        let set_priority = |value: &'static str| {
            let below = below.clone();
            async move {
                for endpoint in &below {
                    config_set(
                        Target::new(endpoint, Some(PASSWORD), Timeouts::default()),
                        "replica-priority",
                        value,
                    )
                    .await
                    .expect("CONFIG SET replica-priority");
                }
            }
        };
        // Sentinel only fails over to replicas it has seen (else it aborts: no good replica), and
        // not at all in TILT mode (it would start only once the writes' pause below ran out, and
        // the old master would take writes the promoted replica never sees): FailoverCapable.
        eventually("the RedisHA is FailoverCapable", CONVERGE, || async {
            self.check_converged(before.redis_pods).await.ok()
        })
        .await;
        set_priority("0").await;
        let sentinel = Endpoint::new(
            self.sentinel_ips().await.first().cloned().expect("a Sentinel"),
            SENTINEL_PORT,
        );
        let low: Vec<String> = pods
            .iter()
            .filter(|p| p.name_any() != before.master && below.iter().any(|e| Some(&e.host) == pod_ip(p).as_ref()))
            .map(|p| self.fqdn(&p.name_any()))
            .collect();
        let low: Vec<&str> = low.iter().map(String::as_str).collect();
        assert!(
            sentinel_sees_priority_zero(
                Target::sentinel(&sentinel, Some(PASSWORD), Timeouts::default()),
                NAME,
                &low,
                Duration::from_secs(30)
            )
            .await,
            "the Sentinel sees replica-priority 0"
        );
        // As the operator's own planned failover does: writes wait on the old master, so none is
        // acknowledged there after Sentinel promoted another Pod.
        let master_ip = pods
            .iter()
            .find(|p| p.name_any() == before.master)
            .and_then(pod_ip)
            .expect("the master's IP");
        let master = Endpoint::new(master_ip, REDIS_PORT);
        pause_writes(Target::new(&master, Some(PASSWORD), Timeouts::default()), PLANNED_PAUSE)
            .await
            .expect("CLIENT PAUSE");
        // Sentinel refuses (NOGOODSLAVE) until its INFO of the replicas is fresh: ask again.
        let asked = Instant::now();
        while let Err(error) =
            sentinel_failover(Target::sentinel(&sentinel, Some(PASSWORD), Timeouts::default()), NAME).await
        {
            assert!(
                asked.elapsed() < Duration::from_secs(30),
                "SENTINEL FAILOVER refused for 30 s: {error}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        start_operator();
        let moved = eventually("the master moved to a high ordinal", CONVERGE, || async {
            let converged = self.check_converged(before.redis_pods).await.ok()?;
            let at: u32 = converged.master.trim_start_matches(&format!("{NAME}-")).parse().ok()?;
            (at >= ordinal && converged.epoch > before.epoch).then_some(converged)
        })
        .await;
        set_priority("100").await;
        eprintln!("moved the master to {}", moved.master);
        moved
    }

    /// Where each Sentinel's log ends now (see [`Self::print_failover_events`]).
    fn sentinel_log_mark(&self) -> Vec<(std::path::PathBuf, usize)> {
        (0..3)
            .filter_map(|o| {
                self.node
                    .container_log(&self.ns, &format!("{NAME}-sentinel-{o}"), "sentinel")
            })
            .map(|path| {
                let len = std::fs::read_to_string(&path).map(|t| t.len()).unwrap_or(0);
                (path, len)
            })
            .collect()
    }

    /// The failover lines each Sentinel logged since `mark`: what a measured outage came from.
    fn print_failover_events(&self, what: &str, mark: &[(std::path::PathBuf, usize)]) {
        const EVENTS: [&str; 6] = [
            "+try-failover",
            "+elected-leader",
            "+promoted-slave",
            "+switch-master",
            "-failover-abort",
            "+odown",
        ];
        for (path, from) in mark {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.get(*from..).unwrap_or_default().lines() {
                if EVENTS.iter().any(|e| line.contains(e)) {
                    eprintln!(
                        "  {what} | {}: {line}",
                        path.parent()
                            .and_then(|p| p.file_name())
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default()
                    );
                }
            }
        }
    }

    /// Failovers Sentinel completed since `mark`: the most `+switch-master` lines any one Sentinel
    /// logged (every Sentinel logs each switch once; an attempt Sentinel aborted logs none, although
    /// it raises `config-epoch`). A Sentinel Pod recreated since has a new log, read whole.
    fn failovers_since(&self, mark: &[(std::path::PathBuf, usize)]) -> usize {
        mark.iter()
            .map(|(path, from)| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let since = text.get(*from..).unwrap_or(&text);
                since.lines().filter(|l| l.contains("+switch-master")).count()
            })
            .max()
            .unwrap_or(0)
    }

    async fn patch_spec(&self, spec: serde_json::Value) {
        self.rhas
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .unwrap_or_else(|e| panic!("patching the RedisHA's spec: {e}"));
    }

    /// Every write the probe saw acknowledged is on the master.
    async fn assert_no_acknowledged_write_lost(&self, probe: &ProbeLog, master: SocketAddr, what: &str) {
        let found = count_existing(master, Some(&self.password), &probe.acknowledged)
            .await
            .expect("reading the keys back through the master Service");
        assert_eq!(
            found,
            probe.acknowledged.len(),
            "{what}: acknowledged writes lost ({} of {} found)",
            found,
            probe.acknowledged.len()
        );
        eprintln!("{what}: all {found} acknowledged writes present");
    }
}

/// On a failed assertion, the tail of every Redis and Sentinel log (the local node keeps them
/// only while it runs), so a failure says what Redis and Sentinel did.
struct LogsOnPanic {
    ns: String,
    node: &'static capstan_localnode::LocalNode,
}

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let containers = (0..5)
            .map(|o| (format!("{NAME}-{o}"), "redis"))
            .chain((0..3).map(|o| (format!("{NAME}-sentinel-{o}"), "sentinel")));
        for (pod, container) in containers {
            let Some(path) = self.node.container_log(&self.ns, &pod, container) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("----- {pod}/{container} (last 60 lines of {}) -----", path.display());
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Prints and bounds the outage the probe saw between `fault` and `settled`, and checks writes
/// are acknowledged again afterwards.
async fn report_outage(probe: &WriteProbe, what: &str, fault: Instant, settled: Instant) -> Duration {
    eventually("acknowledged writes again", Duration::from_secs(60), || async {
        (probe.snapshot().acknowledged_since(settled) >= 3).then_some(())
    })
    .await;
    let log = probe.snapshot();
    let outage = log.longest_outage(fault, settled.max(fault));
    eprintln!(
        "{what}: write outage {outage:?} (client writing through the master Service every 100 ms; {} failed writes so far, last error {:?})",
        log.failures, log.last_error
    );
    assert!(outage <= OUTAGE_BOUND, "{what}: outage {outage:?} > {OUTAGE_BOUND:?}");
    outage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_ha_fails_over_on_each_fault_and_keeps_every_acknowledged_write() {
    if !local_node_available("a_redis_ha_fails_over_on_each_fault_and_keeps_every_acknowledged_write") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cp = ControlPlane::shared();
    let (mut f, _logs) = Fixture::create(cp, "rha-failover", serde_json::json!({})).await;
    let (client, ns) = (f.client.clone(), f.ns.clone());
    let manager_args = ["--namespace", ns.as_str(), "--controllers", "redis-ha"];
    let mut manager = Some(ManagerProcess::start(cp.kubeconfig_path(), &manager_args));

    let mut state = f.converged("created", 3).await;
    assert_eq!(state.master, format!("{NAME}-0"), "ordinal 0 bootstraps as master");
    let master_service = f.master_service().await;
    let probe = WriteProbe::start(
        master_service,
        Some(PASSWORD.to_owned()),
        "probe",
        Duration::from_millis(100),
        20_000,
    );
    // Beside it, a Sentinel-aware client: it asks the Sentinels for the master, resolves the
    // FQDN they announce through the local node's DNS (as a Pod does) and writes there.
    let mut sentinels: Vec<SocketAddr> = f
        .sentinel_ips()
        .await
        .iter()
        .filter_map(|ip| Some(SocketAddr::new(ip.parse().ok()?, SENTINEL_PORT)))
        .collect();
    sentinels.sort();
    let aware = WriteProbe::start_on(
        Route::Sentinels {
            sentinels,
            master_set: NAME.to_owned(),
            dns: f.node.dns_server(),
        },
        Some(PASSWORD.to_owned()),
        "sentinel-aware",
        Duration::from_millis(100),
        20_000,
    );
    eventually(
        "the first acknowledged writes of both clients",
        Duration::from_secs(60),
        || async {
            (probe.snapshot().acknowledged.len() >= 10 && aware.snapshot().acknowledged.len() >= 10).then_some(())
        },
    )
    .await;
    let mut outages = Vec::new();

    // 1. The master Pod deleted: its preStop hands over before the process stops.
    let old = state.master.clone();
    let mark = f.sentinel_log_mark();
    let fault = Instant::now();
    f.pods
        .delete(&old, &DeleteParams::default())
        .await
        .expect("delete the master Pod");
    let routed = f.new_master_routed(&old).await;
    outages.push((
        "master Pod deleted",
        report_outage(&probe, "master Pod deleted", fault, routed).await,
    ));
    outages.push((
        "master Pod deleted (Sentinel-aware client)",
        report_outage(&aware, "master Pod deleted (Sentinel-aware client)", fault, routed).await,
    ));
    f.print_failover_events("master Pod deleted", &mark);
    let after = f.converged("master Pod deleted", 3).await;
    assert_ne!(after.master, old);
    assert_eq!(f.failovers_since(&mark), 1, "exactly one failover");
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "master Pod deleted")
        .await;
    state = after;

    // 2. The master's redis-server killed with SIGKILL; the Pod stays and its container restarts.
    let old = state.master.clone();
    let mark = f.sentinel_log_mark();
    let fault = Instant::now();
    f.node
        .kill_container(&ns, &old, "redis", 9)
        .await
        .expect("SIGKILL the master's redis-server");
    let routed = f.new_master_routed(&old).await;
    outages.push((
        "master killed",
        report_outage(&probe, "master killed", fault, routed).await,
    ));
    outages.push((
        "master killed (Sentinel-aware client)",
        report_outage(&aware, "master killed (Sentinel-aware client)", fault, routed).await,
    ));
    f.print_failover_events("master killed", &mark);
    let after = f.converged("master killed", 3).await;
    assert_ne!(after.master, old, "the restarted Pod never serves as master again");
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "master killed")
        .await;
    state = after;

    // 3. The master cut off for 60 s: the others fail over, the isolated master stops taking
    //    writes (min-replicas-to-write), and rejoins as a replica once the network heals.
    let old = state.master.clone();
    let mark = f.sentinel_log_mark();
    let fault = Instant::now();
    f.node.cut_network(&ns, &old).await.expect("cut the master off");
    let routed = f.new_master_routed(&old).await;
    outages.push((
        "master cut off",
        report_outage(&probe, "master cut off", fault, routed).await,
    ));
    outages.push((
        "master cut off (Sentinel-aware client)",
        report_outage(&aware, "master cut off (Sentinel-aware client)", fault, routed).await,
    ));
    f.print_failover_events("master cut off", &mark);
    let refused = eventually(
        "the isolated master refuses writes",
        Duration::from_secs(45),
        || async {
            let out = f
                .node
                .exec(
                    &ns,
                    &old,
                    "redis",
                    &["redis-cli", "--no-auth-warning", "-a", PASSWORD, "SET", "isolated", "x"],
                )
                .await
                .ok()?;
            let reply = String::from_utf8_lossy(&out.stdout).into_owned();
            reply.contains("NOREPLICAS").then_some(reply)
        },
    )
    .await;
    eprintln!("the isolated master answers: {}", refused.trim());
    tokio::time::sleep(CUT_FOR.saturating_sub(fault.elapsed())).await;
    f.node.restore_network(&ns, &old).await.expect("restore the network");
    let after = f.converged("network restored", 3).await;
    assert_ne!(after.master, old, "the isolated master rejoined as a replica");
    let isolated = count_existing(master_service, Some(PASSWORD), &["isolated".to_owned()])
        .await
        .expect("read");
    assert_eq!(isolated, 0, "a write refused by the isolated master never appears");
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "master cut off")
        .await;
    state = after;

    // 4. The operator killed during a failover and restarted: it converges without a second one.
    let old = state.master.clone();
    let mark = f.sentinel_log_mark();
    let fault = Instant::now();
    f.pods
        .delete(&old, &DeleteParams::default())
        .await
        .expect("delete the master Pod");
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(running) = manager.take() {
        running.kill();
    }
    eprintln!(
        "operator SIGKILLed {:?} after the master Pod was deleted",
        fault.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    manager = Some(ManagerProcess::start(cp.kubeconfig_path(), &manager_args));
    let routed = f.new_master_routed(&old).await;
    outages.push((
        "master deleted, operator killed",
        report_outage(&probe, "master deleted, operator killed", fault, routed).await,
    ));
    outages.push((
        "master deleted, operator killed (Sentinel-aware client)",
        report_outage(
            &aware,
            "master deleted, operator killed (Sentinel-aware client)",
            fault,
            routed,
        )
        .await,
    ));
    let after = f.converged("operator restarted", 3).await;
    assert_ne!(after.master, old);
    f.print_failover_events("operator killed", &mark);
    assert_eq!(f.failovers_since(&mark), 1, "one failover, no second needless one");
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "operator killed")
        .await;
    // The Sentinel Pods keep their IPs until the rotation below rolls them: the Sentinel-aware
    // client's record ends here.
    let aware_log = aware.stop().await;
    f.assert_no_acknowledged_write_lost(
        &aware_log,
        master_service,
        "Sentinel-aware client through the four faults",
    )
    .await;

    // 5. Scale 3 → 5 → 3 while the client writes: the master is never removed.
    f.patch_spec(serde_json::json!({"replicas": 5})).await;
    let up = f.converged("scaled to 5", 5).await;
    assert_eq!(up.redis_pods, 5);
    // Make one of the Pods the scale-down removes the master, so the operator must move it first.
    eventually("the RedisHA is FailoverCapable", CONVERGE, || async {
        f.check_converged(up.redis_pods).await.ok()
    })
    .await;
    if let Some(running) = manager.take() {
        running.stop();
    }
    let moved = f
        .move_master_to_ordinal_at_least(3, &up, || {
            manager = Some(ManagerProcess::start(cp.kubeconfig_path(), &manager_args));
        })
        .await;
    assert!(moved.redis_pods == 5);
    let mark = f.sentinel_log_mark();
    f.patch_spec(serde_json::json!({"replicas": 3})).await;
    let down = f.converged("scaled back to 3", 3).await;
    let ordinal: u32 = down
        .master
        .trim_start_matches(&format!("{NAME}-"))
        .parse()
        .expect("ordinal");
    assert!(ordinal < 3, "the master is among the Pods kept: {}", down.master);
    f.print_failover_events("scale-down", &mark);
    assert_eq!(
        f.failovers_since(&mark),
        1,
        "one planned failover moved the master before the scale-down"
    );
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "scale 3 → 5 → 3")
        .await;
    assert!(down.redis_pods == 3);

    // 5b. Down to one Redis, a spec change there, and back to three, without storage: the count
    //     is no part of the Pod template (the scale rolls nothing), and the single Redis is
    //     rolled through a surge Pod it hands over to and gets back from, never deleted in place.
    f.patch_spec(serde_json::json!({"replicas": 1})).await;
    let one = f.converged("scaled to 1", 1).await;
    assert_eq!(one.master, format!("{NAME}-0"));
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "scale 3 → 1")
        .await;
    let single: BTreeSet<String> = f.redis_pods().await.iter().filter_map(|p| p.uid()).collect();
    f.patch_spec(serde_json::json!({"config": {"maxmemory": "80mb"}})).await;
    let surged = std::sync::atomic::AtomicBool::new(false);
    eventually(
        "the single Redis rolled through a surge Pod and got it back",
        CONVERGE * 2,
        || async {
            let pods = f.redis_pods().await;
            if pods.iter().any(|p| p.name_any() == format!("{NAME}-1")) {
                surged.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let rolled = matches!(&pods[..], [only] if only.name_any() == format!("{NAME}-0")
            && only.uid().is_some_and(|uid| !single.contains(&uid)));
            let back = f
                .check_converged(1)
                .await
                .ok()
                .filter(|c| c.master == format!("{NAME}-0"));
            (rolled && back.is_some()).then_some(())
        },
    )
    .await;
    assert!(
        surged.load(std::sync::atomic::Ordering::SeqCst),
        "a second Pod took over while the first was rolled"
    );
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "a roll at one Redis")
        .await;
    f.patch_spec(serde_json::json!({"replicas": 3})).await;
    f.converged("back to 3", 3).await;

    // 6. A spec change that rolls every Pod (OnDelete: the operator rolls replicas, fails over
    //    once, then rolls the old master).
    let before_roll: BTreeSet<String> = f.redis_pods().await.iter().filter_map(|p| p.uid()).collect();
    let config_maps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns);
    let redis_configs = || async {
        config_maps
            .list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|c| c.name_any())
                    .filter(|n| n.starts_with(&format!("{NAME}-config-")))
                    .collect::<BTreeSet<String>>()
            })
            .unwrap_or_default()
    };
    let old_config = redis_configs().await;
    assert_eq!(
        old_config.len(),
        1,
        "one Redis configuration before the roll: {old_config:?}"
    );
    let mark = f.sentinel_log_mark();
    f.patch_spec(serde_json::json!({"config": {"maxmemory": "96mb"}})).await;
    // Each revision is its own immutable ConfigMap: the new one appears beside the old, which
    // Pods not rolled yet still mount (a restart of one of them loads the old file, not the new).
    let both = eventually("the new configuration beside the old", CONVERGE, || async {
        let names = redis_configs().await;
        (names.len() == 2 && names.is_superset(&old_config)).then_some(names)
    })
    .await;
    eprintln!("during the roll: {both:?}");
    let sets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    eventually("every Redis Pod runs the new template", CONVERGE * 2, || async {
        let set = sets.get(NAME).await.ok()?;
        let status = set.status?;
        (status.observed_generation >= set.metadata.generation).then_some(())?;
        let revision = status.update_revision?;
        let pods = f.redis_pods().await;
        (pods.len() == 3
            && pods.iter().all(|p| {
                p.labels().get(REVISION_LABEL) == Some(&revision)
                    && p.uid().is_some_and(|uid| !before_roll.contains(&uid))
            }))
        .then_some(())
    })
    .await;
    let rolled = f.converged("rolled", 3).await;
    assert_eq!(rolled.redis_pods, 3);
    eventually(
        "the old configuration pruned once every Pod rolled",
        CONVERGE,
        || async {
            let names = redis_configs().await;
            (names.len() == 1 && names.is_disjoint(&old_config)).then_some(())
        },
    )
    .await;
    f.print_failover_events("roll", &mark);
    assert_eq!(
        f.failovers_since(&mark),
        1,
        "the roll fails over exactly once (planned)"
    );
    f.assert_no_acknowledged_write_lost(&probe.snapshot(), master_service, "roll")
        .await;

    // 7. Password rotation: the Secret changes; every Pod accepts the new password at once, the
    //    Sentinels use it, and the Pods roll (replicas, one planned failover, the old master).
    let log = probe.stop().await;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "ha-auth",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"password": NEW_PASSWORD}})),
        )
        .await
        .expect("change the password");
    eventually("the master accepts the new password", CONVERGE, || async {
        let endpoint = Endpoint::new(master_service.ip().to_string(), REDIS_PORT);
        ping(Target::new(&endpoint, Some(NEW_PASSWORD), Timeouts::default()))
            .await
            .ok()
    })
    .await;
    f.use_password(NEW_PASSWORD);
    let probe = WriteProbe::start(
        master_service,
        Some(NEW_PASSWORD.to_owned()),
        "rotated",
        Duration::from_millis(100),
        20_000,
    );
    let before_rotation: BTreeSet<String> = f.redis_pods().await.iter().filter_map(|p| p.uid()).collect();
    let mark = f.sentinel_log_mark();
    eventually(
        "every Redis Pod restarted with the new password",
        CONVERGE * 2,
        || async {
            let pods = f.redis_pods().await;
            (pods.len() == 3
                && pods
                    .iter()
                    .all(|p| p.uid().is_some_and(|uid| !before_rotation.contains(&uid))))
            .then_some(())
        },
    )
    .await;
    f.converged("password rotated", 3).await;
    f.print_failover_events("password rotation", &mark);
    // The Sentinel Pods roll too (their template carries the password's hash): a recreated one's
    // log starts after the switch, so this bounds the count rather than pins it.
    assert!(
        f.failovers_since(&mark) <= 1,
        "the rotation's roll fails over at most once (planned)"
    );
    let endpoint = Endpoint::new(master_service.ip().to_string(), REDIS_PORT);
    let old_refused = ping(Target::new(&endpoint, Some(PASSWORD), Timeouts::default())).await;
    assert!(
        old_refused.as_ref().is_err_and(is_auth_refused),
        "the old password no longer works: {old_refused:?}"
    );
    f.assert_no_acknowledged_write_lost(&log, master_service, "before the rotation")
        .await;
    let rotated_log = probe.stop().await;
    f.assert_no_acknowledged_write_lost(&rotated_log, master_service, "password rotation")
        .await;
    let log = ProbeLog {
        acknowledged: [log.acknowledged, rotated_log.acknowledged].concat(),
        failures: log.failures + rotated_log.failures,
        ..ProbeLog::default()
    };

    eprintln!("\nRedisHA failover outages (goals: 2 s for a deleted Pod, 10 s for a kill or cut):");
    for (what, outage) in &outages {
        eprintln!("  {what:<34} {outage:?}");
    }
    eprintln!(
        "  {} writes acknowledged, {} failed or unacknowledged in all",
        log.acknowledged.len(),
        log.failures
    );
    if let Some(running) = manager.take() {
        running.stop();
    }
}

/// A full restart with storage (every Pod deleted at once, grace 0, as a node reboot or an
/// eviction of all): the Sentinels come back with no state and must resume from the most advanced
/// data set, not blindly from ordinal 0. The master is moved to ordinal 2 and ordinal 0 is frozen
/// (SIGSTOP) while a `WAIT 1` writer writes, so ordinal 0 alone misses those writes: seeding it
/// as master would lose them all. The operator records the last verified master for the
/// Sentinels (`<name>-bootstrap`), so ordinal 2 is master again and every acknowledged key is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restart_with_storage_resumes_from_the_last_master_and_keeps_every_acknowledged_write() {
    if !local_node_available(
        "a_full_restart_with_storage_resumes_from_the_last_master_and_keeps_every_acknowledged_write",
    ) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cp = ControlPlane::shared();
    let (f, _logs) = Fixture::create(cp, "rha-restart", serde_json::json!({"storage": {"size": "64Mi"}})).await;
    let manager_args = ["--namespace", f.ns.as_str(), "--controllers", "redis-ha"];
    let mut manager = Some(ManagerProcess::start(cp.kubeconfig_path(), &manager_args));
    let created = f.converged("created with storage", 3).await;
    if let Some(running) = manager.take() {
        running.stop();
    }
    let moved = f
        .move_master_to_ordinal_at_least(2, &created, || {
            manager = Some(ManagerProcess::start(cp.kubeconfig_path(), &manager_args));
        })
        .await;
    assert_eq!(moved.master, format!("{NAME}-2"));
    let bootstraps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(f.client.clone(), &f.ns);
    eventually(
        "the operator recorded the master for the Sentinels",
        CONVERGE,
        || async {
            let record = bootstraps.get_opt(&format!("{NAME}-bootstrap")).await.ok()??;
            (record.data?.get("master")? == &moved.master).then_some(())
        },
    )
    .await;

    let lagging = format!("{NAME}-0");
    f.node
        .kill_container(&f.ns, &lagging, "redis", 19)
        .await
        .expect("SIGSTOP ordinal 0's redis-server");
    let master_service = f.master_service().await;
    let probe = WriteProbe::start(
        master_service,
        Some(PASSWORD.to_owned()),
        "restart",
        Duration::from_millis(50),
        2_000,
    );
    eventually(
        "writes acknowledged while ordinal 0 is frozen",
        Duration::from_secs(60),
        || async { (probe.snapshot().acknowledged.len() >= 40).then_some(()) },
    )
    .await;
    let log = probe.stop().await;

    let fault = Instant::now();
    let all = f.observer.redis_pods().await;
    let sentinels = Api::<Pod>::list(
        &f.pods,
        &kube::api::ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={NAME},app.kubernetes.io/component=sentinel"
        )),
    )
    .await
    .expect("Sentinel Pods")
    .items;
    for pod in all.iter().chain(&sentinels) {
        f.pods
            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await
            .expect("delete with grace 0");
    }
    eprintln!(
        "deleted {} Redis and {} Sentinel Pods at once",
        all.len(),
        sentinels.len()
    );
    let after = f.converged("after the full restart", 3).await;
    eprintln!(
        "full restart: converged on {} after {:?}",
        after.master,
        fault.elapsed()
    );
    assert_eq!(
        after.master, moved.master,
        "the Sentinels resumed from the last verified master, not from ordinal 0"
    );
    f.assert_no_acknowledged_write_lost(&log, f.master_service().await, "full restart with storage")
        .await;
    if let Some(running) = manager.take() {
        running.stop();
    }
}

/// The uid the partial-visibility test runs the manager under, so its packets alone are dropped.
const CUT_OFF_UID: u32 = 47_110;
/// How long the operator stays cut off (issue 24: 45 s, well over down-after and several passes).
const PARTIAL_CUT_FOR: Duration = Duration::from_secs(45);
const NFT_TABLE: &str = "capstan_operator_cut_off";

/// Drops the operator's packets to the given Pod IPs (an nft output chain matching its uid), and
/// removes the rule again on drop, also when the test panics.
struct OperatorCutOff;

impl OperatorCutOff {
    fn to(ips: &[String]) -> OperatorCutOff {
        let rules = format!(
            "table inet {NFT_TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    meta skuid {CUT_OFF_UID} ip daddr {{ {} }} drop\n  }}\n}}\n",
            ips.join(", ")
        );
        let mut nft = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft (Debian's nftables)");
        std::io::Write::write_all(nft.stdin.as_mut().expect("stdin"), rules.as_bytes()).expect("write rules");
        drop(nft.stdin.take());
        assert!(nft.wait().expect("nft").success(), "nft refused:\n{rules}");
        OperatorCutOff
    }
}

impl Drop for OperatorCutOff {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", NFT_TABLE])
            .status();
    }
}

/// The operator alone (not the Pods, not the client) loses the master and two of the three
/// Sentinels for 45 s while a `WAIT 1` client writes through `<name>-master`: the replicas still
/// replicate from the master and the third Sentinel still sees it, so the operator must not
/// promote anyone (a second master's writes are lost when the first is seen again). It waits with
/// `Degraded`/`MasterNotVisible`, and afterwards the same master serves, no failover happened, and
/// no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cut_off_from_the_master_and_two_sentinels_promotes_nobody() {
    if !local_node_available("an_operator_cut_off_from_the_master_and_two_sentinels_promotes_nobody") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cp = ControlPlane::shared();
    let (f, _logs) = Fixture::create(cp, "rha-partial", serde_json::json!({})).await;
    let manager_args = ["--namespace", f.ns.as_str(), "--controllers", "redis-ha"];
    let manager = ManagerProcess::start_as(cp.kubeconfig_path(), &manager_args, Some(CUT_OFF_UID));
    let before = f.converged("created", 3).await;
    let master_service = f.master_service().await;
    let probe = WriteProbe::start(
        master_service,
        Some(PASSWORD.to_owned()),
        "partial",
        Duration::from_millis(100),
        5_000,
    );
    eventually("acknowledged writes", Duration::from_secs(60), || async {
        (probe.snapshot().acknowledged.len() >= 10).then_some(())
    })
    .await;

    let master_ip = f
        .redis_pods()
        .await
        .iter()
        .find(|p| p.name_any() == before.master)
        .and_then(pod_ip)
        .expect("the master's IP");
    let mut sentinel_ips = f.sentinel_ips().await;
    sentinel_ips.sort();
    let mut cut = vec![master_ip];
    cut.extend(sentinel_ips.iter().take(2).cloned());
    let cut_off = OperatorCutOff::to(&cut);
    let started = Instant::now();
    eprintln!("operator (uid {CUT_OFF_UID}) cut off from {cut:?} for {PARTIAL_CUT_FOR:?}");
    let mut saw_not_visible = None;
    let mut seen_serving = 0;
    while started.elapsed() < PARTIAL_CUT_FOR {
        let masters: Vec<String> = futures::future::join_all(f.redis_pods().await.iter().map(|pod| async move {
            let ip = pod_ip(pod)?;
            let endpoint = Endpoint::new(ip, REDIS_PORT);
            let replication = capstan_redis_ha::redis_io::info_replication(Target::new(
                &endpoint,
                Some(PASSWORD),
                Timeouts::default(),
            ))
            .await
            .ok()?;
            (replication.role == capstan_redis_ha::healer::Role::Master).then(|| pod.name_any())
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
        assert!(
            masters.iter().all(|m| *m == before.master),
            "a second master during the cut: {masters:?}"
        );
        seen_serving += usize::from(masters.contains(&before.master));
        if saw_not_visible.is_none() {
            let status = f.rhas.get(NAME).await.ok().and_then(|r| r.status).unwrap_or_default();
            saw_not_visible = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Degraded" && c.reason == "MasterNotVisible")
                .map(|c| c.message.clone());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(cut_off);
    assert!(
        seen_serving >= 20,
        "the master answered as master {seen_serving} times in 45 s"
    );
    let message = saw_not_visible.expect("the operator said it waits: Degraded/MasterNotVisible");
    eprintln!("while cut off: {message}");
    let after = f.converged("network back for the operator", 3).await;
    assert_eq!(after.master, before.master, "nobody was promoted");
    assert_eq!(after.epoch, before.epoch, "and the Sentinels did not fail over either");
    let log = probe.stop().await;
    f.assert_no_acknowledged_write_lost(&log, master_service, "operator cut off")
        .await;
    manager.stop();
}
