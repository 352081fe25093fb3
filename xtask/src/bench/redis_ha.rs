//! N RedisHAs, objects only: no local node runs, so their Pods stay Pending and the healer finds
//! no Redis to reach. Measures the control-plane side: the children every RedisHA owns (two
//! StatefulSets, its Services, two ConfigMaps, two PodDisruptionBudgets — policy/v1beta1 on this
//! v1.20 plane) and a status at its generation, by the manager and by the floor; then the
//! manager's writes while idle, though its healer task goes on polling.
use std::{
    borrow::Cow,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use capstan_redis_ha::{
    ChildInputs, Children, Desired, Health, Inputs, RedisHA, desired, names::APP, testing::healer::PASS_INTERVAL,
};
use capstan_runtime::{
    ServedApis, apply, apply_status, compat::PodDisruptionBudgetV1Beta1, controller_owner_ref, labels,
};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, PostParams},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Bench, QUIET_TIMEOUT,
    audit::RequestCounts,
    cpu::PhaseCpu,
    idle_requests, manager_requests,
    report::{Row, ScenarioResult, Unit, cpu_rows},
    start_manager,
    track::{Clock, Condition, Tracker, run_all},
    within,
};

/// Issue 13 states the RedisHA scenario for N = 200: a larger `--n` is capped to this.
pub const MAX_N: usize = 200;
/// The cluster domain the manager renders FQDNs with (its default).
const CLUSTER_DOMAIN: &str = "cluster.local";

/// What the manager did with N RedisHAs.
struct Managed {
    created: Duration,
    converged: Duration,
    cpu: PhaseCpu,
    settled: Duration,
    requests: RequestCounts,
    idle: RequestCounts,
    peak_rss: u64,
    metrics: Vec<String>,
}

/// How many children of each kind one RedisHA owns, from the controller's own builder.
#[derive(Debug, Clone, Copy)]
struct ChildCounts {
    config_maps: usize,
    services: usize,
    stateful_sets: usize,
    pod_disruption_budgets: usize,
}

impl ChildCounts {
    fn of(children: &Children) -> ChildCounts {
        ChildCounts {
            config_maps: children.config_maps.len(),
            services: children.services.len(),
            stateful_sets: children.stateful_sets.len(),
            pod_disruption_budgets: children.pod_disruption_budgets.len(),
        }
    }

    fn total(self) -> usize {
        self.config_maps + self.services + self.stateful_sets + self.pod_disruption_budgets
    }
}

pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioResult> {
    let served = ServedApis::discover(&bench.client)
        .await
        .context("discovering the served API versions")?;
    if served.serves("policy/v1") {
        bail!(
            "this apiserver serves policy/v1: the bench tracks policy/v1beta1 PodDisruptionBudgets (the local v1.20 plane's)"
        );
    }
    // What one RedisHA owns, from an object as the apiserver would return it.
    let mut sample = default_redis_ha(&name(0))?;
    sample.metadata.namespace = Some("bench".to_owned());
    sample.metadata.uid = Some("bench".to_owned());
    let counts = ChildCounts::of(&build(&sample)?.children);
    let managed = with_manager(bench, counts).await?;
    let floor = floor(bench, counts).await?;
    Ok(result(bench, counts, &managed, &floor))
}

async fn with_manager(bench: &Bench<'_>, counts: ChildCounts) -> anyhow::Result<Managed> {
    let n = bench.n;
    let namespace = bench.control_plane.namespace(&bench.client, "bench-redis-ha").await?;
    let manager = start_manager(bench, &namespace, "redis-ha").await?;
    let redis_has = Api::<RedisHA>::namespaced(bench.client.clone(), &namespace);
    let mut progress = Observers::start(&bench.client, &namespace, n, counts).await?;

    eprintln!("creating {n} RedisHAs");
    let phase = bench.manager_phase(&manager)?;
    let clock = Clock::now();
    within(
        "creating the RedisHAs",
        bench.phase_timeout(),
        run_all(n, bench.concurrency, |i| create(&redis_has, i)),
    )
    .await?;
    let created = clock.instant().elapsed();
    let converged = progress.converged(bench.phase_timeout()).await?;
    let cpu = phase.finish()?;
    eprintln!("converged after {:.2}s", clock.secs_until(converged));
    // The controller-manager goes on making each StatefulSet's Pods (Pending: no node); the
    // healer and the reconcile see them. Only once that is over is the system idle.
    let rolled = progress
        .stateful_sets
        .reached(1, "StatefulSets with their Pods created", bench.settle_timeout())
        .await?;
    let settled = rolled.max(converged);
    eprintln!("settled after {:.2}s", clock.secs_until(settled));
    progress.stop();
    let quiet = manager.wait_quiet(QUIET_TIMEOUT).await.max(settled);

    let idle = idle_requests(bench).await?;
    let requests = manager_requests(bench, &clock, quiet)?;
    let managed = Managed {
        created,
        converged: converged - clock.instant(),
        cpu,
        settled: settled - clock.instant(),
        requests,
        idle,
        peak_rss: manager.peak_rss_bytes()?,
        metrics: manager.metrics_excerpt().await,
    };
    manager.stop();
    Ok(managed)
}

/// The bench's watches on what converges: RedisHA statuses at their generation, and each kind
/// of child (StatefulSets also: 1, their Pods created).
struct Observers {
    redis_has: Tracker,
    stateful_sets: Tracker,
    services: Tracker,
    config_maps: Tracker,
    pod_disruption_budgets: Tracker,
}

impl Observers {
    async fn start(client: &Client, namespace: &str, n: usize, counts: ChildCounts) -> anyhow::Result<Observers> {
        let redis_has: Vec<Condition<RedisHA>> = vec![Box::new(status_observed)];
        let stateful_sets: Vec<Condition<StatefulSet>> = vec![Box::new(owned), Box::new(pods_created)];
        let services: Vec<Condition<Service>> = vec![Box::new(owned)];
        let config_maps: Vec<Condition<ConfigMap>> = vec![Box::new(owned)];
        let pdbs: Vec<Condition<PdbV1beta1>> = vec![Box::new(owned)];
        Ok(Observers {
            redis_has: Tracker::start("RedisHAs", Api::namespaced(client.clone(), namespace), n, redis_has).await?,
            stateful_sets: Tracker::start(
                "StatefulSets",
                Api::namespaced(client.clone(), namespace),
                n * counts.stateful_sets,
                stateful_sets,
            )
            .await?,
            services: Tracker::start(
                "Services",
                Api::namespaced(client.clone(), namespace),
                n * counts.services,
                services,
            )
            .await?,
            config_maps: Tracker::start(
                "ConfigMaps",
                Api::namespaced(client.clone(), namespace),
                n * counts.config_maps,
                config_maps,
            )
            .await?,
            pod_disruption_budgets: Tracker::start(
                "PodDisruptionBudgets",
                Api::namespaced(client.clone(), namespace),
                n * counts.pod_disruption_budgets,
                pdbs,
            )
            .await?,
        })
    }

    /// When every child existed and every status had observed its generation.
    async fn converged(&mut self, limit: Duration) -> anyhow::Result<Instant> {
        let statuses = self.redis_has.reached(0, "statuses at their generation", limit).await?;
        let sets = self.stateful_sets.reached(0, "StatefulSets", limit).await?;
        let services = self.services.reached(0, "Services", limit).await?;
        let config_maps = self.config_maps.reached(0, "ConfigMaps", limit).await?;
        let pdbs = self
            .pod_disruption_budgets
            .reached(0, "PodDisruptionBudgets", limit)
            .await?;
        Ok(statuses.max(sets).max(services).max(config_maps).max(pdbs))
    }

    fn stop(self) {
        self.redis_has.stop();
        self.stateful_sets.stop();
        self.services.stop();
        self.config_maps.stop();
        self.pod_disruption_budgets.stop();
    }
}

/// A policy/v1beta1 PodDisruptionBudget's metadata: k8s-openapi 0.29 has no type for that
/// version, and the bench only counts them.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct PdbV1beta1 {
    metadata: ObjectMeta,
}

impl Resource for PdbV1beta1 {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "PodDisruptionBudget".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "policy".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1beta1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "poddisruptionbudgets".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A child of some RedisHA (the fresh namespace holds nothing else of this app; a namespace's
/// own `kube-root-ca.crt` ConfigMap does not count).
fn owned<K: Resource>(object: &K) -> bool {
    object.labels().get(labels::NAME).map(String::as_str) == Some(APP)
}

/// The controller-manager has made the set's Pods and said so in its status.
fn pods_created(set: &StatefulSet) -> bool {
    let status = set.status.as_ref();
    owned(set)
        && status.and_then(|s| s.observed_generation) == set.metadata.generation
        && status.map(|s| s.replicas) == set.spec.replicas
}

fn status_observed(rha: &RedisHA) -> bool {
    rha.status.as_ref().and_then(|s| s.observed_generation) == rha.metadata.generation
}

fn name(i: usize) -> String {
    format!("rha-{i:05}")
}

/// A RedisHA with the schema's defaults: 3 Redis, 3 Sentinels, no auth, no storage.
fn default_redis_ha(name: &str) -> anyhow::Result<RedisHA> {
    serde_json::from_value(json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "RedisHA",
        "metadata": {"name": name}, "spec": {}
    }))
    .context("a default RedisHA")
}

async fn create(redis_has: &Api<RedisHA>, i: usize) -> anyhow::Result<RedisHA> {
    let name = name(i);
    redis_has
        .create(&PostParams::default(), &default_redis_ha(&name)?)
        .await
        .with_context(|| format!("creating RedisHA {name}"))
}

/// The children and first status the manager builds for `rha` (no Pod ready yet), with the
/// controller's own pure step.
fn build(rha: &RedisHA) -> anyhow::Result<Desired> {
    let owner = controller_owner_ref(rha).context("the owner reference")?;
    let inputs = Inputs {
        children: ChildInputs {
            owner: &owner,
            cluster_domain: CLUSTER_DOMAIN,
            auth_hash: None,
            sentinel_auth_hash: None,
            redis_replicas: rha.spec.replicas,
            recorded_master: None,
        },
        health: Health::default(),
        now: Timestamp::now(),
    };
    desired(rha, &inputs).context("building the children")
}

/// What the floor took for the same work.
struct Floor {
    took: Duration,
    cpu: PhaseCpu,
}

/// The same creates, child applies and status applies as the manager's, sent by one client with
/// the same concurrency, in a namespace no manager watches.
async fn floor(bench: &Bench<'_>, counts: ChildCounts) -> anyhow::Result<Floor> {
    let namespace = bench
        .control_plane
        .namespace(&bench.client, "bench-redis-ha-floor")
        .await?;
    let redis_has = Api::<RedisHA>::namespaced(bench.client.clone(), &namespace);
    // The same watches as on the manager's run, though nothing waits on them: every write costs
    // the apiserver a watch event per watcher, and that cost must not count against the manager.
    let observers = Observers::start(&bench.client, &namespace, bench.n, counts).await?;
    eprintln!(
        "floor: {} × (create, apply {} children, apply status)",
        bench.n,
        counts.total()
    );
    let phase = bench.floor_phase()?;
    let started = Instant::now();
    within(
        "the floor",
        bench.phase_timeout(),
        run_all(bench.n, bench.concurrency, |i| {
            floor_one(&bench.client, &redis_has, &namespace, i)
        }),
    )
    .await?;
    let took = started.elapsed();
    let cpu = phase.finish()?;
    observers.stop();
    eprintln!("floor took {:.2}s", took.as_secs_f64());
    let sets = Api::<StatefulSet>::namespaced(bench.client.clone(), &namespace);
    let want = bench.n * counts.stateful_sets;
    bench
        .settle_after_floor(
            "the controller-manager is done with the floor's StatefulSets",
            || async {
                let list = sets.list(&ListParams::default()).await?;
                Ok(list.items.len() == want && list.items.iter().all(pods_created))
            },
        )
        .await?;
    Ok(Floor { took, cpu })
}

/// Exactly the writes the manager makes for a new RedisHA: the same builders, the same apply
/// functions, nothing cached to compare with (and none of the manager's reads).
async fn floor_one(client: &Client, redis_has: &Api<RedisHA>, namespace: &str, i: usize) -> anyhow::Result<()> {
    let created = create(redis_has, i).await?;
    let Desired { children, status } = build(&created)?;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    for config_map in &children.config_maps {
        apply(&config_maps, config_map, None).await?;
    }
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    for service in &children.services {
        apply(&services, service, None).await?;
    }
    let sets = Api::<StatefulSet>::namespaced(client.clone(), namespace);
    for set in &children.stateful_sets {
        apply(&sets, set, None).await?;
    }
    let pdbs = Api::<PodDisruptionBudgetV1Beta1>::namespaced(client.clone(), namespace);
    for pdb in &children.pod_disruption_budgets {
        apply(&pdbs, &PodDisruptionBudgetV1Beta1::from(pdb.clone()), None).await?;
    }
    apply_status(redis_has, &created, None, &status).await?;
    Ok(())
}

fn result(bench: &Bench<'_>, counts: ChildCounts, managed: &Managed, floor: &Floor) -> ScenarioResult {
    let n = bench.n;
    let per_object = |count: usize| count as f64 / n as f64;
    let requests = &managed.requests;
    let converged = managed.converged.as_secs_f64();
    let floor_took = floor.took.as_secs_f64();
    // Per object the floor sends its children's applies and one status apply (and the create,
    // which the manager does not send).
    let floor_writes = (counts.total() + 1) as f64;
    let manager_writes = per_object(requests.writes() - requests.writes_to("events"));
    let idle = format!("writes while idle ({})", humantime::format_duration(bench.idle));
    let mut rows = vec![
        Row::info("RedisHAs (3 Redis, 3 Sentinels each)", n as f64, Unit::Count),
        Row::info("converge (create → children + statuses)", converged, Unit::Seconds),
        Row::info("floor (create + child applies + status)", floor_took, Unit::Seconds),
        Row::info("converge / floor", converged / floor_took, Unit::Ratio),
    ];
    rows.extend(cpu_rows("converge", managed.cpu, floor.cpu));
    rows.extend([
        Row::at_most(
            "ConfigMap applies",
            per_object(requests.writes_to("configmaps")),
            counts.config_maps as f64,
            Unit::PerObject,
        ),
        Row::at_most(
            "Service applies",
            per_object(requests.writes_to("services")),
            counts.services as f64,
            Unit::PerObject,
        ),
        Row::at_most(
            "StatefulSet applies",
            per_object(requests.writes_to("statefulsets")),
            counts.stateful_sets as f64,
            Unit::PerObject,
        ),
        Row::at_most(
            "PodDisruptionBudget applies (v1beta1)",
            per_object(requests.writes_to("poddisruptionbudgets")),
            counts.pod_disruption_budgets as f64,
            Unit::PerObject,
        ),
        Row::at_most(
            "status writes",
            per_object(requests.writes_to("redishas/status")),
            2.0,
            Unit::PerObject,
        ),
        Row::info(
            "Event writes",
            per_object(requests.writes_to("events")),
            Unit::PerObject,
        ),
        // The floor's status is one apply; the manager may write a second once the
        // StatefulSets report (as Memcached's target allows).
        Row::at_most(
            "manager writes (Events aside)",
            manager_writes,
            floor_writes + 1.0,
            Unit::PerObject,
        ),
        Row::info("floor writes (create aside)", floor_writes, Unit::PerObject),
        Row::info("reads", per_object(requests.reads()), Unit::PerObject),
        // Issue 13: no more requests per object than the children need — the floor's, plus the
        // second status write allowed above.
        Row::at_most(
            "all manager requests",
            per_object(requests.total()),
            floor_writes + 1.0,
            Unit::PerObject,
        ),
        Row::info(
            "settled (StatefulSets' Pods created)",
            managed.settled.as_secs_f64(),
            Unit::Seconds,
        ),
        Row::at_most(&idle, managed.idle.writes() as f64, 0.0, Unit::Count),
        Row::info("reads while idle", managed.idle.reads() as f64, Unit::Count),
        Row::below(
            "peak RSS (VmHWM)",
            managed.peak_rss as f64 / (1024.0 * 1024.0),
            64.0,
            Unit::Megabytes,
        ),
    ]);
    let notes = vec![format!(
        "idle: the healer task polls every {}s all the while; with no local node the Pods stay \
         Pending without IPs, so it has no Redis to reach, and the target is zero writes anyway",
        PASS_INTERVAL.as_secs()
    )];
    let details = json!({
        "n": n,
        "children_per_object": {
            "config_maps": counts.config_maps,
            "services": counts.services,
            "stateful_sets": counts.stateful_sets,
            "pod_disruption_budgets": counts.pod_disruption_budgets,
        },
        "created_seconds": managed.created.as_secs_f64(),
        "converged_seconds": converged,
        "settled_seconds": managed.settled.as_secs_f64(),
        "floor_seconds": floor_took,
        "manager_requests_until_quiet": requests.by_kind,
        "manager_requests_per_object": requests.per_object(n),
        "manager_requests_while_idle": managed.idle.by_kind,
        "peak_rss_bytes": managed.peak_rss,
        "manager_metrics": managed.metrics,
    });
    eprintln!("manager requests until quiet: {}", requests.describe());
    eprintln!("manager requests while idle: {}", managed.idle.describe());
    ScenarioResult {
        rows,
        details,
        notes,
        skipped: None,
    }
}
