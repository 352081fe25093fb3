//! Helpers shared by the manager's integration tests: the real binary as a child process, and
//! the apiserver's audit log read by user agent.
#![allow(dead_code)]
use capstan_testenv::audit;
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// A `capstan-manager run` child process and the admin addresses it logged.
pub struct ManagerProcess {
    pub child: Child,
    pub metrics: SocketAddr,
    pub health: SocketAddr,
}

impl ManagerProcess {
    pub fn start(kubeconfig: &Path, extra_args: &[&str]) -> ManagerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_capstan-manager"))
            .args(["run", "--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start capstan-manager");
        let stderr = child.stderr.take().expect("stderr");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  manager[{pid}]| {line}");
                if line.contains("admin server listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let addrs = rx.recv_timeout(Duration::from_secs(30)).ok().and_then(|line| {
            Some((
                logged_addr(&line, "metrics_addr=")?,
                logged_addr(&line, "health_addr=")?,
            ))
        });
        let Some((metrics, health)) = addrs else {
            // Not yet owned by a guard: kill it here, or it would outlive the test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("the manager did not log its admin addresses within 30 s");
        };
        ManagerProcess { child, metrics, health }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        let started = std::time::Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                assert!(exit.success(), "the manager exits cleanly on SIGTERM: {exit}");
                eprintln!("manager stopped {:?} after SIGTERM", started.elapsed());
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the manager did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line.find(key)? + key.len();
    let value: String = line[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    value.trim_matches('"').parse().ok()
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

impl ManagerProcess {
    /// SIGKILL: no chance to release anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of a metric line starting with `series` (e.g. `name{labels}`), summed over
    /// every line that matches the prefix.
    pub async fn metric(&self, series: &str) -> f64 {
        let Ok((_, body)) = capstan_runtime::testing::http_get(self.metrics, "/metrics").await else {
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
