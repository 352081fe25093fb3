//! The bench's output: a table of targets next to measured values on stdout, and the same plus
//! the details as JSON in `target/bench/`.
use std::{fs, path::Path, path::PathBuf, time::Duration};

use anyhow::Context;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    Args, Scenario,
    cpu::{COMPONENT_LABELS, PhaseCpu},
};

/// How a measured value is shown.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Seconds,
    CpuSeconds,
    Millis,
    Ratio,
    PerObject,
    Count,
    Megabytes,
    PerSecond,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::Seconds => format!("{value:.2} s"),
            Unit::CpuSeconds => format!("{value:.2} CPU s"),
            Unit::Millis => format!("{value:.1} ms"),
            Unit::Ratio => format!("{value:.2}×"),
            Unit::PerObject => format!("{value:.2}/object"),
            Unit::Count => format!("{value:.0}"),
            Unit::Megabytes => format!("{value:.1} MiB"),
            Unit::PerSecond => format!("{value:.1}/s"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::CpuSeconds => "CPU s",
            Unit::Millis => "ms",
            Unit::Ratio => "ratio",
            Unit::PerObject => "per object",
            Unit::Count => "count",
            Unit::Megabytes => "MiB",
            Unit::PerSecond => "per second",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub(super) metric: String,
    pub(super) target: Option<String>,
    pub(super) value: f64,
    unit: Unit,
    pub(super) pass: Option<bool>,
}

impl Row {
    /// A figure with no target, shown for context.
    pub fn info(metric: &str, value: f64, unit: Unit) -> Row {
        Row {
            metric: metric.to_owned(),
            target: None,
            value,
            unit,
            pass: None,
        }
    }

    pub fn at_most(metric: &str, value: f64, limit: f64, unit: Unit) -> Row {
        Row {
            target: Some(format!("≤ {}", unit.format(limit))),
            pass: Some(value <= limit),
            ..Row::info(metric, value, unit)
        }
    }

    pub fn at_least(metric: &str, value: f64, limit: f64, unit: Unit) -> Row {
        Row {
            target: Some(format!("≥ {}", unit.format(limit))),
            pass: Some(value >= limit),
            ..Row::info(metric, value, unit)
        }
    }

    pub fn below(metric: &str, value: f64, limit: f64, unit: Unit) -> Row {
        Row {
            target: Some(format!("< {}", unit.format(limit))),
            pass: Some(value < limit),
            ..Row::info(metric, value, unit)
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "metric": self.metric,
            "target": self.target,
            "value": self.value,
            "unit": self.unit.name(),
            "pass": self.pass,
        })
    }
}

/// Where the CPU went while the manager worked through `phase`, and while the floor did the
/// same work: the ratios hold only if the control plane, not a client, is what limits both, and
/// only if other load on the machine was alike.
pub fn cpu_rows(phase: &str, managed: PhaseCpu, floor: PhaseCpu) -> Vec<Row> {
    let row = |what: &str, value: f64| Row::info(&format!("{phase}: {what}"), value, Unit::CpuSeconds);
    let components = |prefix: &str, cpu: PhaseCpu| {
        COMPONENT_LABELS
            .iter()
            .zip(cpu.components)
            .map(|(component, seconds)| row(&format!("{prefix}control plane: {component}"), seconds))
            .collect::<Vec<_>>()
    };
    let mut rows = vec![
        row("manager CPU", managed.worker),
        row("control plane CPU", managed.control_plane),
    ];
    rows.extend(components("", managed));
    rows.extend([
        row("others' CPU", managed.others),
        row("floor client CPU", floor.worker),
        row("floor control plane CPU", floor.control_plane),
    ]);
    rows.extend(components("floor ", floor));
    rows.push(row("floor others' CPU", floor.others));
    rows
}

/// What one scenario measured: table rows, notes printed under them (how to read the figures),
/// and details for the JSON (request counts, samples). A scenario that could not run here says
/// why in `skipped`.
#[derive(Debug)]
pub struct ScenarioResult {
    pub rows: Vec<Row>,
    pub details: Value,
    pub notes: Vec<String>,
    pub skipped: Option<String>,
}

impl ScenarioResult {
    /// A scenario this machine cannot run (e.g. no local node), and why.
    pub fn skipped(reason: String) -> ScenarioResult {
        ScenarioResult {
            rows: Vec::new(),
            details: json!({ "skipped": reason }),
            notes: Vec::new(),
            skipped: Some(reason),
        }
    }
}

/// Latency percentiles (nearest rank) in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(samples: &[Duration]) -> Percentiles {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| -> f64 {
            if ms.is_empty() {
                return f64::NAN;
            }
            let index = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[index]
        };
        Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            max: rank(1.0),
        }
    }
}

/// The machine the numbers come from: they mean little without it.
#[derive(Debug, Clone)]
pub struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_mb: u64,
    kernel: String,
    load_at_start: String,
}

impl Machine {
    pub fn read() -> Machine {
        let proc_file = |path: &str| fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = proc_file("/proc/cpuinfo");
        let meminfo = proc_file("/proc/meminfo");
        Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            memory_mb: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib / 1024)
                .unwrap_or(0),
            kernel: proc_file("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_at_start: load_average(),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "cpus": self.cpus,
            "cpu_model": self.cpu_model,
            "memory_mb": self.memory_mb,
            "kernel": self.kernel,
            "load_average_at_start": self.load_at_start,
            "load_average_at_end": load_average(),
        })
    }
}

/// The commit measured, and whether the working tree differed from it (read-only git plumbing).
fn revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(crate::cmd::workspace_root())
            .output()
            .ok()
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]).filter(|o| o.status.success()) else {
        return "unknown".to_owned();
    };
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let dirty = git(&["diff-index", "--quiet", "HEAD", "--"]).is_some_and(|o| !o.status.success());
    if dirty {
        format!("{head} with uncommitted changes")
    } else {
        head
    }
}

/// The 1, 5 and 15 minute load averages: this machine is shared, so they say how quiet it was.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub struct Report {
    finished: Timestamp,
    revision: String,
    machine: Machine,
    settings: Value,
    took: Duration,
    scenarios: Vec<(Scenario, anyhow::Result<ScenarioResult>)>,
}

impl Report {
    pub fn new(
        machine: Machine,
        args: &Args,
        took: Duration,
        scenarios: Vec<(Scenario, anyhow::Result<ScenarioResult>)>,
    ) -> Report {
        Report {
            finished: Timestamp::now(),
            revision: revision(),
            machine,
            settings: json!({
                "n": args.n,
                "concurrency": args.concurrency,
                "idle_seconds": args.idle.as_secs_f64(),
                "samples": args.samples,
            }),
            took,
            scenarios,
        }
    }

    pub fn print_table(&self) {
        let m = &self.machine;
        println!();
        println!(
            "capstan bench: n={} concurrency={} on {} CPUs ({}), {} MB, Linux {}, load {} at start; took {}",
            self.settings["n"],
            self.settings["concurrency"],
            m.cpus,
            m.cpu_model,
            m.memory_mb,
            m.kernel,
            m.load_at_start,
            humantime::format_duration(Duration::from_secs(self.took.as_secs()))
        );
        println!("revision {}", self.revision);
        println!();
        println!(
            "{:<17} {:<46} {:>14} {:>16}  ok",
            "scenario", "metric", "target", "measured"
        );
        println!("{}", "-".repeat(101));
        for (scenario, result) in &self.scenarios {
            let name = scenario_name(*scenario);
            match result {
                Ok(ScenarioResult {
                    skipped: Some(reason), ..
                }) => println!("{name:<17} SKIPPED: {reason}"),
                Ok(result) => {
                    for row in &result.rows {
                        let ok = match row.pass {
                            Some(true) => "✓",
                            Some(false) => "✗",
                            None => "",
                        };
                        println!(
                            "{name:<17} {:<46} {:>14} {:>16}  {ok}",
                            row.metric,
                            row.target.as_deref().unwrap_or("—"),
                            row.unit.format(row.value)
                        );
                    }
                    for note in &result.notes {
                        println!("{:<17} note: {note}", "");
                    }
                }
                Err(error) => println!("{name:<17} FAILED: {error:#}"),
            }
        }
        let missed = self.missed();
        println!();
        if missed.is_empty() {
            println!("all targets met");
        } else {
            println!("targets missed: {}", missed.join("; "));
        }
    }

    /// Every target missed; a scenario that failed misses them all (it measured none).
    fn missed(&self) -> Vec<String> {
        self.scenarios
            .iter()
            .flat_map(|(scenario, result)| match result {
                Ok(result) => result
                    .rows
                    .iter()
                    .filter(|row| row.pass == Some(false))
                    .map(|row| format!("{} {}", scenario_name(*scenario), row.metric))
                    .collect::<Vec<_>>(),
                Err(_) => vec![format!("{} (failed: nothing measured)", scenario_name(*scenario))],
            })
            .collect()
    }

    fn to_json(&self) -> Value {
        let scenarios: serde_json::Map<String, Value> = self
            .scenarios
            .iter()
            .map(|(scenario, result)| {
                let value = match result {
                    Ok(result) => json!({
                        "rows": result.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
                        "notes": result.notes,
                        "skipped": result.skipped,
                        "details": result.details,
                    }),
                    Err(error) => json!({ "error": format!("{error:#}") }),
                };
                (scenario_name(*scenario).to_owned(), value)
            })
            .collect();
        json!({
            "finished": self.finished.to_string(),
            "revision": self.revision,
            "took_seconds": self.took.as_secs_f64(),
            "machine": self.machine.to_json(),
            "settings": self.settings,
            "scenarios": scenarios,
            "targets_missed": self.missed(),
        })
    }

    /// Writes `<dir>/<timestamp>.json` and a copy as `<dir>/latest.json`; returns the first.
    pub fn write_json(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let text = serde_json::to_string_pretty(&self.to_json())?;
        let path = dir.join(format!("{}.json", self.finished.strftime("%Y%m%dT%H%M%SZ")));
        fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        let latest = dir.join("latest.json");
        fs::write(&latest, &text).with_context(|| format!("cannot write {}", latest.display()))?;
        Ok(path)
    }

    /// An error when a scenario could not run to the end; missed targets are findings, shown in
    /// the table, not failures of the bench.
    pub fn into_result(self) -> anyhow::Result<()> {
        let failed: Vec<String> = self
            .scenarios
            .iter()
            .filter(|(_, result)| result.is_err())
            .map(|(scenario, _)| scenario_name(*scenario).to_owned())
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("scenario(s) failed: {}", failed.join(", "))
        }
    }
}

fn scenario_name(scenario: Scenario) -> &'static str {
    scenario.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples);
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        let one = Percentiles::of(&[Duration::from_millis(7)]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn a_failed_scenario_misses_its_targets() {
        let met = || ScenarioResult {
            rows: vec![Row::at_most("outage", 1.0, 2.0, Unit::Seconds)],
            details: json!({}),
            notes: Vec::new(),
            skipped: None,
        };
        let report = |failed: bool| Report {
            finished: Timestamp::now(),
            revision: String::new(),
            machine: Machine::read(),
            settings: json!({}),
            took: Duration::ZERO,
            scenarios: vec![
                (Scenario("foo"), Ok(met())),
                (
                    Scenario("redis-ha-failover"),
                    if failed {
                        Err(anyhow::anyhow!("not converged"))
                    } else {
                        Ok(met())
                    },
                ),
            ],
        };
        assert!(report(false).missed().is_empty());
        assert_eq!(report(true).missed(), ["redis-ha-failover (failed: nothing measured)"]);
    }

    #[test]
    fn targets_pass_or_fail_at_their_bound() {
        assert_eq!(Row::at_most("x", 1.5, 1.5, Unit::Ratio).pass, Some(true));
        assert_eq!(Row::below("x", 64.0, 64.0, Unit::Megabytes).pass, Some(false));
        assert_eq!(Row::info("x", 1.0, Unit::Count).pass, None);
    }
}
