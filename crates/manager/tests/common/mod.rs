//! Helpers shared by the manager's integration tests: the real binary as a child process
//! (capstan-testenv's [`manager_process`](capstan_testenv::manager_process)), and the apiserver's
//! audit log read by user agent.
#![allow(dead_code)]
use capstan_testenv::{audit, http_get, manager_process};
use std::{net::SocketAddr, path::Path, time::Duration};

/// A `capstan-manager run` child process.
pub struct ManagerProcess {
    inner: manager_process::ManagerProcess,
    pub metrics: SocketAddr,
    pub health: SocketAddr,
}

impl ManagerProcess {
    pub fn start(kubeconfig: &Path, extra_args: &[&str]) -> ManagerProcess {
        Self::start_as(kubeconfig, extra_args, None)
    }

    /// Under its own `uid`, so a test can cut the operator alone off the network.
    pub fn start_as(kubeconfig: &Path, extra_args: &[&str], uid: Option<u32>) -> ManagerProcess {
        let inner = manager_process::ManagerProcess::start_as(
            Path::new(env!("CARGO_BIN_EXE_capstan-manager")),
            kubeconfig,
            extra_args,
            manager_process::Log::Stderr,
            Duration::from_secs(30),
            uid,
        )
        .expect("start capstan-manager");
        ManagerProcess {
            metrics: inner.metrics,
            health: inner.health,
            inner,
        }
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// SIGTERM, then wait (up to 30 s, the default termination grace period) for a clean exit.
    pub fn stop(mut self) {
        let started = std::time::Instant::now();
        let exit = self
            .inner
            .terminate(Duration::from_secs(30))
            .expect("the manager exits within 30 s of SIGTERM");
        assert!(exit.success(), "the manager exits cleanly on SIGTERM: {exit}");
        eprintln!("manager stopped {:?} after SIGTERM", started.elapsed());
    }

    /// SIGTERM and the exit status (None: not within `grace`).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.inner.terminate(grace)
    }

    /// SIGKILL: no chance to release anything.
    pub fn kill(self) {
        self.inner.kill();
    }

    pub fn alive(&mut self) -> bool {
        self.inner.exited().is_none()
    }

    /// The value of a metric line starting with `series` (e.g. `name{labels}`), summed over
    /// every line that matches the prefix.
    pub async fn metric(&self, series: &str) -> f64 {
        let Ok((_, body)) = http_get(self.metrics, "/metrics").await else {
            return f64::NAN;
        };
        body.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .fold(0.0, |total, value| total + value)
    }

    pub async fn is_leader(&self) -> bool {
        self.metric(r#"leader_election_master_status{name="capstan-manager"}"#)
            .await
            == 1.0
    }
}

/// Requests by the manager's user agent logged since `mark` (from `audit::mark`).
pub fn manager_requests(audit_log: &Path, mark: u64) -> Vec<audit::AuditEvent> {
    let events = audit::since(audit_log, mark).expect("read the audit log");
    events
        .into_iter()
        .filter(|e| e.from_user_agent("capstan-manager/"))
        .collect()
}

/// Writes (POST, PUT, PATCH, DELETE) by the manager since `mark`, as "verb URI" lines.
pub fn manager_writes(audit_log: &Path, mark: u64) -> Vec<String> {
    manager_requests(audit_log, mark)
        .into_iter()
        .filter(audit::AuditEvent::is_write)
        .map(|e| format!("{} {}", e.verb, e.request_uri))
        .collect()
}
