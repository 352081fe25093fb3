//! The release `capstan-manager` as a child process, as it runs in production: its own process,
//! so its memory is its own and its requests carry its own user agent.
use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use capstan_testenv::{http_get, manager_process};

const ADMIN_LINE_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long no reconcile may finish before the manager counts as quiet.
const QUIET_FOR: Duration = Duration::from_secs(1);

pub struct ManagerProcess {
    process: manager_process::ManagerProcess,
    health: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
}

impl ManagerProcess {
    /// Starts `capstan-manager run` scoped to `namespace`, its log going to `log`, and returns once
    /// it has reported its admin addresses.
    pub fn start(
        binary: &Path,
        kubeconfig: &Path,
        namespace: &str,
        concurrency: usize,
        log: &Path,
    ) -> anyhow::Result<ManagerProcess> {
        if !binary.is_file() {
            bail!("no manager binary at {}", binary.display());
        }
        let concurrency = concurrency.to_string();
        let process = manager_process::ManagerProcess::start(
            binary,
            kubeconfig,
            &["--namespace", namespace, "--concurrency", &concurrency],
            manager_process::Log::File(log.to_path_buf()),
            ADMIN_LINE_TIMEOUT,
        )
        .with_context(|| format!("starting {}", binary.display()))?;
        let manager = ManagerProcess {
            health: process.health,
            metrics: process.metrics,
            process,
            log: log.to_path_buf(),
        };
        eprintln!(
            "started capstan-manager (pid {}) in {namespace}, log {}",
            manager.pid(),
            log.display()
        );
        Ok(manager)
    }

    /// Waits until `/readyz` answers 200: the CRDs are served and every cache has listed.
    pub async fn wait_ready(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(self.health, "/readyz").await {
                return Ok(started.elapsed());
            }
            if let Some(status) = self.process.exited() {
                bail!("the manager exited ({status}); see {}", self.log.display());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "the manager was not ready within {}s; see {}",
                    READY_TIMEOUT.as_secs(),
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The manager's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no VmHWM in {path}"))?;
        Ok(kib * 1024)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The capstan and reconcile-count series of `/metrics`, for the JSON report.
    pub async fn metrics_excerpt(&self) -> Vec<String> {
        let Ok((_, body)) = http_get(self.metrics, "/metrics").await else {
            return Vec::new();
        };
        body.lines()
            .filter(|l| l.starts_with("capstan_") || l.starts_with("controller_runtime_reconcile_total"))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until no reconcile runs and none has finished for [`QUIET_FOR`]: the work a burst set
    /// off (e.g. the Event published after a status write) is over, and what follows is idleness.
    /// Returns when that quiet began; after `limit`, returns anyway (with a warning) and lets the
    /// idle window show what keeps the manager busy.
    pub async fn wait_quiet(&self, limit: Duration) -> Instant {
        let started = Instant::now();
        let mut last = (f64::NAN, Instant::now());
        loop {
            let now = Instant::now();
            if let Some((reconciles, active)) = self.reconcile_counters().await {
                if reconciles != last.0 || active > 0.0 {
                    last = (reconciles, now);
                } else if now - last.1 >= QUIET_FOR {
                    return last.1;
                }
            }
            if started.elapsed() > limit {
                eprintln!(
                    "warning: the manager kept reconciling for {}s; measuring idleness anyway",
                    limit.as_secs()
                );
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reconciles finished so far and reconciles running now, over all controllers.
    async fn reconcile_counters(&self) -> Option<(f64, f64)> {
        let (_, body) = http_get(self.metrics, "/metrics").await.ok()?;
        let sum = |name: &str| -> f64 {
            body.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Some((
            sum("controller_runtime_reconcile_total{"),
            sum("controller_runtime_active_workers{"),
        ))
    }

    /// SIGTERM, up to 20 s to drain, then SIGKILL.
    pub fn stop(mut self) {
        let _ = self.process.terminate(STOP_GRACE);
    }
}
