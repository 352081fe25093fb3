//! One RedisHA's failover while others are slow to heal: the healer heals each RedisHA on its own
//! schedule, so Pods that time out elsewhere, or a roll elsewhere, must not delay this one's master
//! relabel. On the local node (real `redis-server` and `redis-sentinel`), one manager, one
//! namespace:
//!
//! 1. baseline — one RedisHA alone (3 Redis, 3 Sentinels, a password), a client writing `SET` +
//!    `WAIT 1` through `<name>-master` every 100 ms ([`WriteProbe`]); its master's redis-server is
//!    SIGKILLed, [`RUNS`] times, each run converging again;
//! 2. loaded — [`REDIS_HAS`] RedisHAs in all, created in batches; every Redis of [`FROZEN`] of them
//!    SIGSTOPped for the whole phase (the healer's calls to them time out), one rolling (its
//!    `spec.config` changed before each run); the same RedisHA's master SIGKILLed as often.
//!
//! Both phases measure the time from the kill until the master Service routes to the new master,
//! the part of it after a Sentinel first names the new master (the healer's and the endpoints
//! controller's share), and the outage the client saw. Reported, not asserted.
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use capstan_localnode::{LocalNode, LocalNodeConfig};
use capstan_redis_ha::{
    RedisHA,
    config::{Endpoint, SENTINEL_PORT},
    names::{COMPONENT_REDIS, component_selector},
    testing::{
        Converged, ConvergenceWatch, ProbeLog, WriteProbe, count_existing,
        redis_io::{Target, Timeouts, sentinel_master_address},
    },
};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret},
};
use kube::{
    Client, ResourceExt,
    api::{Api, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::time::Instant;

use super::{
    Bench,
    redis_ha_failover::acknowledged_after,
    report::{Row, ScenarioResult, Unit},
    start_manager,
    track::poll_until,
};

/// The scenario's name in `--scenarios`; it belongs to the `redis-ha` controller.
pub const SCENARIO: &str = "redis-ha-isolation";
/// RedisHAs during the loaded phase, the measured one included: 120 Pods, more than one local
/// node's 110, so the node registers two (one host, one bridge).
pub const REDIS_HAS: usize = 20;
/// RedisHAs whose every redis-server is stopped during the loaded phase.
const FROZEN: usize = 5;
/// Measured kills per phase.
pub const RUNS: usize = 5;
/// RedisHAs created at once; the next batch waits until these converged (a 2-core host starting
/// 30 real processes at a time).
const BATCH: usize = 5;
/// The loaded phase's figure may be this many times the baseline's and still count as "as fast":
/// the Sentinels' down-after (4 s) and election dominate both, and a 2-core host running 120 real
/// processes besides is slower at everything, so a healer that waited on the slow RedisHAs (a 60 s
/// deadline, 3 s timeouts per call) would show as several times the baseline, not as 1.5.
const RATIO_TARGET: f64 = 1.5;
/// The outage goal of a SIGKILLed master (as in redis-ha-failover).
const OUTAGE_GOAL: Duration = Duration::from_secs(10);
const NAMESPACE: &str = "bench-redis-ha-isolation";
const MEASURED: &str = "iso-measured";
const ROLLING: &str = "iso-rolling";
const SECRET: &str = "iso-auth";
const PASSWORD: &str = "s3cret-for-the-isolation-bench";
const CLUSTER_DOMAIN: &str = "cluster.local";
/// Each RedisHA must converge within this (a shared 2-core machine).
const CONVERGE: Duration = Duration::from_secs(300);
/// After the freeze, time for the frozen RedisHAs' readiness probes and Sentinels to notice, so
/// the healer is already working on them (and timing out) when the first kill comes.
const FREEZE_SETTLE: Duration = Duration::from_secs(15);
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Bounds the probe: about 50 minutes at one write per 100 ms, far more than the scenario takes.
const MAX_WRITES: u64 = 30_000;
/// How often the bench looks at the Sentinels and at the master Service after a kill.
const ROUTED_POLL: Duration = Duration::from_millis(100);
/// The bench's own Sentinel questions must not be slowed by a Sentinel that hangs.
const SENTINEL_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_millis(500),
    call: Duration::from_millis(500),
};
const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// Runs the scenario when the local node can run here. Otherwise: skipped with the reason when
/// the scenario came with the defaults, an error when `--scenarios` asked for it.
pub async fn run(bench: &Bench<'_>, asked: bool) -> anyhow::Result<ScenarioResult> {
    if let Err(missing) = capstan_localnode::check_prerequisites() {
        let reason = format!(
            "needs the local node (real redis-server and redis-sentinel), which cannot run here: {}",
            missing.join("; ")
        );
        if asked {
            bail!(reason);
        }
        return Ok(ScenarioResult::skipped(reason));
    }
    let mut config = LocalNodeConfig::new(bench.control_plane.kubeconfig_path());
    config.nodes = 2;
    // A SIGKILLed redis-server restarts after the kubelet's back-off; seconds, as in the tests.
    config.backoff_initial = Duration::from_secs(1);
    eprintln!("starting the local node ({} Node objects)", config.nodes);
    let node = LocalNode::start(config).await.map_err(|error| {
        anyhow!(
            "the local node did not start: {error} (one local node per host: run the bench under \
             `flock /tmp/capstan-localnode.lock`)"
        )
    })?;
    let result = with_node(bench, &node).await;
    eprintln!("stopping the local node");
    if let Err(error) = node.stop().await {
        eprintln!("warning: the local node did not stop cleanly: {error}");
    }
    result
}

/// The others of the loaded phase, in their roles: frozen, rolling, idle.
fn others() -> Vec<String> {
    let frozen = (1..=FROZEN).map(|i| format!("iso-frozen-{i}"));
    let idle = (1..REDIS_HAS - FROZEN - 1).map(|i| format!("iso-idle-{i}"));
    frozen.chain([ROLLING.to_owned()]).chain(idle).collect()
}

fn frozen_names() -> Vec<String> {
    others().into_iter().take(FROZEN).collect()
}

/// What the bench works with once the manager runs.
struct Stage<'a> {
    client: Client,
    node: &'a LocalNode,
    namespace: String,
}

impl Stage<'_> {
    fn observer(&self, name: &str) -> ConvergenceWatch {
        ConvergenceWatch::new(
            self.client.clone(),
            &self.namespace,
            name,
            Some(PASSWORD),
            CLUSTER_DOMAIN,
        )
    }
}

/// One SIGKILL of the measured RedisHA's master.
#[derive(Debug, Clone)]
struct Run {
    old: String,
    new: String,
    /// From the kill until the master Service routes to the new master alone.
    routed: Duration,
    /// From the kill until a Sentinel first names another master.
    promoted: Duration,
    /// The longest stretch without an acknowledged write.
    outage: Duration,
    /// Whether the rolling RedisHA had an outdated Redis Pod at the kill, and when routed.
    rolling_at_kill: Option<bool>,
    rolling_when_routed: Option<bool>,
    /// Frozen redis-servers stopped at the kill (None in the baseline).
    stopped: Option<usize>,
    /// Frozen redis-servers found running again (restarted) and stopped again before the run.
    refrozen: usize,
}

impl Run {
    /// The healer's (and the endpoints controller's) share: from the Sentinels' promotion to the
    /// routing.
    fn relabel(&self) -> Duration {
        self.routed.saturating_sub(self.promoted)
    }
}

struct Measured {
    baseline: Vec<Run>,
    loaded: Vec<Run>,
    setup: Duration,
    probe: ProbeLog,
    lost: usize,
}

async fn with_node(bench: &Bench<'_>, node: &LocalNode) -> anyhow::Result<ScenarioResult> {
    let client = bench.client.clone();
    let namespace = bench.control_plane.namespace(&client, NAMESPACE).await?;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
        "stringData": {"password": PASSWORD}
    }))?;
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the auth Secret")?;
    create_redis_ha(&client, &namespace, MEASURED).await?;
    let manager = start_manager(bench, &namespace, SCENARIO).await?;
    let stage = Stage {
        client,
        node,
        namespace,
    };
    let measured = phases(&stage).await;
    thaw(&stage).await;
    manager.stop();
    Ok(result(&measured?))
}

async fn create_redis_ha(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let rha: RedisHA = serde_json::from_value(json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "RedisHA", "metadata": {"name": name},
        "spec": {"replicas": 3, "sentinel": {"replicas": 3}, "auth": {"secretName": SECRET}}
    }))?;
    Api::<RedisHA>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &rha)
        .await
        .with_context(|| format!("creating RedisHA {name}"))?;
    Ok(())
}

async fn phases(stage: &Stage<'_>) -> anyhow::Result<Measured> {
    let measured = stage.observer(MEASURED);
    let mut state = converged(&measured, MEASURED).await?;
    let master_service = measured.master_service().await.map_err(|e| anyhow!(e))?;
    eprintln!("writing through {master_service} ({MEASURED}-master) every 100 ms");
    let probe = WriteProbe::start(
        master_service,
        Some(PASSWORD.to_owned()),
        "isolation",
        PROBE_INTERVAL,
        MAX_WRITES,
    );

    let mut baseline = Vec::with_capacity(RUNS);
    for run in 1..=RUNS {
        let what = format!("baseline, {MEASURED} alone (run {run}/{RUNS})");
        let measurement = kill_and_measure(stage, &measured, &probe, &state.master, false, &what).await?;
        state = converged(&measured, &what).await?;
        baseline.push(measurement);
    }

    let setup_started = Instant::now();
    let others = others();
    for (i, batch) in others.chunks(BATCH).enumerate() {
        for name in batch {
            create_redis_ha(&stage.client, &stage.namespace, name).await?;
        }
        let observers: Vec<(String, ConvergenceWatch)> = batch.iter().map(|n| (n.clone(), stage.observer(n))).collect();
        futures::future::try_join_all(observers.iter().map(|(name, observer)| converged(observer, name))).await?;
        eprintln!(
            "batch {} ({} RedisHAs, {} in all) converged {:.1}s into the setup",
            i + 1,
            batch.len(),
            1 + BATCH * i + batch.len(),
            setup_started.elapsed().as_secs_f64()
        );
    }
    let setup = setup_started.elapsed();
    eprintln!(
        "{REDIS_HAS} RedisHAs converged; the {} others took {:.1}s",
        others.len(),
        setup.as_secs_f64()
    );
    freeze(stage).await?;
    tokio::time::sleep(FREEZE_SETTLE).await;
    state = converged(&measured, &format!("{MEASURED} beside {} others", others.len())).await?;

    let mut loaded = Vec::with_capacity(RUNS);
    for run in 1..=RUNS {
        let what = format!("loaded, {REDIS_HAS} RedisHAs (run {run}/{RUNS})");
        let (stopped, refrozen) = keep_frozen(stage).await?;
        start_roll(stage, run).await?;
        let mut measurement = kill_and_measure(stage, &measured, &probe, &state.master, true, &what).await?;
        measurement.stopped = Some(stopped);
        measurement.refrozen = refrozen;
        state = converged(&measured, &what).await?;
        loaded.push(measurement);
    }

    let probe = probe.stop().await;
    let found = count_existing(master_service, Some(PASSWORD), &probe.acknowledged)
        .await
        .map_err(|e| anyhow!("reading the acknowledged keys back: {e}"))?;
    Ok(Measured {
        baseline,
        loaded,
        setup,
        lost: probe.acknowledged.len().saturating_sub(found),
        probe,
    })
}

/// SIGKILLs `old`'s redis-server and measures until the client writes through the new master.
async fn kill_and_measure(
    stage: &Stage<'_>,
    measured: &ConvergenceWatch,
    probe: &WriteProbe,
    old: &str,
    loaded: bool,
    what: &str,
) -> anyhow::Result<Run> {
    acknowledged_after(probe, Instant::now(), 10, "writes acknowledged before the kill").await?;
    let sentinels = measured.sentinel_ips().await;
    let old_fqdn = measured.fqdn(old);
    let rolling_at_kill = if loaded { rolling(stage).await.ok() } else { None };
    let started = Instant::now();
    stage
        .node
        .kill_container(&stage.namespace, old, "redis", SIGKILL)
        .await
        .with_context(|| format!("SIGKILLing {old}'s redis-server"))?;
    let mut promoted = None;
    let (new, routed) = loop {
        let (named_other, routed) = tokio::join!(
            a_sentinel_names_another(&sentinels, &old_fqdn),
            measured.new_master_routed(old)
        );
        let now = Instant::now();
        if named_other && promoted.is_none() {
            promoted = Some(now);
        }
        if let Some(new) = routed {
            break (new, now);
        }
        if started.elapsed() > CONVERGE {
            bail!(
                "{what}: no new master behind the master Service within {}s",
                CONVERGE.as_secs()
            );
        }
        tokio::time::sleep(ROUTED_POLL).await;
    };
    let rolling_when_routed = if loaded { rolling(stage).await.ok() } else { None };
    let log = acknowledged_after(probe, routed, 3, "writes acknowledged by the new master").await?;
    // The client's outage ends with its first acknowledged write once the new master is routed
    // (or earlier, when writes came back before the bench saw the routing).
    let back = log.successes.iter().copied().find(|t| *t > routed).unwrap_or(routed);
    let run = Run {
        old: old.to_owned(),
        new,
        routed: routed.duration_since(started),
        promoted: promoted.unwrap_or(routed).duration_since(started),
        outage: log.longest_outage(started, back),
        rolling_at_kill,
        rolling_when_routed,
        stopped: None,
        refrozen: 0,
    };
    eprintln!(
        "{what}: {} → {}: a Sentinel named it after {:.2}s, routed after {:.2}s, client outage {:.2}s{}",
        run.old,
        run.new,
        run.promoted.as_secs_f64(),
        run.routed.as_secs_f64(),
        run.outage.as_secs_f64(),
        match (rolling_at_kill, rolling_when_routed) {
            (None, None) => String::new(),
            (at_kill, when_routed) =>
                format!(" ({ROLLING} rolling at the kill: {at_kill:?}, when routed: {when_routed:?})"),
        }
    );
    Ok(run)
}

/// Whether any Sentinel names a master other than `old_fqdn` (a Sentinel that does not answer
/// names none).
async fn a_sentinel_names_another(sentinels: &[String], old_fqdn: &str) -> bool {
    let answers = futures::future::join_all(sentinels.iter().map(|ip| async move {
        let endpoint = Endpoint::new(ip.clone(), SENTINEL_PORT);
        sentinel_master_address(Target::sentinel(&endpoint, Some(PASSWORD), SENTINEL_TIMEOUTS), MEASURED).await
    }))
    .await;
    answers
        .into_iter()
        .any(|answer| matches!(answer, Ok(Some(master)) if master.host != old_fqdn))
}

/// Stops every redis-server of the frozen RedisHAs.
async fn freeze(stage: &Stage<'_>) -> anyhow::Result<()> {
    for name in frozen_names() {
        let pods = stage.observer(&name).redis_pods().await;
        if pods.len() != 3 {
            bail!("{name} has {} Redis Pods, want 3", pods.len());
        }
        for pod in pods {
            stage
                .node
                .kill_container(&stage.namespace, &pod.name_any(), "redis", SIGSTOP)
                .await
                .with_context(|| format!("SIGSTOP to {}'s redis-server", pod.name_any()))?;
        }
    }
    eprintln!("SIGSTOPped every redis-server of {FROZEN} RedisHAs");
    Ok(())
}

/// Stops again any frozen redis-server that runs (one restarted, e.g. by its liveness probe once
/// its listen backlog filled); returns how many are stopped now, and how many had to be again.
async fn keep_frozen(stage: &Stage<'_>) -> anyhow::Result<(usize, usize)> {
    let mut stopped = 0;
    let mut refrozen = 0;
    for name in frozen_names() {
        for pod in stage.observer(&name).redis_pods().await {
            let pod = pod.name_any();
            let Some(pid) = stage.node.container_pid(&stage.namespace, &pod, "redis") else {
                continue;
            };
            if process_state(pid) != Some('T') {
                stage
                    .node
                    .kill_container(&stage.namespace, &pod, "redis", SIGSTOP)
                    .await
                    .with_context(|| format!("SIGSTOP to {pod}'s redis-server"))?;
                refrozen += 1;
            }
            stopped += 1;
        }
    }
    if refrozen > 0 {
        eprintln!("{refrozen} frozen redis-server(s) ran again: SIGSTOPped them again");
    }
    Ok((stopped, refrozen))
}

/// A process's state letter from `/proc/<pid>/stat` (`T`: stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// SIGCONT to every frozen redis-server, whatever happened before (idempotent).
async fn thaw(stage: &Stage<'_>) {
    for name in frozen_names() {
        for pod in stage.observer(&name).redis_pods().await {
            let pod = pod.name_any();
            if let Err(error) = stage
                .node
                .kill_container(&stage.namespace, &pod, "redis", SIGCONT)
                .await
            {
                eprintln!("warning: SIGCONT to {pod}'s redis-server: {error}");
            }
        }
    }
}

/// Changes the rolling RedisHA's `spec.config` (another value each run) and waits until the roll
/// shows: a Redis Pod of an outdated revision.
async fn start_roll(stage: &Stage<'_>, run: usize) -> anyhow::Result<()> {
    let maxmemory = format!("{}mb", 91 - run);
    Api::<RedisHA>::namespaced(stage.client.clone(), &stage.namespace)
        .patch(
            ROLLING,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"config": {"maxmemory": maxmemory}}})),
        )
        .await
        .with_context(|| format!("changing {ROLLING}'s spec.config"))?;
    poll_until(
        &format!("{ROLLING} rolls to maxmemory {maxmemory}"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { Ok(rolling(stage).await?.then_some(())) },
    )
    .await?;
    eprintln!("{ROLLING}: a roll to maxmemory {maxmemory} is in progress");
    Ok(())
}

/// Whether the rolling RedisHA has a Redis Pod not of its StatefulSet's update revision.
async fn rolling(stage: &Stage<'_>) -> anyhow::Result<bool> {
    let selector = component_selector(ROLLING, COMPONENT_REDIS)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = ListParams::default().labels(&selector);
    let stateful_sets = Api::<StatefulSet>::namespaced(stage.client.clone(), &stage.namespace)
        .list(&list)
        .await?;
    let Some(update_revision) = stateful_sets
        .items
        .first()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.update_revision.clone())
    else {
        return Ok(false);
    };
    let pods = Api::<Pod>::namespaced(stage.client.clone(), &stage.namespace)
        .list(&list)
        .await?;
    Ok(pods
        .items
        .iter()
        .any(|pod| pod.labels().get("controller-revision-hash") != Some(&update_revision)))
}

async fn converged(observer: &ConvergenceWatch, what: &str) -> anyhow::Result<Converged> {
    super::redis_ha_failover::converged_within(observer, what, CONVERGE).await
}

/// The p50 (the middle one, as redis-ha-failover reports it) and the max of some durations.
fn p50_max(runs: &[Run], figure: fn(&Run) -> Duration) -> (f64, f64) {
    let mut sorted: Vec<Duration> = runs.iter().map(figure).collect();
    sorted.sort();
    let seconds = |d: Option<&Duration>| d.map_or(f64::NAN, Duration::as_secs_f64);
    (seconds(sorted.get(sorted.len() / 2)), seconds(sorted.last()))
}

/// A figure of each run, and how it is judged.
struct Figure {
    name: &'static str,
    of: fn(&Run) -> Duration,
    /// An absolute goal for each phase's p50 and max.
    goal: Option<Duration>,
    /// Whether loaded / baseline is held to [`RATIO_TARGET`]: the healer's share alone is a few
    /// hundred milliseconds, too small for a ratio to mean much, so it is shown, not judged.
    ratio: bool,
}

const FIGURES: [Figure; 3] = [
    Figure {
        name: "routed after the kill",
        of: |r| r.routed,
        goal: None,
        ratio: true,
    },
    Figure {
        name: "Sentinel promotion → routed (healer's share)",
        of: Run::relabel,
        goal: None,
        ratio: false,
    },
    Figure {
        name: "client outage",
        of: |r| r.outage,
        goal: Some(OUTAGE_GOAL),
        ratio: true,
    },
];

fn result(measured: &Measured) -> ScenarioResult {
    let mut rows = vec![Row::info("RedisHAs in the loaded phase", REDIS_HAS as f64, Unit::Count)];
    for figure in &FIGURES {
        let (baseline_p50, baseline_max) = p50_max(&measured.baseline, figure.of);
        let (loaded_p50, loaded_max) = p50_max(&measured.loaded, figure.of);
        let row = |phase: &str, value: f64| {
            let metric = format!("{}: {phase}", figure.name);
            match figure.goal {
                Some(goal) => Row::at_most(&metric, value, goal.as_secs_f64(), Unit::Seconds),
                None => Row::info(&metric, value, Unit::Seconds),
            }
        };
        rows.extend([
            row("baseline (1 RedisHA) p50", baseline_p50),
            row("baseline (1 RedisHA) max", baseline_max),
            row(&format!("loaded ({REDIS_HAS} RedisHAs) p50"), loaded_p50),
            row(&format!("loaded ({REDIS_HAS} RedisHAs) max"), loaded_max),
        ]);
        if figure.ratio {
            for (statistic, loaded, baseline) in [("p50", loaded_p50, baseline_p50), ("max", loaded_max, baseline_max)]
            {
                rows.push(Row::at_most(
                    &format!("{}: loaded / baseline, {statistic}", figure.name),
                    loaded / baseline,
                    RATIO_TARGET,
                    Unit::Ratio,
                ));
            }
        }
    }
    let probe = &measured.probe;
    let rolling_at_kill = measured
        .loaded
        .iter()
        .filter(|r| r.rolling_at_kill == Some(true))
        .count();
    let rolling_when_routed = measured
        .loaded
        .iter()
        .filter(|r| r.rolling_when_routed == Some(true))
        .count();
    let stopped_at_each_kill = measured.loaded.iter().filter_map(|r| r.stopped).min().unwrap_or(0);
    let refrozen: usize = measured.loaded.iter().map(|r| r.refrozen).sum();
    rows.extend([
        Row::info(
            &format!("setup of the {} other RedisHAs", REDIS_HAS - 1),
            measured.setup.as_secs_f64(),
            Unit::Seconds,
        ),
        Row::at_least(
            "frozen redis-servers stopped at each loaded kill (fewest)",
            stopped_at_each_kill as f64,
            (FROZEN * 3) as f64,
            Unit::Count,
        ),
        Row::at_least(
            "loaded runs with the roll in progress at the kill",
            rolling_at_kill as f64,
            RUNS as f64,
            Unit::Count,
        ),
        Row::info(
            "loaded runs with the roll still in progress when routed",
            rolling_when_routed as f64,
            Unit::Count,
        ),
        Row::info(
            "frozen redis-servers stopped again between runs",
            refrozen as f64,
            Unit::Count,
        ),
        Row::info("acknowledged writes", probe.acknowledged.len() as f64, Unit::Count),
        Row::info("failed or unacknowledged writes", probe.failures as f64, Unit::Count),
        Row::at_most("acknowledged writes lost", measured.lost as f64, 0.0, Unit::Count),
    ]);
    let notes = vec![
        format!(
            "setup: one manager, one namespace; baseline: {MEASURED} alone; loaded: {REDIS_HAS} RedisHAs \
             (3 Redis, 3 Sentinels, a password each) on two local Node objects of one host, created \
             in batches of {BATCH}; every redis-server of {FROZEN} SIGSTOPped throughout the loaded \
             phase (SIGCONT at the end), {ROLLING} rolling (spec.config maxmemory changed before each \
             run); the others idle"
        ),
        format!(
            "each run SIGKILLs {MEASURED}'s master redis-server ({RUNS} runs per phase) and waits for \
             it to converge again; routed: until status.master names another Pod and {MEASURED}-master \
             routes to it alone; healer's share: from the first Sentinel naming the new master until \
             then (polled every 100 ms)"
        ),
        format!(
            "client outage: the longest stretch without an acknowledged write (SET + WAIT 1 through \
             {MEASURED}-master every 100 ms) from the kill to the first write acknowledged after the \
             routing; goal ≤ {} s as in redis-ha-failover",
            OUTAGE_GOAL.as_secs()
        ),
        format!(
            "\"as fast as alone\" is read as loaded ≤ {RATIO_TARGET}× baseline: both are dominated by \
             the Sentinels' down-after and election, and the loaded host runs 120 real processes; a \
             healer held up by the frozen RedisHAs (3 s per call, 60 s per heal) would show several \
             times the baseline"
        ),
    ];
    let runs_json = |runs: &[Run]| {
        runs.iter()
            .map(|r| {
                json!({
                    "old_master": r.old,
                    "new_master": r.new,
                    "sentinel_named_new_master_seconds": r.promoted.as_secs_f64(),
                    "routed_seconds": r.routed.as_secs_f64(),
                    "outage_seconds": r.outage.as_secs_f64(),
                    "rolling_at_kill": r.rolling_at_kill,
                    "rolling_when_routed": r.rolling_when_routed,
                    "frozen_stopped_at_kill": r.stopped,
                    "refrozen": r.refrozen,
                })
            })
            .collect::<Vec<_>>()
    };
    let details = json!({
        "redis_has": REDIS_HAS,
        "frozen": FROZEN,
        "runs_per_phase": RUNS,
        "setup_seconds": measured.setup.as_secs_f64(),
        "baseline": runs_json(&measured.baseline),
        "loaded": runs_json(&measured.loaded),
        "ratio_target": RATIO_TARGET,
        "acknowledged_writes": probe.acknowledged.len(),
        "failed_writes": probe.failures,
        "last_write_error": probe.last_error,
        "acknowledged_writes_lost": measured.lost,
    });
    ScenarioResult {
        rows,
        details,
        notes,
        skipped: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_others_are_the_frozen_the_rolling_and_the_idle() {
        let others = others();
        assert_eq!(others.len(), REDIS_HAS - 1);
        assert!(!others.iter().any(|n| n == MEASURED));
        assert_eq!(frozen_names().len(), FROZEN);
        assert_eq!(others.iter().filter(|n| *n == ROLLING).count(), 1);
        assert!(!frozen_names().iter().any(|n| n == ROLLING));
    }
}
