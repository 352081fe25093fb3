//! Supervision of one running container: its restart policy and back-off, the checks that watch
//! it (postStart, startup, readiness and liveness probes) and its termination (preStop, SIGTERM,
//! the grace period, SIGKILL).

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::sync::Notify;

use crate::{container::ProcessSpec, lock, probes, status::Shared};

/// The kubelet caps its back-off at five minutes and forgets it after ten of good running.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// A Pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// The Pod's policy; anything unknown is `Always`, the default.
    pub fn of(policy: Option<&str>) -> RestartPolicy {
        match policy {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Init containers are restarted on failure unless the Pod's policy is Never.
    pub fn for_init(self) -> RestartPolicy {
        match self {
            RestartPolicy::Never => RestartPolicy::Never,
            _ => RestartPolicy::OnFailure,
        }
    }

    /// Whether a container that exited with `exit_code` (`None`: never started) starts again.
    pub fn restarts(self, exit_code: Option<i32>) -> bool {
        match (self, exit_code) {
            (_, None) => true,
            (RestartPolicy::Never, _) => false,
            (RestartPolicy::OnFailure, Some(0)) => false,
            _ => true,
        }
    }
}

pub fn backoff_delay(initial: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    (initial * factor).min(BACKOFF_MAX)
}

/// The kubelet gives a container at least this long after its preStop hook used up the grace period.
const MIN_GRACE_AFTER_PRE_STOP: Duration = Duration::from_secs(2);

/// The preStop hook (if the container still runs) within `grace`, then SIGTERM, the rest of the
/// grace period for the process to exit, then SIGKILL.
pub async fn terminate(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
    pre_stop: Option<(LifecycleHandler, &Container, Ipv4Addr, &ProcessSpec)>,
    key: &str,
) -> std::io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + grace;
    if let Some((hook, c, ip, process)) = pre_stop
        && matches!(child.try_wait(), Ok(None))
    {
        let started = Instant::now();
        match tokio::time::timeout(grace, probes::run_hook(&hook, c, ip, process)).await {
            Ok(Ok(())) => {
                tracing::info!(pod = %key, container = %c.name, took = ?started.elapsed(), "preStop hook done")
            }
            Ok(Err(e)) => tracing::warn!(pod = %key, container = %c.name, error = %e, "preStop hook failed"),
            Err(_) => {
                tracing::warn!(pod = %key, container = %c.name, ?grace, "preStop hook did not finish within the grace period")
            }
        }
    }
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(if grace.is_zero() {
            Duration::ZERO
        } else {
            MIN_GRACE_AFTER_PRE_STOP.min(grace)
        });
    let signal = |s: Signal| {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), s);
        }
    };
    signal(Signal::SIGTERM);
    match tokio::time::timeout(remaining, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal(Signal::SIGKILL);
            let _ = child.start_kill();
            child.wait().await
        }
    }
}

/// Everything that watches a running container: the postStart hook, then the startup probe, then
/// readiness and liveness. Sets `started` and `ready`; sends why the container must be killed.
#[allow(clippy::too_many_arguments)]
pub async fn container_checks(
    c: Container,
    init: bool,
    index: usize,
    ip: Ipv4Addr,
    process: ProcessSpec,
    state: Shared,
    changed: Arc<Notify>,
    kill: tokio::sync::mpsc::Sender<String>,
) {
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
        && let Err(e) = probes::run_hook(hook, &c, ip, &process).await
    {
        let _ = kill.send(format!("PostStartHookError: {e}")).await;
        return;
    }
    if init {
        return;
    }
    if let Some(probe) = &c.startup_probe
        && let Err(reason) = startup_loop(probe, &c, ip, &process).await
    {
        let _ = kill
            .send(format!(
                "Container {} failed startup probe, will be restarted: {reason}",
                c.name
            ))
            .await;
        return;
    }
    {
        let mut s = lock(&state);
        s.main[index].started = true;
        // Without a readiness probe a started container is ready.
        s.main[index].ready = c.readiness_probe.is_none();
    }
    changed.notify_one();
    let readiness = async {
        if let Some(probe) = &c.readiness_probe {
            readiness_loop(probe, &c, ip, &process, &state, &changed, index).await;
        }
    };
    let liveness = async {
        if let Some(probe) = &c.liveness_probe
            && let Some(reason) = liveness_loop(probe, &c, ip, &process).await
        {
            let _ = kill
                .send(format!(
                    "Container {} failed liveness probe, will be restarted: {reason}",
                    c.name
                ))
                .await;
        }
    };
    tokio::join!(readiness, liveness);
}

/// Probes until the first success (`Ok`) or `failureThreshold` failures in a row (`Err`).
async fn startup_loop(probe: &Probe, c: &Container, ip: Ipv4Addr, process: &ProcessSpec) -> Result<(), String> {
    let timing = probes::Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    let mut failures = 0u32;
    loop {
        match probes::check(probe, c, ip, process).await {
            Ok(()) => return Ok(()),
            Err(reason) => {
                failures += 1;
                tracing::debug!(container = %c.name, %reason, failures, "startup probe failed");
                if failures >= timing.failure_threshold {
                    return Err(reason);
                }
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

async fn readiness_loop(
    probe: &Probe,
    c: &Container,
    ip: Ipv4Addr,
    process: &ProcessSpec,
    state: &Shared,
    changed: &Notify,
    index: usize,
) {
    let timing = probes::Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let result = probes::check(probe, c, ip, process).await;
        let current = lock(state).main[index].ready;
        let mut next = current;
        match result {
            Ok(()) => {
                failures = 0;
                successes += 1;
                if successes >= timing.success_threshold {
                    next = true;
                }
            }
            Err(reason) => {
                successes = 0;
                failures += 1;
                tracing::debug!(container = %c.name, %reason, "readiness probe failed");
                if failures >= timing.failure_threshold {
                    next = false;
                }
            }
        }
        if next != current {
            lock(state).main[index].ready = next;
            changed.notify_one();
        }
        tokio::time::sleep(timing.period).await;
    }
}

/// Probes until `failureThreshold` failures in a row; returns the last reason.
async fn liveness_loop(probe: &Probe, c: &Container, ip: Ipv4Addr, process: &ProcessSpec) -> Option<String> {
    let timing = probes::Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    let mut failures = 0u32;
    loop {
        match probes::check(probe, c, ip, process).await {
            Ok(()) => failures = 0,
            Err(reason) => {
                failures += 1;
                tracing::debug!(container = %c.name, %reason, "liveness probe failed");
                if failures >= timing.failure_threshold {
                    return Some(reason);
                }
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_five_minutes() {
        let initial = Duration::from_secs(10);
        assert_eq!(backoff_delay(initial, 1), Duration::from_secs(10));
        assert_eq!(backoff_delay(initial, 2), Duration::from_secs(20));
        assert_eq!(backoff_delay(initial, 3), Duration::from_secs(40));
        assert_eq!(backoff_delay(initial, 30), BACKOFF_MAX);
    }

    #[test]
    fn restart_policies_follow_the_kubelet() {
        assert!(RestartPolicy::Always.restarts(Some(0)));
        assert!(!RestartPolicy::OnFailure.restarts(Some(0)));
        assert!(RestartPolicy::OnFailure.restarts(Some(1)));
        assert!(!RestartPolicy::Never.restarts(Some(1)));
        assert!(
            RestartPolicy::Never.restarts(None),
            "a container that never started is retried"
        );
        assert_eq!(RestartPolicy::of(Some("Never")).for_init(), RestartPolicy::Never);
        assert_eq!(RestartPolicy::of(None).for_init(), RestartPolicy::OnFailure);
    }
}
