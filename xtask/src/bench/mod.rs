//! `cargo xtask bench`: the manager against the local control plane at scale, side by side with
//! the *floor* — the same requests sent straight from one tuned client — and the targets.
//!
//! Per scenario: a fresh namespace, the release manager scoped to it, N objects created by the
//! bench's own client (user agent `capstan-bench`), convergence seen through watches, the
//! manager's requests read from the apiserver's audit log by user agent, writes during an idle
//! window, single-change latency, and peak RSS. Then the floor in another fresh namespace without
//! a manager. Prints a table and writes JSON to `target/bench/`.

mod audit;
mod cpu;
mod foo;
mod manager;
mod memcached;
mod redis_ha;
mod redis_ha_failover;
mod redis_ha_isolation;
mod report;
mod track;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use capstan_testenv::{ControlPlane, Options};
use kube::Client;

use crate::{cmd, envtest};
use report::{Machine, Report, ScenarioResult};

/// The bench's own user agent, so its requests never count as the manager's.
const BENCH_USER_AGENT: &str = "capstan-bench";
/// Set in the optimized child so it does not re-run itself.
const OPTIMIZED_ENV: &str = "CAPSTAN_BENCH_OPTIMIZED";

/// A scenario is named after the controller it measures, from the manager's controller table,
/// or is one of [`EXTRA_SCENARIOS`] of such a controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario(pub &'static str);

/// Scenarios besides the one named after each controller: (controller, scenario).
const EXTRA_SCENARIOS: &[(&str, &str)] = &[
    ("redis-ha", redis_ha_failover::SCENARIO),
    ("redis-ha", redis_ha_isolation::SCENARIO),
];

/// The scenarios that start a local node, each on a control plane of its own.
const LOCAL_NODE_SCENARIOS: [&str; 2] = [redis_ha_failover::SCENARIO, redis_ha_isolation::SCENARIO];

impl Scenario {
    /// Every scenario, in the controller table's order, each controller's extras after it.
    fn all() -> Vec<Scenario> {
        capstan_manager::CONTROLLERS
            .iter()
            .flat_map(|controller| {
                let extras = EXTRA_SCENARIOS
                    .iter()
                    .filter(move |(owner, _)| *owner == controller.name)
                    .map(|(_, scenario)| *scenario);
                std::iter::once(controller.name).chain(extras)
            })
            .map(Scenario)
            .collect()
    }

    fn parse(name: &str) -> Result<Scenario, String> {
        let all = Scenario::all();
        all.iter().copied().find(|s| s.0 == name).ok_or_else(|| {
            let known: Vec<&str> = all.iter().map(|s| s.0).collect();
            format!("no scenario {name:?}; known: {}", known.join(", "))
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Objects per scenario; `redis-ha` takes at most 200 (its issue's N), so a larger value
    /// runs it with 200.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Requests the bench keeps in flight, and the manager's `--concurrency`.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to count the manager's writes once everything has settled (the target is zero).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Single-change latency samples per scenario.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Scenarios to run, comma-separated (default: all): a controller's name (foo, memcached,
    /// redis-ha), redis-ha-failover or redis-ha-isolation (20 RedisHAs, 5 frozen and one rolling:
    /// one's failover against the same alone), which need root and the local node (each starts one:
    /// run them under `flock /tmp/capstan-localnode.lock`); by default they are skipped, with the
    /// reason, where the local node cannot run.
    #[arg(long, value_delimiter = ',', value_parser = Scenario::parse)]
    scenarios: Vec<Scenario>,
    /// Runs of each fault in redis-ha-failover (issue 24 asks for 20: p50 and max per fault).
    #[arg(long, default_value_t = 20)]
    failover_runs: usize,
}

impl Args {
    /// The scenarios asked for, or all of them.
    fn selected(&self) -> Vec<Scenario> {
        if self.scenarios.is_empty() {
            Scenario::all()
        } else {
            self.scenarios.clone()
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.n == 0 || args.concurrency == 0 || args.failover_runs == 0 {
        bail!("--n, --concurrency and --failover-runs must be at least 1");
    }
    let target = target_dir();
    // The floor is this process's own client: from an unoptimized build it would be slower than
    // the (release) manager and flatter the ratio, so the bench itself runs optimized.
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "capstan-manager"]))?;
    if cfg!(debug_assertions) && std::env::var_os(OPTIMIZED_ENV).is_none() {
        cmd::run(cmd::cargo().args(["build", "--profile", "tooling", "-p", "xtask"]))?;
        let mut optimized = Command::new(target.join("tooling/xtask"));
        optimized.args(std::env::args_os().skip(1)).env(OPTIMIZED_ENV, "1");
        return cmd::run(&mut optimized);
    }
    let manager = target.join("release/capstan-manager");
    envtest::ensure()?;

    let machine = Machine::read();
    eprintln!("==> starting a control plane with the audit log on");
    let control_plane = ControlPlane::start(Options { audit_log: true })?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    let results = runtime.block_on(run_scenarios(&control_plane, &manager, &target, &args));
    drop(runtime);
    eprintln!("==> stopping the control plane");
    drop(control_plane);

    let report = Report::new(machine, &args, started.elapsed(), results);
    report.print_table();
    let written = report.write_json(&target.join("bench"))?;
    eprintln!("wrote {} (and latest.json)", written.display());
    report.into_result()
}

/// Each scenario runs to the end or fails on its own; a failure does not hide the others' results.
async fn run_scenarios(
    control_plane: &ControlPlane,
    manager: &Path,
    target: &Path,
    args: &Args,
) -> Vec<(Scenario, anyhow::Result<ScenarioResult>)> {
    let mut results = Vec::new();
    let setup = async {
        let client = bench_client(control_plane)?;
        control_plane.apply_crds(&client, &capstan_manager::crds()).await?;
        anyhow::Ok(client)
    };
    let client = match setup.await {
        Ok(client) => client,
        Err(error) => {
            for scenario in &args.selected() {
                results.push((*scenario, Err(anyhow::anyhow!("setup failed: {error:#}"))));
            }
            return results;
        }
    };
    let bench = Bench {
        control_plane,
        client,
        manager_binary: manager.to_path_buf(),
        logs: target.join("bench"),
        n: args.n,
        concurrency: args.concurrency,
        idle: args.idle,
        samples: args.samples,
        failover_runs: args.failover_runs,
        measured_after: false,
    };
    let asked = !args.scenarios.is_empty();
    let selected = args.selected();
    for (i, scenario) in selected.iter().enumerate() {
        eprintln!("==> scenario {}", scenario.0);
        // The local node's scenarios run on planes of their own.
        let measured_after = selected[i + 1..]
            .iter()
            .any(|later| !LOCAL_NODE_SCENARIOS.contains(&later.0));
        let bench = Bench {
            measured_after,
            ..bench.clone()
        };
        let result = match scenario.0 {
            "memcached" => memcached::run(&bench).await,
            "foo" => foo::run(&bench).await,
            "redis-ha" => redis_ha::run(&bench.with_at_most(redis_ha::MAX_N)).await,
            redis_ha_failover::SCENARIO | redis_ha_isolation::SCENARIO => {
                local_node_on_its_own_plane(&bench, *scenario, asked).await
            }
            other => Err(anyhow::anyhow!(
                "no bench is written for scenario {other}: add one in xtask/src/bench"
            )),
        };
        if let Err(error) = &result {
            eprintln!("scenario {scenario:?} failed: {error:#}");
        }
        results.push((*scenario, result));
    }
    results
}

/// The failover and isolation scenarios start a local node, and a node runs every Pod of its
/// control plane: the scenarios before them leave thousands of pending Pods (N Memcacheds, N
/// RedisHAs), so each runs on a control plane of its own.
async fn local_node_on_its_own_plane(
    bench: &Bench<'_>,
    scenario: Scenario,
    asked: bool,
) -> anyhow::Result<ScenarioResult> {
    eprintln!("starting a control plane of its own (a local node runs every Pod of its plane)");
    let control_plane = start_own_plane().await?;
    let result = async {
        let own = bench.on(&control_plane, bench.n).await?;
        if scenario.0 == redis_ha_isolation::SCENARIO {
            redis_ha_isolation::run(&own, asked).await
        } else {
            redis_ha_failover::run(&own, asked).await
        }
    }
    .await;
    stop_own_plane(control_plane).await?;
    result
}

/// A control plane besides the shared one, started as that one is (audit log on).
async fn start_own_plane() -> anyhow::Result<ControlPlane> {
    Ok(tokio::task::spawn_blocking(|| ControlPlane::start(Options { audit_log: true })).await??)
}

/// Stops a plane from [`start_own_plane`] (its processes are waited for: off the runtime).
async fn stop_own_plane(control_plane: ControlPlane) -> anyhow::Result<()> {
    Ok(tokio::task::spawn_blocking(move || drop(control_plane)).await?)
}

/// What every scenario needs: the control plane, the bench's client, and the settings.
#[derive(Clone)]
pub struct Bench<'a> {
    control_plane: &'a ControlPlane,
    client: Client,
    manager_binary: PathBuf,
    logs: PathBuf,
    n: usize,
    concurrency: usize,
    idle: Duration,
    samples: usize,
    failover_runs: usize,
    /// Whether a later scenario is measured on this control plane: then the controller-manager
    /// must be done with what this one set off before it ends.
    measured_after: bool,
}

impl<'a> Bench<'a> {
    /// The same bench with at most `n` objects.
    fn with_at_most(&self, n: usize) -> Bench<'a> {
        Bench {
            n: self.n.min(n),
            ..self.clone()
        }
    }

    /// The same bench with `n` objects on another control plane, the CRDs applied there.
    async fn on<'b>(&self, control_plane: &'b ControlPlane, n: usize) -> anyhow::Result<Bench<'b>> {
        let client = bench_client(control_plane)?;
        control_plane.apply_crds(&client, &capstan_manager::crds()).await?;
        Ok(Bench {
            control_plane,
            client,
            manager_binary: self.manager_binary.clone(),
            logs: self.logs.clone(),
            n,
            concurrency: self.concurrency,
            idle: self.idle,
            samples: self.samples,
            failover_runs: self.failover_runs,
            measured_after: false,
        })
    }

    /// After a floor, waits until `done` says the controller-manager has finished what it set
    /// off (its Deployments' or StatefulSets' Pods), if a later scenario is measured here.
    async fn settle_after_floor<F, Fut>(&self, what: &str, mut done: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        if !self.measured_after {
            eprintln!(
                "nothing is measured on this control plane after the floor: not waiting for the controller-manager"
            );
            return Ok(());
        }
        let waiting = Instant::now();
        track::poll_until(what, self.settle_timeout(), Duration::from_secs(2), || {
            let check = done();
            async move { Ok(check.await?.then_some(())) }
        })
        .await?;
        eprintln!(
            "the controller-manager settled {:.2}s after the floor",
            waiting.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// A generous bound for a phase that does N objects' worth of work (the machine is shared).
    fn phase_timeout(&self) -> Duration {
        Duration::from_secs(120) + Duration::from_millis(300) * self.n as u32
    }

    /// The kube-controller-manager works through N Deployments at its default 20 requests/s per
    /// controller, so waiting for it to finish takes longer than our own phases.
    fn settle_timeout(&self) -> Duration {
        Duration::from_secs(180) + Duration::from_millis(600) * self.n as u32
    }

    fn control_plane_pids(&self) -> [Option<u32>; 3] {
        cpu::COMPONENTS.map(|component| self.control_plane.pid(component))
    }

    /// Starts measuring the CPU of a phase the manager works through (this process only creates
    /// the objects and watches).
    fn manager_phase(&self, manager: &manager::ManagerProcess) -> anyhow::Result<cpu::Phase> {
        cpu::Phase::start(cpu::Processes {
            control_plane: self.control_plane_pids(),
            worker: manager.pid(),
            helpers: vec![std::process::id()],
        })
    }

    /// Starts measuring the CPU of a floor phase, which this process works through.
    fn floor_phase(&self) -> anyhow::Result<cpu::Phase> {
        cpu::Phase::start(cpu::Processes {
            control_plane: self.control_plane_pids(),
            worker: std::process::id(),
            helpers: Vec::new(),
        })
    }

    fn audit_log(&self) -> anyhow::Result<&Path> {
        self.control_plane
            .audit_log_path()
            .context("the control plane was started without an audit log")
    }
}

/// One kube client with its own user agent; kube speaks HTTP/1.1 and pools a connection per
/// request in flight, as the manager's client does.
fn bench_client(control_plane: &ControlPlane) -> anyhow::Result<Client> {
    let mut config = control_plane.kube_config();
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(BENCH_USER_AGENT),
    ));
    Ok(Client::try_from(config)?)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"))
}

/// Runs `phase`, failing with `what` if it takes longer than `limit`.
async fn within<T>(what: &str, limit: Duration, phase: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, phase).await {
        Ok(result) => result.with_context(|| format!("{what} failed")),
        Err(_) => bail!("{what} did not finish within {}", humantime::format_duration(limit)),
    }
}

/// How long the manager may go on reconciling after the measured end of a burst.
const QUIET_TIMEOUT: Duration = Duration::from_secs(30);

/// The audit log is written as responses complete; a request answered just now may not be in it
/// yet.
const AUDIT_FLUSH: Duration = Duration::from_secs(1);

/// The manager's requests the apiserver received between two moments.
fn manager_requests(bench: &Bench<'_>, clock: &track::Clock, until: Instant) -> anyhow::Result<audit::RequestCounts> {
    audit::count_requests(
        bench.audit_log()?,
        capstan_manager::USER_AGENT,
        clock.wall(),
        clock.wall_at(until),
    )
}

/// Waits `--idle` with nothing changing and returns what the manager sent meanwhile (only
/// writes matter: reads are what keep a watch alive).
async fn idle_requests(bench: &Bench<'_>) -> anyhow::Result<audit::RequestCounts> {
    eprintln!("idle for {}", humantime::format_duration(bench.idle));
    let clock = track::Clock::now();
    tokio::time::sleep(bench.idle).await;
    let end = Instant::now();
    tokio::time::sleep(AUDIT_FLUSH).await;
    manager_requests(bench, &clock, end)
}

/// Starts the release manager scoped to `namespace` and waits until it is ready.
async fn start_manager(bench: &Bench<'_>, namespace: &str, scenario: &str) -> anyhow::Result<manager::ManagerProcess> {
    let mut manager = manager::ManagerProcess::start(
        &bench.manager_binary,
        bench.control_plane.kubeconfig_path(),
        namespace,
        bench.concurrency,
        &bench.logs.join(format!("manager-{scenario}.log")),
    )?;
    let ready = manager.wait_ready().await?;
    eprintln!("manager ready after {:.2}s", ready.as_secs_f64());
    Ok(manager)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extra_scenario_follows_its_controller_and_parses_by_name() {
        let names: Vec<&str> = Scenario::all().iter().map(|s| s.0).collect();
        let redis_ha = names
            .iter()
            .position(|n| *n == "redis-ha")
            .expect("redis-ha is a scenario");
        assert_eq!(names.get(redis_ha + 1), Some(&redis_ha_failover::SCENARIO));
        assert_eq!(names.get(redis_ha + 2), Some(&redis_ha_isolation::SCENARIO));
        assert_eq!(
            Scenario::parse("redis-ha-isolation"),
            Ok(Scenario("redis-ha-isolation"))
        );
        assert_eq!(Scenario::parse("redis-ha-failover"), Ok(Scenario("redis-ha-failover")));
        assert_eq!(Scenario::parse("foo"), Ok(Scenario("foo")));
        let unknown = Scenario::parse("redis-ha-flood").expect_err("not a scenario");
        assert!(unknown.contains("redis-ha-failover"), "{unknown}");
    }
}
