//! RedisHA failover as a client sees it: one RedisHA (3 Redis, 3 Sentinels, a password) on the
//! local node, with Debian's real `redis-server` and `redis-sentinel`, and a client writing
//! `SET` + `WAIT 1` through `<name>-master` every 100 ms ([`WriteProbe`]). Each fault — the
//! master Pod deleted, the master's redis-server SIGKILLed, its network cut, it frozen (SIGSTOP)
//! for 12 s — runs `--failover-runs` times (20 by default); each run waits for the RedisHA to
//! converge again ([`ConvergenceWatch`], the same checks as the failover test). The p50 and max outage
//! per fault are printed against the goals, which are reported, not asserted.
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use capstan_localnode::{LocalNode, LocalNodeConfig};
use capstan_redis_ha::{
    RedisHA,
    testing::{Converged, ConvergenceWatch, ProbeLog, WriteProbe, count_existing},
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use tokio::time::Instant;

use super::{
    Bench,
    report::{Row, ScenarioResult, Unit},
    start_manager,
    track::poll_until,
};

/// The scenario's name in `--scenarios`; it belongs to the `redis-ha` controller.
pub const SCENARIO: &str = "redis-ha-failover";
const NAME: &str = "bench-ha";
const PASSWORD: &str = "s3cret-for-the-failover-bench";
const CLUSTER_DOMAIN: &str = "cluster.local";
/// How long the frozen-master fault holds the master's redis-server stopped: past down-after,
/// so the Sentinels fail over, and it comes back a stale master they must convert.
const FROZEN_FOR: Duration = Duration::from_secs(12);
/// Bootstrap, and each fault, must converge within this (a shared 2-core machine).
const CONVERGE: Duration = Duration::from_secs(240);
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Bounds the probe: about 50 minutes at one write per 100 ms, far more than the scenario takes.
const MAX_WRITES: u64 = 30_000;
/// How often the bench looks for the new master behind the master Service.
const ROUTED_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    PodDeleted,
    ProcessKilled,
    NetworkCut,
    Frozen,
}

impl Fault {
    const ALL: [Fault; 4] = [
        Fault::PodDeleted,
        Fault::ProcessKilled,
        Fault::NetworkCut,
        Fault::Frozen,
    ];

    fn what(self) -> &'static str {
        match self {
            Fault::PodDeleted => "master Pod deleted",
            Fault::ProcessKilled => "master redis-server SIGKILLed",
            Fault::NetworkCut => "master network cut",
            Fault::Frozen => "master frozen 12 s (SIGSTOP)",
        }
    }

    /// The outage goal: the deleted master's preStop hands over before the process stops;
    /// a killed or cut-off master waits for the Sentinels to notice.
    fn goal(self) -> Duration {
        match self {
            Fault::PodDeleted => Duration::from_secs(2),
            Fault::ProcessKilled | Fault::NetworkCut | Fault::Frozen => Duration::from_secs(10),
        }
    }
}

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
    // A SIGKILLed redis-server restarts after the kubelet's back-off; seconds, as in the tests.
    config.backoff_initial = Duration::from_secs(1);
    eprintln!("starting the local node");
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

/// What the runs measured.
struct Measured {
    outages: Vec<(Fault, Vec<Duration>)>,
    /// Acknowledged writes found missing after each run, by the run that lost them.
    losses: Vec<Loss>,
    probe: ProbeLog,
    lost: usize,
    failovers: u64,
}

/// Acknowledged writes a run lost: found missing once it converged, present after the one before.
struct Loss {
    fault: Fault,
    run: usize,
    keys: Vec<String>,
    /// When each lost write was acknowledged, relative to the fault (negative: before it).
    acknowledged_at: Vec<f64>,
}

async fn with_node(bench: &Bench<'_>, node: &LocalNode) -> anyhow::Result<ScenarioResult> {
    let client = bench.client.clone();
    let namespace = bench
        .control_plane
        .namespace(&client, "bench-redis-ha-failover")
        .await?;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bench-ha-auth"},
        "stringData": {"password": PASSWORD}
    }))?;
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the auth Secret")?;
    let rha: RedisHA = serde_json::from_value(json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "RedisHA", "metadata": {"name": NAME},
        "spec": {"replicas": 3, "sentinel": {"replicas": 3}, "auth": {"secretName": "bench-ha-auth"}}
    }))?;
    Api::<RedisHA>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &rha)
        .await
        .context("creating the RedisHA")?;
    let manager = start_manager(bench, &namespace, SCENARIO).await?;
    let watch = ConvergenceWatch::new(client.clone(), &namespace, NAME, Some(PASSWORD), CLUSTER_DOMAIN);
    let measured = faults(
        &watch,
        node,
        &Api::namespaced(client, &namespace),
        &namespace,
        bench.failover_runs,
    )
    .await;
    manager.stop();
    let measured = measured?;
    if measured.lost > 0 {
        keep_pod_logs(node, &namespace);
    }
    Ok(result(&measured, bench.failover_runs))
}

/// Copies the Redis and Sentinel logs of a run that lost writes out of the local node's state
/// directory, which is removed when the node stops: they say which replica was promoted and why.
fn keep_pod_logs(node: &LocalNode, namespace: &str) {
    let from = node.state_dir().join("logs").join(namespace);
    let to = super::target_dir().join("bench").join("redis-ha-failover-logs");
    let _ = std::fs::remove_dir_all(&to);
    let copied = std::fs::create_dir_all(&to).is_ok()
        && std::process::Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(&to)
            .status()
            .is_ok_and(|status| status.success());
    if copied {
        eprintln!("writes were lost: the Pods' logs are kept in {}", to.display());
    } else {
        eprintln!("warning: could not copy the Pods' logs from {}", from.display());
    }
}

/// The keys among `keys` that `address` does not hold, found by halving: a loss is a few keys
/// among thousands, and `EXISTS` counts a batch in one round trip.
async fn missing_keys(address: std::net::SocketAddr, keys: &[String]) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    let mut pending = vec![keys];
    while let Some(batch) = pending.pop() {
        if batch.is_empty() {
            continue;
        }
        let found = count_existing(address, Some(PASSWORD), batch)
            .await
            .map_err(|e| anyhow!("reading the acknowledged keys back: {e}"))?;
        if found == batch.len() {
            continue;
        }
        if batch.len() == 1 {
            missing.push(batch[0].clone());
            continue;
        }
        let (left, right) = batch.split_at(batch.len() / 2);
        pending.extend([right, left]);
    }
    missing.sort_by_key(|key| key.rsplit(':').next().and_then(|n| n.parse::<u64>().ok()));
    Ok(missing)
}

async fn faults(
    watch: &ConvergenceWatch,
    node: &LocalNode,
    pods: &Api<Pod>,
    namespace: &str,
    runs_per_fault: usize,
) -> anyhow::Result<Measured> {
    let first = converged(watch, "created").await?;
    let mut state = first.clone();
    let master_service = watch.master_service().await.map_err(|e| anyhow!(e))?;
    eprintln!("writing through {master_service} (the master Service) every 100 ms");
    let probe = WriteProbe::start(
        master_service,
        Some(PASSWORD.to_owned()),
        "bench",
        PROBE_INTERVAL,
        MAX_WRITES,
    );
    let mut outages = Vec::new();
    let mut losses = Vec::new();
    let mut lost_so_far: std::collections::BTreeSet<String> = Default::default();
    for fault in Fault::ALL {
        let mut runs = Vec::with_capacity(runs_per_fault);
        for run in 1..=runs_per_fault {
            let what = format!("{} (run {run}/{runs_per_fault})", fault.what());
            acknowledged_after(&probe, Instant::now(), 10, "writes acknowledged before the fault").await?;
            let old = state.master.clone();
            let started = Instant::now();
            inject(fault, node, pods, namespace, &old).await?;
            let routed = poll_until(
                "a new master is behind the master Service",
                CONVERGE,
                ROUTED_POLL,
                || async { Ok(watch.new_master_routed(&old).await.map(|_| Instant::now())) },
            )
            .await
            .with_context(|| what.clone())?;
            let log = acknowledged_after(&probe, routed, 3, "writes acknowledged by the new master").await?;
            // The client's outage ends with its first acknowledged write once the new master is
            // routed (or earlier, when writes came back before the bench saw the routing).
            let back = log.successes.iter().copied().find(|t| *t > routed).unwrap_or(routed);
            let outage = log.longest_outage(started, back);
            match fault {
                Fault::NetworkCut => node
                    .restore_network(namespace, &old)
                    .await
                    .with_context(|| format!("restoring {old}'s network"))?,
                Fault::Frozen => {
                    tokio::time::sleep(FROZEN_FOR.saturating_sub(started.elapsed())).await;
                    node.kill_container(namespace, &old, "redis", 18)
                        .await
                        .with_context(|| format!("SIGCONT to {old}'s redis-server"))?;
                }
                // The kubelet's restart back-off doubles with each kill of the same container
                // (up to 5 min; reset only after 10 min running), and the master takes turns
                // between two Pods: twenty kills in a row would wait minutes for a restart. The
                // killed Pod is recreated once its outage is measured (it is a replica by then).
                Fault::ProcessKilled => {
                    pods.delete(&old, &DeleteParams::default())
                        .await
                        .with_context(|| format!("recreating {old}, killed"))?;
                }
                Fault::PodDeleted => {}
            }
            state = converged(watch, &what).await?;
            let log = probe.snapshot();
            let newly_lost: Vec<String> = missing_keys(master_service, &log.acknowledged)
                .await?
                .into_iter()
                .filter(|key| !lost_so_far.contains(key))
                .collect();
            if !newly_lost.is_empty() {
                let acknowledged_at: Vec<f64> = newly_lost
                    .iter()
                    .filter_map(|key| log.acknowledged.iter().position(|k| k == key))
                    .map(|i| seconds_between(started, log.successes[i]))
                    .collect();
                eprintln!(
                    "{what}: {} acknowledged writes LOST: {} (acknowledged at {:?} s after the fault)",
                    newly_lost.len(),
                    newly_lost.join(" "),
                    acknowledged_at
                );
                lost_so_far.extend(newly_lost.iter().cloned());
                losses.push(Loss {
                    fault,
                    run,
                    keys: newly_lost,
                    acknowledged_at,
                });
            }
            eprintln!(
                "{what}: outage {:.2}s (goal ≤ {}s); master {old} → {}, Sentinel epoch {}",
                outage.as_secs_f64(),
                fault.goal().as_secs(),
                state.master,
                state.epoch
            );
            runs.push(outage);
        }
        outages.push((fault, runs));
    }
    let probe = probe.stop().await;
    let found = count_existing(master_service, Some(PASSWORD), &probe.acknowledged)
        .await
        .map_err(|e| anyhow!("reading the acknowledged keys back: {e}"))?;
    Ok(Measured {
        outages,
        losses,
        lost: probe.acknowledged.len().saturating_sub(found),
        failovers: state.epoch.saturating_sub(first.epoch),
        probe,
    })
}

/// `to - from` in seconds, negative when `to` came first.
fn seconds_between(from: Instant, to: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64()
    } else {
        -from.duration_since(to).as_secs_f64()
    }
}

async fn inject(fault: Fault, node: &LocalNode, pods: &Api<Pod>, namespace: &str, master: &str) -> anyhow::Result<()> {
    match fault {
        Fault::PodDeleted => {
            pods.delete(master, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting the master Pod {master}"))?;
        }
        Fault::ProcessKilled => node
            .kill_container(namespace, master, "redis", 9)
            .await
            .with_context(|| format!("SIGKILLing {master}'s redis-server"))?,
        Fault::NetworkCut => node
            .cut_network(namespace, master)
            .await
            .with_context(|| format!("cutting {master}'s network"))?,
        Fault::Frozen => node
            .kill_container(namespace, master, "redis", 19)
            .await
            .with_context(|| format!("SIGSTOP to {master}'s redis-server"))?,
    }
    Ok(())
}

/// Waits (at most `bound`) until the RedisHA has converged with 3 Redis Pods.
pub(super) async fn converged_within(
    watch: &ConvergenceWatch,
    what: &str,
    bound: Duration,
) -> anyhow::Result<Converged> {
    let started = Instant::now();
    let mut missing = String::new();
    while started.elapsed() < bound {
        match watch.converged(3).await {
            Ok(converged) => {
                eprintln!(
                    "{what}: converged after {:.1}s (master {})",
                    started.elapsed().as_secs_f64(),
                    converged.master
                );
                return Ok(converged);
            }
            Err(now_missing) => missing = now_missing,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{what}: not converged within {}s: {missing}", bound.as_secs())
}

async fn converged(watch: &ConvergenceWatch, what: &str) -> anyhow::Result<Converged> {
    converged_within(watch, what, CONVERGE).await
}

/// Waits until the probe has `count` acknowledged writes completed after `since`.
pub(super) async fn acknowledged_after(
    probe: &WriteProbe,
    since: Instant,
    count: usize,
    what: &str,
) -> anyhow::Result<ProbeLog> {
    poll_until(what, Duration::from_secs(60), Duration::from_millis(100), || async {
        let log = probe.snapshot();
        Ok((log.acknowledged_since(since) >= count).then_some(log))
    })
    .await
    .with_context(|| format!("last write error: {:?}", probe.snapshot().last_error))
}

fn result(measured: &Measured, runs_per_fault: usize) -> ScenarioResult {
    let mut rows = Vec::new();
    for (fault, runs) in &measured.outages {
        let mut sorted = runs.clone();
        sorted.sort();
        let goal = fault.goal().as_secs_f64();
        let statistics = [
            ("min", sorted.first()),
            ("p50", sorted.get(sorted.len() / 2)),
            ("max", sorted.last()),
        ];
        for (statistic, value) in statistics {
            let seconds = value.map_or(f64::NAN, Duration::as_secs_f64);
            let metric = format!("{}: outage {statistic}", fault.what());
            rows.push(Row::at_most(&metric, seconds, goal, Unit::Seconds));
        }
    }
    let probe = &measured.probe;
    rows.extend([
        Row::info(
            "Sentinel failovers (config-epoch)",
            measured.failovers as f64,
            Unit::Count,
        ),
        Row::info("acknowledged writes", probe.acknowledged.len() as f64, Unit::Count),
        Row::info("failed or unacknowledged writes", probe.failures as f64, Unit::Count),
    ]);
    for fault in Fault::ALL {
        let lost: usize = measured
            .losses
            .iter()
            .filter(|loss| loss.fault == fault)
            .map(|loss| loss.keys.len())
            .sum();
        let metric = format!("{}: acknowledged writes lost", fault.what());
        rows.push(Row::at_most(&metric, lost as f64, 0.0, Unit::Count));
    }
    rows.push(Row::at_most(
        "acknowledged writes lost (read back at the end)",
        measured.lost as f64,
        0.0,
        Unit::Count,
    ));
    let notes = vec![
        format!(
            "outage: the longest stretch without an acknowledged write (SET + WAIT 1 through \
             {NAME}-master every 100 ms) from the fault to the first write acknowledged after the \
             new master is routed; {runs_per_fault} runs per fault"
        ),
        "goals are reported, not asserted: ≤ 2 s when the master Pod is deleted \
         (its preStop hands over), ≤ 10 s when its process is killed, its network cut or it is frozen"
            .to_owned(),
        "the cut master's network is restored once the new master takes writes (the failover \
         test holds the cut for 60 s)"
            .to_owned(),
    ];
    let details = json!({
        "outages_seconds": measured
            .outages
            .iter()
            .map(|(fault, runs)| (fault.what(), runs.iter().map(Duration::as_secs_f64).collect::<Vec<_>>()))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "goals_seconds": Fault::ALL
            .iter()
            .map(|fault| (fault.what(), fault.goal().as_secs_f64()))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "acknowledged_writes": probe.acknowledged.len(),
        "failed_writes": probe.failures,
        "last_write_error": probe.last_error,
        "acknowledged_writes_lost": measured.lost,
        "losses": measured
            .losses
            .iter()
            .map(|loss| json!({
                "fault": loss.fault.what(),
                "run": loss.run,
                "keys": loss.keys,
                "acknowledged_at_seconds_after_fault": loss.acknowledged_at,
            }))
            .collect::<Vec<_>>(),
        "sentinel_failovers": measured.failovers,
    });
    ScenarioResult {
        rows,
        details,
        notes,
        skipped: None,
    }
}
