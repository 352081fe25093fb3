//! Supervision of one container: its restart policy and back-off, one run of it from start to
//! exit (its log, its pid in the registry, its status), the checks that watch it (postStart,
//! startup, readiness and liveness probes) and its termination (preStop, SIGTERM, the grace
//! period, SIGKILL).

use std::{
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::sync::{Notify, mpsc, watch};

use crate::{
    container::ProcessSpec,
    lock, logs, probes,
    registry::{ContainerEntry, Registry, log_path},
    sandbox,
    status::{Shared, State, Terminated, TerminatedReason, WaitingReason, now},
};

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

/// How one run of a container ended.
pub enum Run {
    Exited(i32),
    NotStarted,
    Stopped,
}

/// What [`run_once`] needs of the container's Pod: where the container's log and pid go, the
/// status it reports into, the Pod's address and its grace period.
pub struct RunContext<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub state_dir: &'a Path,
    pub log_max_bytes: u64,
    pub registry: &'a Registry,
    pub state: &'a Shared,
    pub changed: &'a Arc<Notify>,
    pub pod_ip: Ipv4Addr,
    /// The Pod's `terminationGracePeriodSeconds`, for a container killed because a check failed.
    pub grace: Duration,
}

impl RunContext<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One start of a container: which one (its list and its index there) and what it runs.
pub struct ContainerStart<'a> {
    pub container: &'a Container,
    pub init: bool,
    pub index: usize,
    pub process: &'a ProcessSpec,
    pub argv: &'a [String],
}

/// Starts the container, watches it until it exits, a check asks for it to be killed, or the Pod
/// stops, and records each step in the registry and the Pod's status.
pub async fn run_once(
    ctx: &RunContext<'_>,
    start: ContainerStart<'_>,
    stop: &mut watch::Receiver<Option<Duration>>,
) -> Run {
    let ContainerStart {
        container: c,
        init,
        index,
        process,
        argv,
    } = start;
    let log = log_path(ctx.state_dir, ctx.namespace, ctx.name, &c.name);
    let log_file = match logs::RotatingLog::open(&log, ctx.log_max_bytes) {
        Ok(file) => Arc::new(Mutex::new(file)),
        Err(e) => {
            lock(ctx.state).container(init, index).state = State::Waiting {
                reason: WaitingReason::CreateContainerError,
                message: Some(format!("log file {}: {e}", log.display())),
            };
            ctx.changed.notify_one();
            return Run::NotStarted;
        }
    };
    let spawned = process
        .command(argv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            lock(ctx.state).container(init, index).state = State::Waiting {
                reason: WaitingReason::CreateContainerError,
                message: Some(format!("starting {argv:?}: {e}")),
            };
            ctx.changed.notify_one();
            return Run::NotStarted;
        }
    };
    if let Some(out) = child.stdout.take() {
        tokio::spawn(logs::copy(out, log_file.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(logs::copy(err, log_file));
    }
    // `nsenter` forks the container into the Pod's PID namespace: its child is the container.
    let nsenter_pid = child.id().unwrap_or_default();
    let pid = sandbox::child_of(nsenter_pid, Duration::from_secs(2))
        .await
        .unwrap_or(nsenter_pid);
    let beside = process.beside(Some(pid));
    let started_at = now();
    tracing::info!(pod = %ctx.key(), container = %c.name, pid, argv = ?argv, "container started");
    ctx.registry.update(ctx.namespace, ctx.name, ctx.uid, |entry| {
        entry.containers.insert(
            c.name.clone(),
            ContainerEntry {
                pid: Some(pid),
                process: process.clone(),
            },
        );
    });
    {
        let mut s = lock(ctx.state);
        let status = s.container(init, index);
        status.instance += 1;
        status.state = State::Running {
            started_at: started_at.clone(),
        };
        status.started = false;
        status.ready = false;
    }
    ctx.changed.notify_one();

    // postStart, the startup probe, then readiness and liveness; a failure of any but
    // readiness asks for the container to be killed.
    let (kill_tx, mut kill_rx) = mpsc::channel::<String>(1);
    let checks = tokio::spawn(container_checks(CheckContext {
        container: c.clone(),
        init,
        index,
        pod_ip: ctx.pod_ip,
        process: beside.clone(),
        state: ctx.state.clone(),
        changed: ctx.changed.clone(),
        kill: kill_tx,
    }));
    let pre_stop = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
    let mut message = None;
    let mut stopped = false;
    let status = tokio::select! {
        status = child.wait() => Ok(status),
        Some(reason) = kill_rx.recv() => {
            tracing::info!(pod = %ctx.key(), container = %c.name, %reason, "killing the container");
            message = Some(reason);
            Err(ctx.grace)
        }
        requested = stop.wait_for(Option::is_some) => {
            stopped = true;
            let grace = requested.ok().and_then(|r| *r).unwrap_or(ctx.grace);
            Err(grace)
        }
    };
    checks.abort();
    let status = match status {
        Err(grace) => {
            let hook = pre_stop.map(|hook| (hook, c, ctx.pod_ip, &beside));
            terminate(&mut child, pid, grace, hook, &ctx.key()).await
        }
        Ok(status) => status,
    };
    ctx.registry.update(ctx.namespace, ctx.name, ctx.uid, |entry| {
        if let Some(e) = entry.containers.get_mut(&c.name) {
            e.pid = None;
        }
    });
    use std::os::unix::process::ExitStatusExt;
    let (exit_code, signal) = match &status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            (None, None) => (-1, None),
        },
        Err(_) => (-1, None),
    };
    let reason = TerminatedReason::of_exit_code(exit_code);
    tracing::info!(pod = %ctx.key(), container = %c.name, exit_code, "container exited");
    {
        let mut s = lock(ctx.state);
        let status = s.container(init, index);
        status.ready = false;
        status.state = State::Terminated(Terminated {
            exit_code,
            signal,
            reason,
            message,
            started_at,
            finished_at: now(),
        });
    }
    ctx.changed.notify_one();
    if stopped { Run::Stopped } else { Run::Exited(exit_code) }
}

/// What [`container_checks`] watches and reports into, owned: the checks run in a task of their
/// own.
struct CheckContext {
    container: Container,
    init: bool,
    index: usize,
    pod_ip: Ipv4Addr,
    /// The process settings for commands run beside the container (exec probes and hooks).
    process: ProcessSpec,
    state: Shared,
    changed: Arc<Notify>,
    /// Where the checks send why the container must be killed.
    kill: mpsc::Sender<String>,
}

/// Everything that watches a running container: the postStart hook, then the startup probe, then
/// readiness and liveness. Sets `started` and `ready`; sends why the container must be killed.
async fn container_checks(checks: CheckContext) {
    let CheckContext {
        container: c,
        init,
        index,
        pod_ip: ip,
        process,
        state,
        changed,
        kill,
    } = checks;
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
