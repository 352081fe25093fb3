//! The RedisHA fault matrix, end to end: the real `capstan-manager` binary (under its own uid, so
//! a row can cut the operator alone off the network), the local node running Debian's
//! `redis-server` and `redis-sentinel` with the configuration the operator renders, and one
//! RedisHA (3 Redis, 3 Sentinels, a password, storage) taken through every fault and day-2
//! operation of [`Fault::MATRIX`] in turn. Two real clients write through all of it every 100 ms
//! with `WAIT 1`: one through the `<name>-master` Service, one Sentinel-aware (it asks the
//! Sentinels for the master and resolves the FQDN they announce through the local node's DNS).
//! After each row the RedisHA has converged (one master, named by `status.master`, the Sentinels
//! agreeing, the master Service routing to it alone), and the matrix records per client the writes
//! acknowledged during the row, the acknowledged writes missing (must be none) and the longest
//! outage the client saw. The bounds asserted are generous (shared 2-core machines); the goals
//! (2 s for a deleted Pod, 10 s for a kill or cut) live in `cargo xtask bench`.
use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use capstan_redis_ha::{
    RedisHA,
    config::{Endpoint, REDIS_PORT, SENTINEL_PORT},
    testing::{
        Converged, ConvergenceWatch, ProbeLog, Route, WriteProbe, count_existing,
        healer::{REVISION_LABEL, Role, Step, rollout_step},
        pod_ip,
        redis_io::{
            Target, Timeouts, config_set, info_replication, is_auth_refused, pause_writes, ping, sentinel_failover,
            sentinel_master, sentinel_monitor, sentinel_sees_priority_zero, sentinel_set,
        },
    },
};
use capstan_testenv::{ControlPlane, eventually, local_node_available};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Event, Pod, Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use tokio::time::Instant;

mod common;
use common::ManagerProcess;

const NAME: &str = "ha";
const PASSWORD: &str = "s3cret-for-the-failover-test";
const NEW_PASSWORD: &str = "rotated-s3cret-for-the-failover-test";
/// Each step must converge within this (generous on a shared 2-core machine).
const CONVERGE: Duration = Duration::from_secs(240);
/// The outage a client may see in a row; the goals (2 s / 10 s) are the bench's.
const OUTAGE_BOUND: Duration = Duration::from_secs(30);
/// Every Pod gone at once is no failover: the outage is the time every Pod takes to come back.
const FULL_RESTART_OUTAGE_BOUND: Duration = Duration::from_secs(120);
/// How long the test's own planned failover pauses writes on the master: as the operator's, the
/// Sentinels' failover-timeout (20 s) and a margin, so writes never resume there before the switch.
const PLANNED_PAUSE: Duration = Duration::from_secs(30);
/// How long the master stays frozen: well over down-after, so the Sentinels fail over, and the
/// stale master then wakes up believing it is still master.
const MASTER_FROZEN_FOR: Duration = Duration::from_secs(12);
/// How long a replica stays frozen during a roll's planned failover: at least over the
/// operator's catch-up window, and until the failover attempt met it, within the second bound.
const REPLICA_FROZEN_FOR: Duration = Duration::from_secs(3);
const REPLICA_FROZEN_AT_MOST: Duration = Duration::from_secs(30);
/// The uid the manager runs under, so its packets alone can be dropped.
const CUT_OFF_UID: u32 = 47_110;
/// How long the operator stays cut off: well over down-after and several of its passes.
const OPERATOR_CUT_FOR: Duration = Duration::from_secs(45);
const NFT_TABLE: &str = "capstan_operator_cut_off";
/// Both clients write this often; at most this many writes per probe.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
const PROBE_MAX_WRITES: u64 = 20_000;
const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// The rows of the matrix, in the order they run: the faults first, on a RedisHA whose master
/// moves with each; then the day-2 operations, each of which rolls or resizes it; the full
/// restart last, since it ends every client's connections and every Sentinel's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    MasterPodDeleted,
    MasterKilled,
    MasterCutOff,
    MasterFrozen,
    MasterDeletedOperatorKilled,
    OperatorCutOff,
    ReplicaFrozenDuringRoll,
    ScaleUpAndDownPastTheMaster,
    ScaleToOneRollAndBack,
    RollWithImmutableConfig,
    PasswordRotation,
    SentinelCommandsWithoutPassword,
    FullRestartWithStorage,
}

impl Fault {
    const MATRIX: [Fault; 13] = [
        Fault::MasterPodDeleted,
        Fault::MasterKilled,
        Fault::MasterCutOff,
        Fault::MasterFrozen,
        Fault::MasterDeletedOperatorKilled,
        Fault::OperatorCutOff,
        Fault::ReplicaFrozenDuringRoll,
        Fault::ScaleUpAndDownPastTheMaster,
        Fault::ScaleToOneRollAndBack,
        Fault::RollWithImmutableConfig,
        Fault::PasswordRotation,
        Fault::SentinelCommandsWithoutPassword,
        Fault::FullRestartWithStorage,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::MasterPodDeleted => "master Pod deleted",
            Fault::MasterKilled => "master redis-server SIGKILLed",
            Fault::MasterCutOff => "master cut off the network",
            Fault::MasterFrozen => "master frozen 12 s (SIGSTOP)",
            Fault::MasterDeletedOperatorKilled => "master deleted, operator killed",
            Fault::OperatorCutOff => "operator cut off 45 s",
            Fault::ReplicaFrozenDuringRoll => "replica frozen in a roll's failover",
            Fault::ScaleUpAndDownPastTheMaster => "scale 3 -> 5 -> 3 (master removed)",
            Fault::ScaleToOneRollAndBack => "scale 3 -> 1, roll at 1, back to 3",
            Fault::RollWithImmutableConfig => "roll with immutable config",
            Fault::PasswordRotation => "password rotation",
            Fault::SentinelCommandsWithoutPassword => "Sentinel commands without the password",
            Fault::FullRestartWithStorage => "full restart with storage",
        }
    }

    /// The longest outage a client may see in this row; None where none is promised.
    fn outage_bound(self) -> Option<Duration> {
        match self {
            // A `WAIT 1` write cannot be acknowledged while a single Redis runs: the client is
            // out for as long as the set has one Pod, by design.
            Fault::ScaleToOneRollAndBack => None,
            Fault::FullRestartWithStorage => Some(FULL_RESTART_OUTAGE_BOUND),
            _ => Some(OUTAGE_BOUND),
        }
    }
}

struct Fixture {
    ns: String,
    /// The password in force (a row rotates it).
    password: String,
    watch: ConvergenceWatch,
    rhas: Api<RedisHA>,
    pods: Api<Pod>,
    client: Client,
    node: &'static capstan_localnode::LocalNode,
}

impl Fixture {
    /// A namespace, the auth Secret and RedisHA `ha` of 3 Redis and 3 Sentinels with a password
    /// and storage; the manager is the caller's to start.
    async fn create(cp: &ControlPlane, prefix: &str) -> (Fixture, LogsOnPanic) {
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
            watch: ConvergenceWatch::new(client.clone(), &ns, NAME, Some(PASSWORD), "cluster.local"),
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
        // Storage from the start (a claim template is immutable), so the full restart can run
        // on the same RedisHA as every other row.
        let rha: RedisHA = serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "RedisHA", "metadata": {"name": NAME},
            "spec": {
                "replicas": 3, "sentinel": {"replicas": 3}, "auth": {"secretName": "ha-auth"},
                "storage": {"size": "64Mi"}
            }
        }))
        .expect("redis-ha");
        f.rhas
            .create(&PostParams::default(), &rha)
            .await
            .expect("create RedisHA");
        (f, LogsOnPanic { ns, node })
    }

    async fn redis_pods(&self) -> Vec<Pod> {
        self.watch.redis_pods().await
    }

    async fn sentinel_ips(&self) -> Vec<String> {
        self.watch.sentinel_ips().await
    }

    /// The Sentinels' addresses, sorted, as the Sentinel-aware client is given them.
    async fn sentinel_addresses(&self) -> Vec<SocketAddr> {
        let mut sentinels: Vec<SocketAddr> = self
            .sentinel_ips()
            .await
            .iter()
            .filter_map(|ip| Some(SocketAddr::new(ip.parse().ok()?, SENTINEL_PORT)))
            .collect();
        sentinels.sort();
        sentinels
    }

    /// The Sentinels take the password in force, as Redis does.
    fn sentinel_target<'a>(&'a self, endpoint: &'a Endpoint) -> Target<'a> {
        Target::sentinel(endpoint, Some(&self.password), Timeouts::default())
    }

    fn redis_target<'a>(&'a self, endpoint: &'a Endpoint) -> Target<'a> {
        Target::new(endpoint, Some(&self.password), Timeouts::default())
    }

    fn fqdn(&self, pod: &str) -> String {
        self.watch.fqdn(pod)
    }

    async fn master_service(&self) -> SocketAddr {
        self.watch.master_service().await.expect("the master Service")
    }

    async fn pod_ip(&self, pod: &str) -> String {
        self.redis_pods()
            .await
            .iter()
            .find(|p| p.name_any() == pod)
            .and_then(pod_ip)
            .unwrap_or_else(|| panic!("{pod}'s IP"))
    }

    async fn redis_uids(&self) -> BTreeSet<String> {
        self.redis_pods().await.iter().filter_map(|p| p.uid()).collect()
    }

    fn use_password(&mut self, password: &str) {
        self.password = password.to_owned();
        self.watch = ConvergenceWatch::new(self.client.clone(), &self.ns, NAME, Some(password), "cluster.local");
    }

    async fn check_converged(&self, replicas: usize) -> Result<Converged, String> {
        self.watch.converged(replicas).await
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
    /// it alone.
    async fn new_master_routed(&self, old: &str) -> String {
        eventually("a new master behind the master Service", CONVERGE, || async {
            self.watch.new_master_routed(old).await
        })
        .await
    }

    /// A Redis's configuration parameter, asked inside its Pod (None while it does not answer).
    async fn config_get(&self, pod: &str, parameter: &str) -> Option<String> {
        let out = self
            .node
            .exec(
                &self.ns,
                pod,
                "redis",
                &[
                    "redis-cli",
                    "--no-auth-warning",
                    "-a",
                    &self.password,
                    "CONFIG",
                    "GET",
                    parameter,
                ],
            )
            .await
            .ok()?;
        let reply = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = reply.lines();
        (lines.next()? == parameter).then_some(())?;
        lines.next().map(str::to_owned)
    }

    /// SIGSTOP or SIGCONT to a Pod's redis-server; a stop is checked to have taken (the
    /// process stopped), so a row never runs against a Redis that was not frozen.
    async fn signal_redis(&self, pod: &str, signal: i32) {
        self.node
            .kill_container(&self.ns, pod, "redis", signal)
            .await
            .unwrap_or_else(|e| panic!("signal {signal} to {pod}'s redis-server: {e}"));
        if signal != SIGSTOP {
            return;
        }
        let pid = self.node.container_pid(&self.ns, pod, "redis").expect("a pid");
        let state = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| Some(stat.rsplit_once(')')?.1.split_whitespace().next()?.to_owned()))
        };
        eventually(
            &format!("{pod}'s redis-server (pid {pid}) stopped"),
            Duration::from_secs(5),
            || async { (state().as_deref() == Some("T")).then_some(()) },
        )
        .await;
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

    /// The names of the Redis configurations (one immutable ConfigMap per revision).
    async fn redis_configs(&self) -> BTreeSet<String> {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|c| c.name_any())
                    .filter(|n| n.starts_with(&format!("{NAME}-config-")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until every Redis Pod runs the StatefulSet's current template and none is one of
    /// `before` (the Pods before the roll).
    async fn every_redis_pod_rolled(&self, before: &BTreeSet<String>, replicas: usize) {
        let sets = Api::<StatefulSet>::namespaced(self.client.clone(), &self.ns);
        eventually("every Redis Pod runs the new template", CONVERGE * 2, || async {
            let set = sets.get(NAME).await.ok()?;
            let status = set.status?;
            (status.observed_generation >= set.metadata.generation).then_some(())?;
            let revision = status.update_revision?;
            let pods = self.redis_pods().await;
            (pods.len() == replicas
                && pods.iter().all(|p| {
                    p.labels().get(REVISION_LABEL) == Some(&revision)
                        && p.uid().is_some_and(|uid| !before.contains(&uid))
                }))
            .then_some(())
        })
        .await;
    }

    /// The operator's Events of `reason` in the namespace, as their messages.
    async fn events(&self, reason: &str) -> Vec<String> {
        Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.message.unwrap_or_default())
            .collect()
    }
}

/// One of the clients that write through the whole matrix. Its probe is replaced when what it
/// connects with changes (the password, the Sentinels' addresses); the replaced probes' records
/// stay part of it, so every key it ever saw acknowledged is checked to the end.
struct MatrixClient {
    label: &'static str,
    route: Route,
    probe: WriteProbe,
    retired: Vec<ProbeLog>,
    generation: u32,
}

impl MatrixClient {
    fn start(label: &'static str, route: Route, password: &str) -> MatrixClient {
        MatrixClient {
            probe: Self::probe(label, 0, &route, password),
            label,
            route,
            retired: Vec::new(),
            generation: 0,
        }
    }

    /// Keys differ between probes (`<label>.<generation>:<n>`), so none is counted twice.
    fn probe(label: &str, generation: u32, route: &Route, password: &str) -> WriteProbe {
        WriteProbe::start_on(
            route.clone(),
            Some(password.to_owned()),
            &format!("{label}.{generation}"),
            PROBE_INTERVAL,
            PROBE_MAX_WRITES,
        )
    }

    /// The new probe starts before the old one stops, so the switch itself costs no outage.
    async fn restart(&mut self, route: Route, password: &str) {
        self.generation += 1;
        let fresh = Self::probe(self.label, self.generation, &route, password);
        let old = std::mem::replace(&mut self.probe, fresh);
        self.route = route;
        self.retired.push(old.stop().await);
        eprintln!("{}: probe {} started on {:?}", self.label, self.generation, self.route);
    }

    /// Everything this client saw, its probes' records merged in time order.
    fn log(&self) -> ProbeLog {
        let current = self.probe.snapshot();
        let mut writes: Vec<(Instant, String)> = self
            .retired
            .iter()
            .chain(std::iter::once(&current))
            .flat_map(|l| l.successes.iter().copied().zip(l.acknowledged.iter().cloned()))
            .collect();
        writes.sort();
        let (successes, acknowledged) = writes.into_iter().unzip();
        ProbeLog {
            acknowledged,
            successes,
            failures: self.retired.iter().map(|l| l.failures).sum::<u64>() + current.failures,
            last_error: current.last_error.or_else(|| self.retired.last()?.last_error.clone()),
        }
    }
}

/// What one client saw during one row.
#[derive(Debug, Clone)]
struct Cell {
    /// Writes acknowledged while the row ran.
    acknowledged: usize,
    /// Acknowledged writes (of the whole test so far) missing once the row settled.
    lost: usize,
    /// The longest stretch without an acknowledged write from the fault until the row ended.
    outage: Duration,
}

struct Row {
    fault: Fault,
    took: Duration,
    cells: Vec<Cell>,
}

/// The matrix so far: a row per fault, a cell per client.
struct FaultMatrix {
    clients: Vec<&'static str>,
    rows: Vec<Row>,
    printed: bool,
}

impl FaultMatrix {
    fn table(&self) -> String {
        let mut out = format!("{:<38} {:>7}", "fault", "took");
        for client in &self.clients {
            out.push_str(&format!(" | {:^29}", client));
        }
        out.push_str(&format!("\n{:<38} {:>7}", "", ""));
        for _ in &self.clients {
            out.push_str(&format!(" | {:>6} {:>5} {:>16}", "acked", "lost", "outage"));
        }
        for row in &self.rows {
            out.push_str(&format!("\n{:<38} {:>6.0}s", row.fault.name(), row.took.as_secs_f64()));
            for cell in &row.cells {
                let outage = format!("{:.2}s", cell.outage.as_secs_f64());
                let outage = match row.fault.outage_bound() {
                    Some(bound) => format!("{outage} (<= {}s)", bound.as_secs()),
                    None => format!("{outage} (n/a)"),
                };
                out.push_str(&format!(" | {:>6} {:>5} {:>16}", cell.acknowledged, cell.lost, outage));
            }
        }
        out
    }

    /// Every broken promise: an acknowledged write lost, an outage over its row's bound.
    fn violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        for row in &self.rows {
            for (client, cell) in self.clients.iter().zip(&row.cells) {
                if cell.lost > 0 {
                    violations.push(format!(
                        "{}: {client} lost {} acknowledged writes",
                        row.fault.name(),
                        cell.lost
                    ));
                }
                if let Some(bound) = row.fault.outage_bound()
                    && cell.outage > bound
                {
                    violations.push(format!(
                        "{}: {client} saw an outage of {:?} > {bound:?}",
                        row.fault.name(),
                        cell.outage
                    ));
                }
            }
        }
        violations
    }
}

impl Drop for FaultMatrix {
    fn drop(&mut self) {
        // A row that failed ends the test: the rows before it still say what the clients saw.
        if std::thread::panicking() && !self.printed {
            eprintln!("\nThe fault matrix up to the failure:\n{}", self.table());
        }
    }
}

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

/// The test's state between rows: the RedisHA, the operator, the two clients, the last converged
/// state and the matrix recorded so far.
struct Run {
    cp: &'static ControlPlane,
    f: Fixture,
    manager: Option<ManagerProcess>,
    /// Through the master Service, then Sentinel-aware.
    clients: [MatrixClient; 2],
    master_service: SocketAddr,
    state: Converged,
    matrix: FaultMatrix,
}

impl Run {
    fn start_manager(&self) -> ManagerProcess {
        ManagerProcess::start_as(
            self.cp.kubeconfig_path(),
            &["--namespace", self.f.ns.as_str(), "--controllers", "redis-ha"],
            Some(CUT_OFF_UID),
        )
    }

    fn stop_manager(&mut self) {
        if let Some(running) = self.manager.take() {
            running.stop();
        }
    }

    fn sentinel_route(&self, sentinels: Vec<SocketAddr>) -> Route {
        Route::Sentinels {
            sentinels,
            master_set: NAME.to_owned(),
            dns: self.f.node.dns_server(),
        }
    }

    /// Waits until `done` holds while Pods roll, the Sentinel-aware client following the Sentinel
    /// Pods recreated meanwhile.
    async fn until_rolled<F>(&mut self, what: &str, done: F)
    where
        F: for<'a> Fn(&'a Fixture) -> futures::future::BoxFuture<'a, bool>,
    {
        let started = Instant::now();
        loop {
            self.follow_sentinels().await;
            if done(&self.f).await {
                eprintln!("{what}: after {:?}", started.elapsed());
                return;
            }
            assert!(
                started.elapsed() < CONVERGE * 2,
                "{what}: not within {:?}",
                CONVERGE * 2
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sentinel Pods recreated get new IPs, which the Sentinel-aware client must be given (as an
    /// application's configuration would be): a fresh probe then asks the Sentinels there.
    async fn follow_sentinels(&mut self) {
        let now = self.f.sentinel_addresses().await;
        let Route::Sentinels { sentinels, .. } = &self.clients[1].route else {
            return;
        };
        if now.len() == 3 && *sentinels != now {
            let route = self.sentinel_route(now);
            let password = self.f.password.clone();
            self.clients[1].restart(route, &password).await;
        }
    }

    /// Runs one row: injects the fault, waits until the RedisHA converged and both clients write
    /// again, and records what each client saw.
    async fn run(&mut self, fault: Fault) {
        let name = fault.name();
        eprintln!("\n===== {name}");
        let started = Instant::now();
        let mark = self.f.sentinel_log_mark();
        let fault_at = match fault {
            Fault::MasterPodDeleted => self.master_pod_deleted(&mark).await,
            Fault::MasterKilled => self.master_killed().await,
            Fault::MasterCutOff => self.master_cut_off().await,
            Fault::MasterFrozen => self.master_frozen(&mark).await,
            Fault::MasterDeletedOperatorKilled => self.master_deleted_operator_killed(&mark).await,
            Fault::OperatorCutOff => self.operator_cut_off(&mark).await,
            Fault::ReplicaFrozenDuringRoll => self.replica_frozen_during_roll(&mark).await,
            Fault::ScaleUpAndDownPastTheMaster => self.scale_up_and_down_past_the_master().await,
            Fault::ScaleToOneRollAndBack => self.scale_to_one_roll_and_back().await,
            Fault::RollWithImmutableConfig => self.roll_with_immutable_config(&mark).await,
            Fault::PasswordRotation => self.password_rotation(&mark).await,
            Fault::SentinelCommandsWithoutPassword => self.sentinel_commands_without_password(&mark).await,
            Fault::FullRestartWithStorage => self.full_restart_with_storage().await,
        };
        self.f.print_failover_events(name, &mark);
        self.follow_sentinels().await;
        let settled = Instant::now();
        eventually(
            &format!("{name}: both clients acknowledged writes again"),
            Duration::from_secs(60),
            || async {
                self.clients
                    .iter()
                    .all(|c| c.log().acknowledged_since(settled) >= 3)
                    .then_some(())
            },
        )
        .await;
        let ended = Instant::now();
        let mut cells = Vec::new();
        for client in &self.clients {
            let log = client.log();
            let found = count_existing(self.master_service, Some(&self.f.password), &log.acknowledged)
                .await
                .expect("reading the keys back through the master Service");
            let cell = Cell {
                acknowledged: log.successes.iter().filter(|t| **t >= started && **t <= ended).count(),
                lost: log.acknowledged.len().saturating_sub(found),
                outage: log.longest_outage(fault_at, ended),
            };
            eprintln!(
                "{name} | {}: {} acknowledged in the row, {} of {} acknowledged so far lost, outage {:?} ({} failed writes so far, last error {:?})",
                client.label,
                cell.acknowledged,
                cell.lost,
                log.acknowledged.len(),
                cell.outage,
                log.failures,
                log.last_error
            );
            cells.push(cell);
        }
        self.matrix.rows.push(Row {
            fault,
            took: started.elapsed(),
            cells,
        });
    }

    /// The master Pod deleted: its preStop hands over before the process stops.
    async fn master_pod_deleted(&mut self, mark: &[(std::path::PathBuf, usize)]) -> Instant {
        let old = self.state.master.clone();
        let fault = Instant::now();
        self.f
            .pods
            .delete(&old, &DeleteParams::default())
            .await
            .expect("delete the master Pod");
        self.f.new_master_routed(&old).await;
        let after = self.f.converged("master Pod deleted", 3).await;
        assert_ne!(after.master, old);
        assert_eq!(self.f.failovers_since(mark), 1, "exactly one failover");
        self.state = after;
        fault
    }

    /// The master's redis-server SIGKILLed; the Pod stays and its container restarts.
    async fn master_killed(&mut self) -> Instant {
        let old = self.state.master.clone();
        let fault = Instant::now();
        self.f
            .node
            .kill_container(&self.f.ns, &old, "redis", SIGKILL)
            .await
            .expect("SIGKILL the master's redis-server");
        self.f.new_master_routed(&old).await;
        let after = self.f.converged("master killed", 3).await;
        assert_ne!(after.master, old, "the restarted Pod never serves as master again");
        self.state = after;
        fault
    }

    /// The master cut off the network: the others fail over, the isolated master stops taking
    /// writes (min-replicas-to-write), and rejoins as a replica once the network heals.
    async fn master_cut_off(&mut self) -> Instant {
        let f = &self.f;
        let old = self.state.master.clone();
        let fault = Instant::now();
        f.node.cut_network(&f.ns, &old).await.expect("cut the master off");
        f.new_master_routed(&old).await;
        let refused = eventually(
            "the isolated master refuses writes",
            Duration::from_secs(45),
            || async {
                let out = f
                    .node
                    .exec(
                        &f.ns,
                        &old,
                        "redis",
                        &[
                            "redis-cli",
                            "--no-auth-warning",
                            "-a",
                            &f.password,
                            "SET",
                            "isolated",
                            "x",
                        ],
                    )
                    .await
                    .ok()?;
                let reply = String::from_utf8_lossy(&out.stdout).into_owned();
                reply.contains("NOREPLICAS").then_some(reply)
            },
        )
        .await;
        eprintln!(
            "the isolated master answers: {} ({:?} after the cut)",
            refused.trim(),
            fault.elapsed()
        );
        f.node.restore_network(&f.ns, &old).await.expect("restore the network");
        let after = f.converged("network restored", 3).await;
        assert_ne!(after.master, old, "the isolated master rejoined as a replica");
        let isolated = count_existing(self.master_service, Some(&f.password), &["isolated".to_owned()])
            .await
            .expect("read");
        assert_eq!(isolated, 0, "a write refused by the isolated master never appears");
        self.state = after;
        fault
    }

    /// The master frozen (SIGSTOP, as a stalled node) past down-after, then thawed: the
    /// Sentinels fail over once, and the stale master, which wakes up as master, is converted.
    async fn master_frozen(&mut self, mark: &[(std::path::PathBuf, usize)]) -> Instant {
        let f = &self.f;
        let old = self.state.master.clone();
        let fault = Instant::now();
        f.signal_redis(&old, SIGSTOP).await;
        tokio::time::sleep(MASTER_FROZEN_FOR).await;
        f.signal_redis(&old, SIGCONT).await;
        eprintln!("the master thawed after {:?}", fault.elapsed());
        f.new_master_routed(&old).await;
        let after = f.converged("master thawed", 3).await;
        assert_ne!(after.master, old, "the stale master was converted to a replica");
        assert_eq!(f.failovers_since(mark), 1, "one failover");
        self.state = after;
        fault
    }

    /// The master Pod deleted and the operator SIGKILLed during the failover, then restarted:
    /// it converges without a second failover.
    async fn master_deleted_operator_killed(&mut self, mark: &[(std::path::PathBuf, usize)]) -> Instant {
        let old = self.state.master.clone();
        let fault = Instant::now();
        self.f
            .pods
            .delete(&old, &DeleteParams::default())
            .await
            .expect("delete the master Pod");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(running) = self.manager.take() {
            running.kill();
        }
        eprintln!(
            "operator SIGKILLed {:?} after the master Pod was deleted",
            fault.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.manager = Some(self.start_manager());
        self.f.new_master_routed(&old).await;
        let after = self.f.converged("operator restarted", 3).await;
        assert_ne!(after.master, old);
        assert_eq!(self.f.failovers_since(mark), 1, "one failover, no second needless one");
        self.state = after;
        fault
    }

    /// The operator alone (not the Pods, not the clients) loses the master and two of the three
    /// Sentinels: the replicas still replicate from the master and the third Sentinel still sees
    /// it, so the operator must not promote anyone (a second master's writes are lost when the
    /// first is seen again). It waits with `Degraded`/`MasterNotVisible`; afterwards the same
    /// master serves and no failover happened.
    async fn operator_cut_off(&mut self, mark: &[(std::path::PathBuf, usize)]) -> Instant {
        let f = &self.f;
        let before = self.state.clone();
        let mut cut = vec![f.pod_ip(&before.master).await];
        let mut sentinel_ips = f.sentinel_ips().await;
        sentinel_ips.sort();
        cut.extend(sentinel_ips.iter().take(2).cloned());
        let cut_off = OperatorCutOff::to(&cut);
        let fault = Instant::now();
        eprintln!("operator (uid {CUT_OFF_UID}) cut off from {cut:?} for {OPERATOR_CUT_FOR:?}");
        let mut saw_not_visible = None;
        let mut seen_serving = 0;
        while fault.elapsed() < OPERATOR_CUT_FOR {
            let masters: Vec<String> = futures::future::join_all(f.redis_pods().await.iter().map(|pod| async move {
                let endpoint = Endpoint::new(pod_ip(pod)?, REDIS_PORT);
                let replication = info_replication(f.redis_target(&endpoint)).await.ok()?;
                (replication.role == Role::Master).then(|| pod.name_any())
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
            "the master answered as master {seen_serving} times in {OPERATOR_CUT_FOR:?}"
        );
        let message = saw_not_visible.expect("the operator said it waits: Degraded/MasterNotVisible");
        eprintln!("while cut off: {message}");
        let after = f.converged("network back for the operator", 3).await;
        assert_eq!(after.master, before.master, "nobody was promoted");
        assert_eq!(after.epoch, before.epoch, "and the Sentinels did not fail over either");
        assert_eq!(f.failovers_since(mark), 0, "no failover");
        self.state = after;
        fault
    }

    /// A spec change rolls the Pods (replicas first, one planned failover, the old master); once
    /// the roll reaches the master (the operator's next step is the failover, by its own
    /// `rollout_step`), a replica is frozen, as a stalled node, until the failover attempt met
    /// it. The operator cannot verify that replica has caught up and Sentinel might promote it
    /// from a stale offset, so the attempt is abandoned before Sentinel is asked; after the thaw
    /// the roll fails over once and nothing is lost.
    async fn replica_frozen_during_roll(&mut self, mark: &[(std::path::PathBuf, usize)]) -> Instant {
        let f = &self.f;
        let master = self.state.master.clone();
        let before = f.redis_uids().await;
        let refused_before = f.events("PlannedFailoverFailed").await.len();
        let sets = Api::<StatefulSet>::namespaced(f.client.clone(), &f.ns);
        f.patch_spec(serde_json::json!({"config": {"maxmemory": "88mb"}})).await;
        let frozen = eventually("the roll reaches the master", CONVERGE * 2, || async {
            let rha = f.rhas.get(NAME).await.ok()?;
            // Once the failover happened, the step would still name the old master's Pod.
            (rha.status.as_ref()?.master.as_deref() == Some(master.as_str())).then_some(())?;
            let set = sets.get(NAME).await.ok()?;
            let pods = f.redis_pods().await;
            match rollout_step(&rha, &set, &pods, Some(&master)) {
                Step::Failover { from, .. } if from == master => {
                    pods.iter().map(|p| p.name_any()).filter(|p| *p != master).min()
                }
                _ => None,
            }
        })
        .await;
        f.signal_redis(&frozen, SIGSTOP).await;
        let fault = Instant::now();
        // The operator fails over only once the Sentinels know every replica, seconds after the
        // step is due: the replica stays frozen until the attempt met it (abandoned, naming it)
        // or went through, so the freeze spans the planned failover whatever the operator's pace.
        let abandoned = format!("abandoned: {frozen}:");
        let met = eventually(
            &format!("the roll's planned failover met the frozen {frozen}"),
            REPLICA_FROZEN_AT_MOST,
            || async {
                if fault.elapsed() < REPLICA_FROZEN_FOR {
                    return None;
                }
                let refused = f.events("PlannedFailoverFailed").await;
                if let Some(message) = refused.iter().skip(refused_before).find(|m| m.contains(&abandoned)) {
                    return Some(format!("the attempt was abandoned: {message}"));
                }
                (f.failovers_since(mark) > 0).then(|| "the failover went through".to_owned())
            },
        )
        .await;
        f.signal_redis(&frozen, SIGCONT).await;
        eprintln!(
            "{frozen} frozen {:?} from when the roll reached {master}: {met}",
            fault.elapsed()
        );
        f.every_redis_pod_rolled(&before, 3).await;
        let after = f.converged("rolled past a frozen replica", 3).await;
        assert_ne!(after.master, master, "the roll moved the master off its outdated Pod");
        assert_eq!(f.failovers_since(mark), 1, "the roll fails over exactly once (planned)");
        self.state = after;
        fault
    }

    /// Has the Sentinels fail over to a Pod with an ordinal of at least `ordinal` (the others get
    /// `replica-priority 0` meanwhile, restored afterwards), as a user's failover could. The
    /// operator owns replica priorities (it restores any it did not set once the set is settled),
    /// so it is stopped until Sentinel has accepted.
    async fn move_master_to_ordinal_at_least(&mut self, ordinal: u32) -> Converged {
        let before = self.state.clone();
        // Sentinel only fails over to replicas it has seen (else it aborts: no good replica), and
        // not at all in TILT mode (it would start only once the writes' pause below ran out, and
        // the old master would take writes the promoted replica never sees): FailoverCapable.
        eventually("the RedisHA is FailoverCapable", CONVERGE, || async {
            self.f.check_converged(before.redis_pods).await.ok()
        })
        .await;
        self.stop_manager();
        let f = &self.f;
        let pods = f.redis_pods().await;
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
                    config_set(f.redis_target(endpoint), "replica-priority", value)
                        .await
                        .expect("CONFIG SET replica-priority");
                }
            }
        };
        set_priority("0").await;
        let sentinel = Endpoint::new(
            f.sentinel_ips().await.first().cloned().expect("a Sentinel"),
            SENTINEL_PORT,
        );
        let low: Vec<String> = pods
            .iter()
            .filter(|p| p.name_any() != before.master && below.iter().any(|e| Some(&e.host) == pod_ip(p).as_ref()))
            .map(|p| f.fqdn(&p.name_any()))
            .collect();
        let low: Vec<&str> = low.iter().map(String::as_str).collect();
        assert!(
            sentinel_sees_priority_zero(f.sentinel_target(&sentinel), NAME, &low, Duration::from_secs(30)).await,
            "the Sentinel sees replica-priority 0"
        );
        // As the operator's own planned failover does: writes wait on the old master, so none is
        // acknowledged there after Sentinel promoted another Pod.
        let master = Endpoint::new(f.pod_ip(&before.master).await, REDIS_PORT);
        pause_writes(f.redis_target(&master), PLANNED_PAUSE)
            .await
            .expect("CLIENT PAUSE");
        // Sentinel refuses (NOGOODSLAVE) until its INFO of the replicas is fresh: ask again.
        let asked = Instant::now();
        while let Err(error) = sentinel_failover(f.sentinel_target(&sentinel), NAME).await {
            assert!(
                asked.elapsed() < Duration::from_secs(30),
                "SENTINEL FAILOVER refused for 30 s: {error}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.manager = Some(self.start_manager());
        let f = &self.f;
        let moved = eventually("the master moved to a high ordinal", CONVERGE, || async {
            let converged = f.check_converged(before.redis_pods).await.ok()?;
            let at: u32 = converged.master.trim_start_matches(&format!("{NAME}-")).parse().ok()?;
            (at >= ordinal && converged.epoch > before.epoch).then_some(converged)
        })
        .await;
        set_priority("100").await;
        eprintln!("moved the master to {}", moved.master);
        self.state = moved.clone();
        moved
    }

    /// Scale 3 → 5 → 3 with the master on a Pod the scale-down removes: the operator moves it
    /// first (one planned failover), and the master is never removed.
    async fn scale_up_and_down_past_the_master(&mut self) -> Instant {
        let fault = Instant::now();
        self.f.patch_spec(serde_json::json!({"replicas": 5})).await;
        let up = self.f.converged("scaled to 5", 5).await;
        assert_eq!(up.redis_pods, 5);
        self.state = up;
        let moved = self.move_master_to_ordinal_at_least(3).await;
        assert_eq!(moved.redis_pods, 5);
        let mark = self.f.sentinel_log_mark();
        self.f.patch_spec(serde_json::json!({"replicas": 3})).await;
        let down = self.f.converged("scaled back to 3", 3).await;
        let ordinal: u32 = down
            .master
            .trim_start_matches(&format!("{NAME}-"))
            .parse()
            .expect("ordinal");
        assert!(ordinal < 3, "the master is among the Pods kept: {}", down.master);
        self.f.print_failover_events("scale-down", &mark);
        assert_eq!(
            self.f.failovers_since(&mark),
            1,
            "one planned failover moved the master before the scale-down"
        );
        assert_eq!(down.redis_pods, 3);
        self.state = down;
        fault
    }

    /// Down to one Redis, a spec change there, and back to three: the count is no part of the
    /// Pod template (the scale rolls nothing), and the single Redis is rolled through a surge Pod
    /// it hands over to and gets back from, never deleted in place.
    async fn scale_to_one_roll_and_back(&mut self) -> Instant {
        let f = &self.f;
        let fault = Instant::now();
        f.patch_spec(serde_json::json!({"replicas": 1})).await;
        let one = f.converged("scaled to 1", 1).await;
        assert_eq!(one.master, format!("{NAME}-0"));
        let single = f.redis_uids().await;
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
        f.patch_spec(serde_json::json!({"replicas": 3})).await;
        self.state = f.converged("back to 3", 3).await;
        fault
    }

    /// A spec change that rolls every Pod, each revision its own immutable ConfigMap: while the
    /// roll is pending, a replica not rolled yet is restarted and comes back with the OLD
    /// configuration (the new one reaches a Pod only through the roll); the old ConfigMap is
    /// pruned once every Pod rolled, and the roll fails over once.
    async fn roll_with_immutable_config(&mut self, mark: &[(std::path::PathBuf, usize)]) -> Instant {
        let f = &self.f;
        let master = self.state.master.clone();
        let before = f.redis_uids().await;
        let old_config = f.redis_configs().await;
        assert_eq!(
            old_config.len(),
            1,
            "one Redis configuration before the roll: {old_config:?}"
        );
        // The roll takes the highest ordinal first: the lowest replica is rolled last.
        let restarted = f
            .redis_pods()
            .await
            .iter()
            .map(|p| p.name_any())
            .filter(|p| *p != master)
            .min()
            .expect("a replica");
        let old_maxmemory = f
            .config_get(&restarted, "maxmemory")
            .await
            .expect("CONFIG GET maxmemory");
        let fault = Instant::now();
        f.patch_spec(serde_json::json!({"config": {"maxmemory": "96mb"}})).await;
        let both = eventually("the new configuration beside the old", CONVERGE, || async {
            let names = f.redis_configs().await;
            (names.len() == 2 && names.is_superset(&old_config)).then_some(names)
        })
        .await;
        eprintln!("during the roll: {both:?}");
        let sets = Api::<StatefulSet>::namespaced(f.client.clone(), &f.ns);
        let (uid, pid) = eventually(
            &format!("the new revision is out and {restarted} not rolled yet"),
            CONVERGE,
            || async {
                let set = sets.get(NAME).await.ok()?;
                let status = set.status?;
                (status.observed_generation >= set.metadata.generation).then_some(())?;
                let revision = status.update_revision?;
                let pod = f.pods.get(&restarted).await.ok()?;
                assert!(
                    pod.uid().is_some_and(|uid| before.contains(&uid)),
                    "{restarted} was rolled before it could be restarted"
                );
                // Until the StatefulSet carries the new template, its Pods are not outdated yet.
                (pod.labels().get(REVISION_LABEL) != Some(&revision)).then_some(())?;
                Some((pod.uid()?, f.node.container_pid(&f.ns, &restarted, "redis")?))
            },
        )
        .await;
        f.node
            .kill_container(&f.ns, &restarted, "redis", SIGKILL)
            .await
            .expect("SIGKILL a replica not rolled yet");
        let reloaded = eventually(
            &format!("{restarted}'s redis-server restarted"),
            Duration::from_secs(60),
            || async {
                let now = f.node.container_pid(&f.ns, &restarted, "redis")?;
                (now != pid).then_some(())?;
                f.config_get(&restarted, "maxmemory").await
            },
        )
        .await;
        let pod = f.pods.get(&restarted).await.expect("the restarted Pod");
        assert_eq!(pod.uid(), Some(uid), "{restarted} restarted in place, not rolled");
        assert_eq!(
            reloaded, old_maxmemory,
            "{restarted}, restarted before its roll, loads the old configuration"
        );
        assert_ne!(
            reloaded,
            (96u64 << 20).to_string(),
            "the new maxmemory reaches it only by the roll"
        );
        eprintln!("{restarted} restarted during the roll: maxmemory {reloaded} (the old value)");
        f.every_redis_pod_rolled(&before, 3).await;
        let rolled = f.converged("rolled", 3).await;
        assert_eq!(rolled.redis_pods, 3);
        eventually(
            "the old configuration pruned once every Pod rolled",
            CONVERGE,
            || async {
                let names = f.redis_configs().await;
                (names.len() == 1 && names.is_disjoint(&old_config)).then_some(())
            },
        )
        .await;
        for pod in f.redis_pods().await {
            let maxmemory = f.config_get(&pod.name_any(), "maxmemory").await;
            assert_eq!(
                maxmemory,
                Some((96u64 << 20).to_string()),
                "{} runs the new configuration",
                pod.name_any()
            );
        }
        assert_eq!(f.failovers_since(mark), 1, "the roll fails over exactly once (planned)");
        self.state = rolled;
        fault
    }

    /// The Secret's password changes: every Pod accepts the new one at once, the Sentinels use
    /// it, and the Pods roll (replicas, one planned failover, the old master; the Sentinels too,
    /// their template carries the password's hash). Both clients switch to the new password;
    /// afterwards the old one is refused on every Redis.
    async fn password_rotation(&mut self, mark: &[(std::path::PathBuf, usize)]) -> Instant {
        let before = self.f.redis_uids().await;
        let fault = Instant::now();
        Api::<Secret>::namespaced(self.f.client.clone(), &self.f.ns)
            .patch(
                "ha-auth",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"stringData": {"password": NEW_PASSWORD}})),
            )
            .await
            .expect("change the password");
        let endpoint = Endpoint::new(self.master_service.ip().to_string(), REDIS_PORT);
        eventually("the master accepts the new password", CONVERGE, || async {
            ping(Target::new(&endpoint, Some(NEW_PASSWORD), Timeouts::default()))
                .await
                .ok()
        })
        .await;
        self.f.use_password(NEW_PASSWORD);
        for client in &mut self.clients {
            let route = client.route.clone();
            client.restart(route, NEW_PASSWORD).await;
        }
        self.until_rolled("every Redis Pod restarted with the new password", |f| {
            let before = before.clone();
            Box::pin(async move {
                let pods = f.redis_pods().await;
                pods.len() == 3 && pods.iter().all(|p| p.uid().is_some_and(|uid| !before.contains(&uid)))
            })
        })
        .await;
        self.f.converged("password rotated", 3).await;
        // A recreated Sentinel's log starts after the switch, so this bounds the count rather
        // than pins it.
        assert!(
            self.f.failovers_since(mark) <= 1,
            "the rotation's roll fails over at most once (planned)"
        );
        for pod in self.f.redis_pods().await {
            let endpoint = Endpoint::new(pod_ip(&pod).expect("an IP"), REDIS_PORT);
            let old_refused = ping(Target::new(&endpoint, Some(PASSWORD), Timeouts::default())).await;
            assert!(
                old_refused.as_ref().is_err_and(is_auth_refused),
                "{}: the old password no longer works: {old_refused:?}",
                pod.name_any()
            );
        }
        // The Sentinel Pods roll last, once every Redis Pod runs the new password: then no
        // Sentinel takes the old one any more.
        self.until_rolled("every Sentinel refuses the old password and takes the new one", |f| {
            Box::pin(async move {
                let sentinels = f.sentinel_addresses().await;
                let mut rotated = sentinels.len() == 3;
                for address in &sentinels {
                    let endpoint = Endpoint::new(address.ip().to_string(), address.port());
                    let old = ping(Target::sentinel(&endpoint, Some(PASSWORD), Timeouts::default())).await;
                    let new = ping(f.sentinel_target(&endpoint)).await;
                    rotated &= old.as_ref().is_err_and(is_auth_refused) && new.is_ok();
                }
                rotated
            })
        })
        .await;
        self.state = self.f.converged("Sentinels rolled to the new password", 3).await;
        fault
    }

    /// Anyone who reaches a Sentinel Pod without the password (or with the old one): refused
    /// (NOAUTH / WRONGPASS) to fail the set over, change its timings or monitor an address of
    /// their choosing; the set keeps its master, epoch and timings.
    async fn sentinel_commands_without_password(&mut self, mark: &[(std::path::PathBuf, usize)]) -> Instant {
        let fault = Instant::now();
        let before = self.state.clone();
        let decoy = Endpoint::new("10.255.255.1", REDIS_PORT);
        let sentinels = self.f.sentinel_addresses().await;
        assert_eq!(sentinels.len(), 3, "three Sentinels");
        for address in &sentinels {
            let endpoint = Endpoint::new(address.ip().to_string(), address.port());
            for password in [None, Some(PASSWORD)] {
                let rogue = Target::sentinel(&endpoint, password, Timeouts::default());
                let failover = sentinel_failover(rogue, NAME).await;
                let timings = sentinel_set(rogue, NAME, &[("down-after-milliseconds", "1".to_owned())]).await;
                let monitor = sentinel_monitor(rogue, "rogue", &decoy, 1).await;
                for (what, answer) in [("FAILOVER", failover), ("SET", timings), ("MONITOR", monitor)] {
                    assert!(
                        answer.as_ref().is_err_and(is_auth_refused),
                        "{address}: SENTINEL {what} with password {password:?} is refused: {answer:?}"
                    );
                }
            }
            let master = sentinel_master(self.f.sentinel_target(&endpoint), NAME)
                .await
                .expect("SENTINEL MASTER with the password")
                .expect("the set is monitored");
            assert_eq!(
                master.get("down-after-milliseconds").map(String::as_str),
                Some("4000"),
                "{address}: the timings are unchanged"
            );
            let rogue = sentinel_master(self.f.sentinel_target(&endpoint), "rogue")
                .await
                .expect("SENTINEL MASTER rogue");
            assert!(rogue.is_none(), "{address}: no rogue master set: {rogue:?}");
        }
        let after = self.f.converged("after the refused Sentinel commands", 3).await;
        assert_eq!(
            (&after.master, after.epoch),
            (&before.master, before.epoch),
            "no failover"
        );
        assert_eq!(self.f.failovers_since(mark), 0, "no failover logged");
        self.state = after;
        fault
    }

    /// A full restart (every Pod deleted at once, grace 0, as a node reboot or an eviction of
    /// all): the Sentinels come back with no state and must resume from the most advanced data
    /// set, not blindly from ordinal 0. The master is moved to ordinal 2 and ordinal 0 is frozen
    /// (SIGSTOP) while the clients write, so ordinal 0 alone misses those writes: seeding it as
    /// master would lose them. The operator records the last verified master for the Sentinels
    /// (`<name>-bootstrap`), so ordinal 2 is master again and every acknowledged key is back.
    async fn full_restart_with_storage(&mut self) -> Instant {
        let last = format!("{NAME}-2");
        if self.state.master != last {
            let moved = self.move_master_to_ordinal_at_least(2).await;
            assert_eq!(moved.master, last);
        }
        let f = &self.f;
        let bootstraps = Api::<ConfigMap>::namespaced(f.client.clone(), &f.ns);
        eventually(
            "the operator recorded the master for the Sentinels",
            CONVERGE,
            || async {
                let record = bootstraps.get_opt(&format!("{NAME}-bootstrap")).await.ok()??;
                (record.data?.get("master")? == &last).then_some(())
            },
        )
        .await;
        let lagging = format!("{NAME}-0");
        f.signal_redis(&lagging, SIGSTOP).await;
        let frozen = Instant::now();
        eventually(
            "writes acknowledged while ordinal 0 is frozen",
            Duration::from_secs(60),
            || async { (self.clients[0].log().acknowledged_since(frozen) >= 40).then_some(()) },
        )
        .await;
        let fault = Instant::now();
        let all = f.redis_pods().await;
        let sentinels = Api::<Pod>::list(
            &f.pods,
            &ListParams::default().labels(&format!(
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
            after.master, last,
            "the Sentinels resumed from the last verified master, not from ordinal 0"
        );
        self.state = after;
        fault
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

/// Every row of [`Fault::MATRIX`] on one RedisHA, a `WAIT 1` client through the master Service
/// and a Sentinel-aware one writing through all of them: per row and client, the writes
/// acknowledged, the acknowledged writes lost (none) and the outage seen (within its bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_ha_keeps_every_acknowledged_write_of_both_clients_through_the_fault_matrix() {
    if !local_node_available("a_redis_ha_keeps_every_acknowledged_write_of_both_clients_through_the_fault_matrix") {
        return;
    }
    let test_started = Instant::now();
    let cp = ControlPlane::shared();
    let (f, _logs) = Fixture::create(cp, "rha-matrix").await;
    let manager = ManagerProcess::start_as(
        cp.kubeconfig_path(),
        &["--namespace", f.ns.as_str(), "--controllers", "redis-ha"],
        Some(CUT_OFF_UID),
    );
    let created = f.converged("created", 3).await;
    assert_eq!(created.master, format!("{NAME}-0"), "ordinal 0 bootstraps as master");
    let master_service = f.master_service().await;
    let sentinels = f.sentinel_addresses().await;
    let mut run = Run {
        cp,
        manager: Some(manager),
        clients: [
            MatrixClient::start("master Service", Route::Service(master_service), PASSWORD),
            MatrixClient::start(
                "Sentinel-aware",
                Route::Sentinels {
                    sentinels,
                    master_set: NAME.to_owned(),
                    dns: f.node.dns_server(),
                },
                PASSWORD,
            ),
        ],
        f,
        master_service,
        state: created,
        matrix: FaultMatrix {
            clients: vec!["master Service", "Sentinel-aware"],
            rows: Vec::new(),
            printed: false,
        },
    };
    eventually(
        "the first acknowledged writes of both clients",
        Duration::from_secs(60),
        || async {
            run.clients
                .iter()
                .all(|c| c.log().acknowledged.len() >= 10)
                .then_some(())
        },
    )
    .await;

    for fault in Fault::MATRIX {
        run.run(fault).await;
    }

    let Run {
        clients,
        manager,
        mut matrix,
        ..
    } = run;
    let mut total = Vec::new();
    for client in clients {
        let label = client.label;
        let mut logs = client.retired;
        logs.push(client.probe.stop().await);
        let acknowledged: Vec<String> = logs.into_iter().flat_map(|l| l.acknowledged).collect();
        let found = count_existing(master_service, Some(NEW_PASSWORD), &acknowledged)
            .await
            .expect("reading every key back");
        assert_eq!(
            found,
            acknowledged.len(),
            "{label}: every acknowledged write is there at the end"
        );
        total.push(format!(
            "{label}: {found} acknowledged writes in all, every one present"
        ));
    }
    eprintln!(
        "\nRedisHA fault matrix ({} rows in {:?}; outage: the longest stretch without an acknowledged write from the fault until both clients wrote again):\n{}\n{}",
        matrix.rows.len(),
        test_started.elapsed(),
        matrix.table(),
        total.join("\n")
    );
    matrix.printed = true;
    let violations = matrix.violations();
    assert!(violations.is_empty(), "broken promises:\n{}", violations.join("\n"));
    if let Some(running) = manager {
        running.stop();
    }
}
