//! N Foos, each naming a distinct Pod: first their statuses (unhappy), then N Pods and the
//! happiness flips, by the manager and by the floor.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use capstan_foo::{Foo, FooSpec, Inputs, desired};
use capstan_runtime::apply_status;
use k8s_openapi::{
    api::core::v1::{Container, Pod, PodSpec},
    jiff::Timestamp,
};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::json;

use super::{
    Bench, QUIET_TIMEOUT,
    audit::RequestCounts,
    cpu::PhaseCpu,
    idle_requests, manager_requests,
    report::{Percentiles, Row, ScenarioResult, Unit, cpu_rows},
    start_manager,
    track::{Clock, Condition, ObjectWatch, Tracker, run_all},
    within,
};

const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a flip the manager still publishes its Event; let that pass before the next sample.
const AFTER_SAMPLE: Duration = Duration::from_millis(200);

struct Managed {
    converged: Duration,
    flipped: Duration,
    /// CPU until convergence, and from the first Pod until all were happy.
    cpu_converge: PhaseCpu,
    cpu_flip: PhaseCpu,
    converge_requests: RequestCounts,
    flip_requests: RequestCounts,
    idle: RequestCounts,
    latencies: Vec<Duration>,
    peak_rss: u64,
    metrics: Vec<String>,
}

pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioResult> {
    let managed = with_manager(bench).await?;
    let floor = floor(bench).await?;
    Ok(result(bench, &managed, &floor))
}

async fn with_manager(bench: &Bench<'_>) -> anyhow::Result<Managed> {
    let n = bench.n;
    let namespace = bench.control_plane.namespace(&bench.client, "bench-foo").await?;
    let manager = start_manager(bench, &namespace, "foo").await?;
    let foos = Api::<Foo>::namespaced(bench.client.clone(), &namespace);
    let pods = Api::<Pod>::namespaced(bench.client.clone(), &namespace);
    let mut progress = observe(&foos, n).await?;

    eprintln!("creating {n} Foos");
    let phase = bench.manager_phase(&manager)?;
    let clock = Clock::now();
    let limit = bench.phase_timeout();
    within(
        "creating the Foos",
        limit,
        run_all(n, bench.concurrency, |i| create_foo(&foos, i)),
    )
    .await?;
    let converged = progress
        .reached(0, "unhappy statuses at their generation", limit)
        .await?;
    let cpu_converge = phase.finish()?;
    eprintln!("converged after {:.2}s", clock.secs_until(converged));

    eprintln!("creating {n} Pods");
    let phase = bench.manager_phase(&manager)?;
    let pods_clock = Clock::now();
    within(
        "creating the Pods",
        limit,
        run_all(n, bench.concurrency, |i| create_pod(&pods, i)),
    )
    .await?;
    let flipped = progress.reached(1, "happy statuses", limit).await?;
    let cpu_flip = phase.finish()?;
    eprintln!("all happy after {:.2}s", pods_clock.secs_until(flipped));
    progress.stop();
    // The Events of the last flips are published after their status writes.
    let quiet = manager.wait_quiet(QUIET_TIMEOUT).await.max(flipped);

    let idle = idle_requests(bench).await?;
    let converge_requests = manager_requests(bench, &clock, pods_clock.instant())?;
    let flip_requests = manager_requests(bench, &pods_clock, quiet)?;
    let latencies = flip_latency(bench, &foos, &pods, 0).await?;
    let managed = Managed {
        converged: converged - clock.instant(),
        flipped: flipped - pods_clock.instant(),
        cpu_converge,
        cpu_flip,
        converge_requests,
        flip_requests,
        idle,
        latencies,
        peak_rss: manager.peak_rss_bytes()?,
        metrics: manager.metrics_excerpt().await,
    };
    manager.stop();
    Ok(managed)
}

/// The bench's watch on the Foos: condition 0, unhappy at their generation; 1, happy.
async fn observe(foos: &Api<Foo>, n: usize) -> anyhow::Result<Tracker> {
    let conditions: Vec<Condition<Foo>> = vec![Box::new(|foo| observed(foo) && !happy(foo)), Box::new(happy)];
    Tracker::start("Foos", foos.clone(), n, conditions).await
}

fn foo_name(i: usize) -> String {
    format!("foo-{i:05}")
}

fn friend_name(i: usize) -> String {
    format!("friend-{i:05}")
}

fn observed(foo: &Foo) -> bool {
    foo.status.as_ref().and_then(|s| s.observed_generation) == foo.metadata.generation
}

fn happy(foo: &Foo) -> bool {
    observed(foo) && foo.status.as_ref().is_some_and(|s| s.happy)
}

async fn create_foo(foos: &Api<Foo>, i: usize) -> anyhow::Result<(usize, Foo)> {
    let foo = Foo::new(&foo_name(i), FooSpec { name: friend_name(i) });
    let created = foos
        .create(&PostParams::default(), &foo)
        .await
        .with_context(|| format!("creating Foo {}", foo_name(i)))?;
    Ok((i, created))
}

/// A Pod nobody runs (no kubelet): it stays Pending, and only its name matters.
async fn create_pod(pods: &Api<Pod>, i: usize) -> anyhow::Result<()> {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(friend_name(i)),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "friend".to_owned(),
                image: Some("busybox".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating Pod {}", friend_name(i)))?;
    Ok(())
}

/// From the response to a Pod delete (or create) to the watch event showing its Foo unhappy
/// (or happy), alternating on one Foo.
async fn flip_latency(bench: &Bench<'_>, foos: &Api<Foo>, pods: &Api<Pod>, i: usize) -> anyhow::Result<Vec<Duration>> {
    let name = foo_name(i);
    eprintln!("{} single-flip samples on {name}", bench.samples);
    let mut watch = ObjectWatch::start(foos.clone(), &name).await?;
    // An unscheduled Pod is deleted at once, without a grace period; say so anyway.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let mut samples = Vec::with_capacity(bench.samples);
    for sample in 0..bench.samples {
        // The Pod exists before the first sample, so even samples delete it.
        let want_happy = sample % 2 == 1;
        watch.drain();
        if want_happy {
            create_pod(pods, i).await?;
        } else {
            pods.delete(&friend_name(i), &now)
                .await
                .with_context(|| format!("deleting Pod {}", friend_name(i)))?;
        }
        let answered = Instant::now();
        let seen = watch
            .arrival(|foo| happy(foo) == want_happy, SAMPLE_TIMEOUT)
            .await
            .with_context(|| format!("sample {sample}: {name} never turned happy={want_happy}"))?;
        samples.push(seen.saturating_duration_since(answered));
        tokio::time::sleep(AFTER_SAMPLE).await;
    }
    Ok(samples)
}

struct Floor {
    converge: Duration,
    flip: Duration,
    cpu_converge: PhaseCpu,
    cpu_flip: PhaseCpu,
}

/// The same Foo creates and status applies, then the same Pod creates and status applies, sent
/// by one client with the same concurrency, in a namespace no manager watches.
async fn floor(bench: &Bench<'_>) -> anyhow::Result<Floor> {
    let namespace = bench.control_plane.namespace(&bench.client, "bench-foo-floor").await?;
    let foos = Api::<Foo>::namespaced(bench.client.clone(), &namespace);
    let pods = Api::<Pod>::namespaced(bench.client.clone(), &namespace);
    let limit = bench.phase_timeout();

    let (foos, pods) = (&foos, &pods);
    // The same watch as on the manager's run, though nothing waits on it: every write costs the
    // apiserver a watch event per watcher, and that cost must not count against the manager.
    let observer = observe(foos, bench.n).await?;

    eprintln!("floor: {} × (create Foo, apply status)", bench.n);
    let phase = bench.floor_phase()?;
    let started = Instant::now();
    let created: BTreeMap<usize, Foo> = within(
        "the floor's Foos",
        limit,
        run_all(bench.n, bench.concurrency, |i| async move {
            let (i, foo) = create_foo(foos, i).await?;
            let inputs = Inputs {
                friend_exists: false,
                now: Timestamp::now(),
            };
            apply_status(foos, &foo, None, &desired(&foo, &inputs).status).await?;
            Ok((i, foo))
        }),
    )
    .await?
    .into_iter()
    .collect();
    let converge = started.elapsed();
    let cpu_converge = phase.finish()?;

    eprintln!("floor: {} × (create Pod, apply status)", bench.n);
    let phase = bench.floor_phase()?;
    let started = Instant::now();
    within(
        "the floor's Pods",
        limit,
        run_all(bench.n, bench.concurrency, |i| {
            let foo = created.get(&i);
            async move {
                let foo = foo.context("every Foo was created")?;
                create_pod(pods, i).await?;
                let inputs = Inputs {
                    friend_exists: true,
                    now: Timestamp::now(),
                };
                apply_status(foos, foo, None, &desired(foo, &inputs).status).await?;
                Ok(())
            }
        }),
    )
    .await?;
    let flip = started.elapsed();
    let cpu_flip = phase.finish()?;
    observer.stop();
    eprintln!(
        "floor took {:.2}s (statuses) and {:.2}s (flips)",
        converge.as_secs_f64(),
        flip.as_secs_f64()
    );
    Ok(Floor {
        converge,
        flip,
        cpu_converge,
        cpu_flip,
    })
}

fn result(bench: &Bench<'_>, managed: &Managed, floor: &Floor) -> ScenarioResult {
    let n = bench.n;
    let per_object = |count: usize| count as f64 / n as f64;
    let mut requests = managed.converge_requests.clone();
    for (kind, count) in &managed.flip_requests.by_kind {
        *requests.by_kind.entry(kind.clone()).or_default() += count;
    }
    let latency = Percentiles::of(&managed.latencies);
    let converged = managed.converged.as_secs_f64();
    let flipped = managed.flipped.as_secs_f64();
    let idle = format!("writes while idle ({})", humantime::format_duration(bench.idle));
    let mut rows = vec![
        Row::info("converge (create → unhappy statuses)", converged, Unit::Seconds),
        Row::info(
            "floor (create + status apply)",
            floor.converge.as_secs_f64(),
            Unit::Seconds,
        ),
        Row::at_most(
            "converge / floor",
            converged / floor.converge.as_secs_f64(),
            1.5,
            Unit::Ratio,
        ),
    ];
    rows.extend(cpu_rows("converge", managed.cpu_converge, floor.cpu_converge));
    rows.extend([
        Row::info("flip (create Pods → all happy)", flipped, Unit::Seconds),
        Row::info(
            "floor (Pod create + status apply)",
            floor.flip.as_secs_f64(),
            Unit::Seconds,
        ),
        Row::at_most("flip / floor", flipped / floor.flip.as_secs_f64(), 1.5, Unit::Ratio),
    ]);
    rows.extend(cpu_rows("flip", managed.cpu_flip, floor.cpu_flip));
    rows.extend([
        // One status per state the Foo goes through (unhappy, then happy): the Memcached
        // target's reasoning applied to Foo.
        Row::at_most(
            "status writes",
            per_object(requests.writes_to("foos/status")),
            2.0,
            Unit::PerObject,
        ),
        Row::info(
            "Event writes",
            per_object(requests.writes_to("events")),
            Unit::PerObject,
        ),
        Row::info("reads", per_object(requests.reads()), Unit::PerObject),
        Row::info("all manager requests", per_object(requests.total()), Unit::PerObject),
        Row::at_most(&idle, managed.idle.writes() as f64, 0.0, Unit::Count),
        Row::below(
            "peak RSS (VmHWM)",
            managed.peak_rss as f64 / (1024.0 * 1024.0),
            64.0,
            Unit::Megabytes,
        ),
        Row::info("single-flip latency p50", latency.p50, Unit::Millis),
        Row::below("single-flip latency p99", latency.p99, 100.0, Unit::Millis),
        Row::info("single-flip latency max", latency.max, Unit::Millis),
    ]);
    let details = json!({
        "converged_seconds": converged,
        "flipped_seconds": flipped,
        "floor_converge_seconds": floor.converge.as_secs_f64(),
        "floor_flip_seconds": floor.flip.as_secs_f64(),
        "manager_requests_until_pods_created": managed.converge_requests.by_kind,
        "manager_requests_until_quiet_after_pods": managed.flip_requests.by_kind,
        "manager_requests_per_object": requests.per_object(n),
        "manager_requests_while_idle": managed.idle.by_kind,
        "latency_ms": managed.latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
        "peak_rss_bytes": managed.peak_rss,
        "manager_metrics": managed.metrics,
    });
    eprintln!(
        "manager requests: until converged {}; until all happy {}",
        managed.converge_requests.describe(),
        managed.flip_requests.describe()
    );
    ScenarioResult {
        rows,
        details,
        notes: Vec::new(),
        skipped: None,
    }
}
