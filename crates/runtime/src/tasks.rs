//! Background tasks a controller declares (a Sentinel event listener, a periodic healer): run by
//! the manager only while it leads, stopped when leadership is lost or shutdown begins, and
//! restarted with backoff when they fail or panic.
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use std::{fmt::Display, future::Future, sync::Arc, time::Duration};

use crate::{
    events::EventPublisher, process::leadership::Leadership, process::metrics::Metrics, process::shutdown::Shutdown,
};

/// A write the apiserver refused to a background task (403 Forbidden, 422 Invalid, …). A task
/// never leaves such a refusal in its log only: [`TaskContext::refused`] publishes it as a Warning
/// Event on the object the write was for, and the controller keeps it for that object's status
/// (its `Degraded` condition, with [`RefusedWrite::reason`]) for as long as the write keeps
/// being refused. Without it a roll that needs a verb the chart does not grant stalls silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedWrite {
    /// Names the refused verb and resource, e.g. `DeletePodsRefused`.
    pub reason: &'static str,
    pub verb: &'static str,
    pub resource: &'static str,
    pub name: String,
    /// The HTTP status code and the apiserver's message.
    pub code: u16,
    pub server_message: String,
}

impl RefusedWrite {
    /// The refusal in `error`, or None when it is not one: a 404 (the object is gone, nothing
    /// to do), a 409 (a conflict clears on retry), or no answer from the apiserver at all.
    pub fn from_error(
        reason: &'static str,
        verb: &'static str,
        resource: &'static str,
        name: &str,
        error: &kube::Error,
    ) -> Option<Self> {
        match error {
            kube::Error::Api(status) if ![404, 409].contains(&status.code) => Some(Self {
                reason,
                verb,
                resource,
                name: name.to_owned(),
                code: status.code,
                server_message: status.message.clone(),
            }),
            _ => None,
        }
    }

    /// What the condition and the Event say.
    pub fn message(&self) -> String {
        let hint = if self.code == 403 {
            " (the operator's RBAC lacks this verb)"
        } else {
            ""
        };
        format!(
            "the apiserver refused to {} {}/{} ({}){hint}: {}",
            self.verb, self.resource, self.name, self.code, self.server_message
        )
    }
}

/// What a background task gets: the client, events, and leadership (a task is dropped when
/// leadership is lost, but a side effect outside Kubernetes should still go through
/// [`Leadership::while_leader`] so it is never half-sent by a follower).
#[derive(Clone)]
pub struct TaskContext {
    pub client: Client,
    pub leadership: Leadership,
    pub events: EventPublisher,
}

impl TaskContext {
    /// Publishes a refused write as a Warning Event on `regarding` (call it when the refusal is
    /// new, not on every retry: the status carries it while it lasts).
    pub fn refused(&self, regarding: &ObjectReference, refusal: &RefusedWrite) {
        tracing::warn!(reason = refusal.reason, message = %refusal.message(), "a background task's write was refused");
        self.events
            .warning(regarding, refusal.reason, refusal.verb, refusal.message());
    }
}

type Start = Arc<dyn Fn(TaskContext) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A named task factory: called each time this manager starts leading.
#[derive(Clone)]
pub struct BackgroundTask {
    name: String,
    start: Start,
}

impl BackgroundTask {
    pub fn new<F, Fut, E>(name: impl Into<String>, task: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let start: Start = Arc::new(move |ctx| {
            let running = task(ctx);
            Box::pin(async move { running.await.map_err(|e| e.to_string()) })
        });
        Self {
            name: name.into(),
            start,
        }
    }
}

/// Delay before restarting a task after its `failures`-th consecutive failure: 1 s doubling to 60 s.
fn restart_delay(failures: u32) -> Duration {
    Duration::from_secs(1)
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(Duration::from_secs(60))
}

/// Runs `task` whenever this manager leads, until shutdown starts.
pub(crate) async fn supervise(task: BackgroundTask, ctx: TaskContext, shutdown: Shutdown, metrics: Metrics) {
    let name = task.name.clone();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = ctx.leadership.acquired() => {}
            () = shutdown.draining() => return,
        }
        tracing::info!(task = %name, "starting background task");
        let handle = tokio::spawn((task.start)(ctx.clone()));
        let abort = handle.abort_handle();
        let ended = tokio::select! {
            joined = handle => Some(joined),
            () = ctx.leadership.lost() => None,
            () = shutdown.draining() => {
                abort.abort();
                tracing::info!(task = %name, "background task stopped for shutdown");
                return;
            }
        };
        let failure = match ended {
            None => {
                abort.abort();
                tracing::info!(task = %name, "leadership lost; background task stopped");
                failures = 0;
                continue;
            }
            Some(Ok(Ok(()))) => {
                tracing::info!(task = %name, "background task finished; runs again on the next leadership");
                failures = 0;
                tokio::select! {
                    () = ctx.leadership.lost() => continue,
                    () = shutdown.draining() => return,
                }
            }
            Some(Ok(Err(error))) => error,
            Some(Err(joined)) if joined.is_panic() => format!("panicked: {}", panic_message(joined.into_panic())),
            Some(Err(joined)) => joined.to_string(),
        };
        failures = failures.saturating_add(1);
        metrics.task_failed(&name);
        let delay = restart_delay(failures);
        tracing::warn!(task = %name, error = %failure, ?delay, "background task failed; restarting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.draining() => return,
        }
    }
}

/// The message of a caught panic, when it has one.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::sync::watch;

    fn context(leader: watch::Receiver<bool>) -> TaskContext {
        // A client that is never used: these tasks do not call the API.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        TaskContext {
            events: EventPublisher::new(client.clone(), "test", None),
            client,
            leadership: Leadership::new(leader),
        }
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "message": message, "reason": "Forbidden", "code": code
            }))
            .expect("status"),
        ))
    }

    #[test]
    fn a_refused_write_names_verb_resource_object_and_the_servers_answer() {
        let forbidden = api_error(
            403,
            r#"pods "cache-2" is forbidden: User "system:serviceaccount:x:capstan" cannot delete resource "pods""#,
        );
        let refusal = RefusedWrite::from_error("DeletePodsRefused", "delete", "pods", "cache-2", &forbidden)
            .expect("a 403 is a refusal");
        assert_eq!(refusal.reason, "DeletePodsRefused");
        let message = refusal.message();
        assert!(
            message.starts_with("the apiserver refused to delete pods/cache-2 (403)"),
            "{message}"
        );
        assert!(
            message.contains("RBAC") && message.contains("cannot delete resource"),
            "{message}"
        );
        let invalid = RefusedWrite::from_error("PatchPodsRefused", "patch", "pods", "p", &api_error(422, "bad label"))
            .expect("a 422 is a refusal");
        assert!(!invalid.message().contains("RBAC"));
        for code in [404, 409] {
            assert_eq!(
                RefusedWrite::from_error("R", "delete", "pods", "p", &api_error(code, "x")),
                None,
                "{code} is not a refusal"
            );
        }
    }

    #[test]
    fn restart_delay_doubles_to_a_minute() {
        assert_eq!(restart_delay(1), Duration::from_secs(1));
        assert_eq!(restart_delay(3), Duration::from_secs(4));
        assert_eq!(restart_delay(30), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_task_runs_only_while_leading_and_stops_on_shutdown() {
        let (leader, rx) = watch::channel(false);
        let shutdown = Shutdown::new();
        let starts = Arc::new(AtomicU32::new(0));
        let ticks = Arc::new(AtomicU32::new(0));
        let task = {
            let (starts, ticks) = (starts.clone(), ticks.clone());
            BackgroundTask::new("ticker", move |_ctx| {
                let ticks = ticks.clone();
                starts.fetch_add(1, Ordering::SeqCst);
                async move {
                    loop {
                        ticks.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), String>(())
                }
            })
        };
        let supervisor = tokio::spawn(supervise(
            task,
            context(rx),
            shutdown.clone(),
            Metrics::new().expect("metrics"),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 0, "a follower runs no task");
        leader.send_replace(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(ticks.load(Ordering::SeqCst) > 0, "the leader runs it");
        leader.send_replace(false);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after_loss = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            after_loss,
            "stopped when leadership is lost"
        );
        leader.send_replace(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            2,
            "started again on regaining leadership"
        );
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(1), supervisor)
            .await
            .expect("the supervisor ends on shutdown")
            .expect("no panic");
        let at_shutdown = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), at_shutdown, "the task itself stopped");
    }

    #[tokio::test]
    async fn a_panicking_task_is_counted_and_restarted() {
        let (_leader, rx) = watch::channel(true);
        let shutdown = Shutdown::new();
        let metrics = Metrics::new().expect("metrics");
        let starts = Arc::new(AtomicU32::new(0));
        let task = {
            let starts = starts.clone();
            BackgroundTask::new("panicky", move |_ctx| {
                let n = starts.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        panic!("first run fails");
                    }
                    std::future::pending::<()>().await;
                    Ok::<(), String>(())
                }
            })
        };
        let supervisor = tokio::spawn(supervise(task, context(rx), shutdown.clone(), metrics.clone()));
        tokio::time::timeout(Duration::from_secs(3), async {
            while starts.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("restarted after about a second");
        let text = metrics.render().expect("render");
        assert!(
            text.contains(r#"capstan_background_task_failures_total{task="panicky"} 1"#),
            "{text}"
        );
        shutdown.trigger();
        supervisor.await.expect("supervisor");
    }
}
