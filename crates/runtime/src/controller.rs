//! Runs a [`Reconciler`] over kube's `Controller`: per-object exponential backoff on errors,
//! waiting for a change after errors retrying cannot fix, panics caught, a deadline per
//! reconcile, metrics, a tracing span and a Warning event per failure, leader gating, graceful
//! shutdown, and a wake-up when an object that blocked a child goes away (module `foreign`).
use futures::{FutureExt, StreamExt, future::BoxFuture};
use kube::{
    Resource, ResourceExt,
    runtime::{
        Controller,
        controller::{Action, Config},
        reflector::{ObjectRef, Store},
    },
};
use std::{
    collections::HashMap,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tracing::Instrument;

use crate::{
    context::Context,
    informer::Informable,
    lock,
    process::leadership::Leadership,
    process::metrics::Metrics,
    process::shutdown::Shutdown,
    tasks::{BackgroundTask, panic_message},
    watches::WatchedParts,
    write::foreign::ForeignWatches,
};

/// An error a reconcile can return: it names its own metric label and Event reason, and says
/// whether retrying can help.
pub trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// Bounded label for `capstan_reconcile_errors_by_reason_total`.
    fn metric_label(&self) -> &'static str;

    /// The reason of the Warning event published for this error, or `None` for errors that say
    /// nothing to the object's owner (e.g. a transient network failure).
    fn event_reason(&self) -> Option<&'static str> {
        Some("ReconcileFailed")
    }

    /// True for errors retrying cannot fix without a change (an invalid spec, an object the
    /// apiserver refuses with 422, a same-named object someone else controls): the object is
    /// reconciled again when it or one of its watched objects changes, not on a backoff timer
    /// that would publish a Warning each time. Report it in the status before returning it.
    fn is_permanent(&self) -> bool {
        false
    }
}

/// The part of a controller that is about its kind.
pub trait Reconciler: Send + Sync + 'static {
    type Object: Informable;
    type Error: ReconcileError;

    /// The controller's name in metrics, logs and events (`capstan-<name>`).
    const NAME: &'static str;

    /// Brings the world in line with `obj`. Must be idempotent and must not write when nothing
    /// changed (use [`Context::apply`] and [`Context::children`]).
    fn reconcile(
        &self,
        obj: Arc<Self::Object>,
        ctx: &Context,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send;
}

/// A controller ready to run: what it watches, and the reconciler.
pub struct ControllerDef<R: Reconciler> {
    pub(crate) watched: WatchedParts<R::Object>,
    pub(crate) reconciler: R,
}

impl<R: Reconciler> ControllerDef<R> {
    pub(crate) fn tasks(&self) -> Vec<BackgroundTask> {
        self.watched.tasks.clone()
    }
}

/// Backoff after a failed reconcile: doubles per consecutive failure of the same object.
#[derive(Debug, Clone, Copy)]
pub struct ErrorBackoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for ErrorBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(300),
        }
    }
}

impl ErrorBackoff {
    pub fn delay(&self, consecutive_failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(consecutive_failures.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What the runtime hands to `run`: settings shared by all controllers of a manager.
#[derive(Clone)]
pub struct RunSettings {
    pub client: kube::Client,
    pub metrics: Metrics,
    pub shutdown: Shutdown,
    pub leadership: Leadership,
    pub concurrency: u16,
    pub backoff: ErrorBackoff,
    /// How long one reconcile may take before it is abandoned and retried with backoff.
    pub reconcile_deadline: Duration,
    pub instance: Option<String>,
}

/// Why a reconcile failed, as the runtime sees it.
#[derive(Debug, thiserror::Error)]
pub enum Failure<E: ReconcileError> {
    #[error(transparent)]
    Reconcile(E),
    #[error("reconcile panicked: {0}")]
    Panicked(String),
    #[error("reconcile did not finish within its deadline of {0:?}")]
    Deadline(Duration),
}

impl<E: ReconcileError> Failure<E> {
    fn metric_label(&self) -> &'static str {
        match self {
            Failure::Reconcile(e) => e.metric_label(),
            Failure::Panicked(_) => "panic",
            Failure::Deadline(_) => "deadline",
        }
    }

    fn event_reason(&self) -> Option<&'static str> {
        match self {
            Failure::Reconcile(e) => e.event_reason(),
            Failure::Panicked(_) | Failure::Deadline(_) => Some("ReconcileFailed"),
        }
    }

    fn is_permanent(&self) -> bool {
        matches!(self, Failure::Reconcile(e) if e.is_permanent())
    }
}

type ObjectKey = (String, String);

struct Runner<R: Reconciler> {
    reconciler: R,
    context: Context,
    metrics: Metrics,
    leadership: Leadership,
    backoff: ErrorBackoff,
    deadline: Duration,
    store: Store<R::Object>,
    failures: FailureCounts,
    foreign: Arc<ForeignWatches>,
}

/// Consecutive failures per object, for its backoff. An entry lives only while its object exists
/// and keeps failing with errors retrying may fix; the count is exported as
/// `capstan_reconcile_failing_objects` so a leak (and a stuck object) shows.
struct FailureCounts {
    controller: &'static str,
    metrics: Metrics,
    counts: Mutex<HashMap<ObjectKey, u32>>,
}

impl FailureCounts {
    fn new(controller: &'static str, metrics: Metrics) -> Self {
        Self {
            controller,
            metrics,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn forget(&self, key: &ObjectKey) {
        let mut counts = lock(&self.counts);
        if counts.remove(key).is_some() {
            self.metrics.set_failing_objects(self.controller, counts.len());
        }
    }

    /// Counts one more failure of `key` and returns the consecutive count, unless `exists` says
    /// the object is gone. Checked under the lock: the delete handler removes the entry after the
    /// cache dropped the object, so a failure that ends after a delete never leaves an entry.
    fn record(&self, key: ObjectKey, exists: impl FnOnce() -> bool) -> Option<u32> {
        let mut counts = lock(&self.counts);
        if !exists() {
            if counts.remove(&key).is_some() {
                self.metrics.set_failing_objects(self.controller, counts.len());
            }
            return None;
        }
        let count = counts.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        let count = *count;
        self.metrics.set_failing_objects(self.controller, counts.len());
        Some(count)
    }
}

/// Turns a controller definition into the future that runs it until shutdown.
pub fn run<R: Reconciler>(def: ControllerDef<R>, settings: RunSettings) -> BoxFuture<'static, ()> {
    let metrics = settings.metrics.clone();
    metrics.register_controller(R::NAME);
    let WatchedParts {
        store,
        primary,
        triggers,
        tasks: _,
        owned,
    } = def.watched;
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let foreign = ForeignWatches::new(
        settings.client.clone(),
        R::NAME,
        (
            R::Object::kind(&()).into_owned(),
            R::Object::api_version(&()).into_owned(),
        ),
        metrics.clone(),
        settings.leadership.clone(),
        wake,
    );
    let runner = Arc::new(Runner {
        context: Context::new(
            settings.client.clone(),
            R::NAME,
            metrics.clone(),
            settings.instance.clone(),
            settings.leadership.clone(),
        )
        .with_foreign_watches(foreign.clone())
        .with_owned_kinds(owned),
        foreign,
        reconciler: def.reconciler,
        metrics: metrics.clone(),
        leadership: settings.leadership.clone(),
        backoff: settings.backoff,
        deadline: settings.reconcile_deadline,
        store: store.clone(),
        failures: FailureCounts::new(R::NAME, metrics),
    });
    // A deleted object's failure count goes with it (the cache dropped it before this change
    // arrives); a changed one drops the status writes its new version shows.
    let forget = runner.clone();
    let primary = primary.inspect(move |obj| match forget.store.get(&ObjectRef::from_obj(obj.as_ref())) {
        Some(current) => forget.context.observe(current.as_ref()),
        None => {
            let key = object_key(obj.as_ref());
            forget.context.forget(obj.as_ref());
            forget.failures.forget(&key);
            forget.foreign.forget(&key);
        }
    });
    let shutdown = settings.shutdown.clone();
    let mut controller = Controller::for_shared_stream(primary, store)
        .with_config(Config::default().concurrency(settings.concurrency))
        .reconcile_all_on(became_leader(settings.leadership.receiver()))
        .graceful_shutdown_on(async move { shutdown.draining().await });
    for trigger in triggers {
        controller = controller.reconcile_on(trigger);
    }
    // Owners whose refused child's name was freed (see `foreign`).
    controller = controller.reconcile_on(futures::stream::unfold(woken, |mut woken| async move {
        let (namespace, name) = woken.recv().await?;
        Some((ObjectRef::new(&name).within(&namespace), woken))
    }));
    Box::pin(async move {
        controller
            .run(
                |obj, runner: Arc<Runner<R>>| async move { runner.reconcile(obj).await },
                |obj, error, runner| runner.error_policy(&obj, error),
                runner,
            )
            .for_each(|result| async move {
                if let Err(error) = result {
                    // Reconcile errors were already logged with their object; these are the
                    // controller's own (a trigger naming an object not in the cache).
                    tracing::debug!(controller = R::NAME, %error, "controller event");
                }
            })
            .await;
        tracing::info!(controller = R::NAME, "controller stopped");
    })
}

/// Fires once each time this manager becomes leader, so objects seen while following (and
/// skipped) are reconciled. Not at start: the informers' initial list triggers everything then.
fn became_leader(mut leader: tokio::sync::watch::Receiver<bool>) -> impl futures::Stream<Item = ()> + Send + 'static {
    let was_leader = *leader.borrow_and_update();
    futures::stream::unfold((leader, was_leader), |(mut leader, mut was_leader)| async move {
        loop {
            leader.changed().await.ok()?;
            let is_leader = *leader.borrow_and_update();
            let fire = is_leader && !was_leader;
            was_leader = is_leader;
            if fire {
                return Some(((), (leader, was_leader)));
            }
        }
    })
}

impl<R: Reconciler> Runner<R> {
    async fn reconcile(&self, obj: Arc<R::Object>) -> Result<Action, Failure<R::Error>> {
        if !self.leadership.is_leader() {
            // Followers keep their caches warm but never write.
            return Ok(Action::await_change());
        }
        if obj.meta().deletion_timestamp.is_some() {
            // Being deleted (capstan sets no finalizers, so this is a foreground deletion waiting
            // for the garbage collector to remove the children): applying them now would
            // re-create each one the collector deletes, and the deletion would never finish.
            return Ok(Action::await_change());
        }
        let key = object_key(obj.as_ref());
        let span = tracing::info_span!("reconcile", controller = R::NAME, namespace = %key.0, name = %key.1);
        self.metrics.reconcile_started(R::NAME);
        let started = Instant::now();
        let attempt = AssertUnwindSafe(self.reconciler.reconcile(obj.clone(), &self.context))
            .catch_unwind()
            .instrument(span.clone());
        self.foreign.begin(&key);
        let result = match tokio::time::timeout(self.deadline, attempt).await {
            Ok(Ok(Ok(action))) => Ok(action),
            Ok(Ok(Err(error))) => Err(Failure::Reconcile(error)),
            Ok(Err(panic)) => Err(Failure::Panicked(panic_message(panic))),
            Err(_) => Err(Failure::Deadline(self.deadline)),
        };
        // Refusals this attempt did not meet again are over (their watches stop).
        self.foreign.end(&key);
        let elapsed = started.elapsed();
        match &result {
            Ok(action) => {
                self.metrics
                    .reconcile_finished(R::NAME, elapsed, Ok(*action != Action::await_change()));
                self.failures.forget(&key);
                span.in_scope(|| tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "reconciled"));
            }
            Err(error) => {
                self.metrics
                    .reconcile_finished(R::NAME, elapsed, Err(error.metric_label()));
                span.in_scope(|| match error {
                    Failure::Reconcile(_) => tracing::warn!(%error, "reconcile failed"),
                    _ => tracing::error!(%error, "reconcile failed"),
                });
                if let Some(reason) = error.event_reason() {
                    self.context
                        .events()
                        .warning(&obj.object_ref(&()), reason, "Reconcile", error.to_string());
                }
            }
        }
        result
    }

    fn error_policy(&self, obj: &R::Object, error: &Failure<R::Error>) -> Action {
        let key = object_key(obj);
        if error.is_permanent() {
            // Reported already; only a change can fix it.
            self.failures.forget(&key);
            return Action::await_change();
        }
        let exists = || self.store.get(&ObjectRef::from_obj(obj)).is_some();
        match self.failures.record(key, exists) {
            Some(count) => Action::requeue(self.backoff.delay(count)),
            // Deleted while its reconcile ran: nothing left to retry.
            None => Action::await_change(),
        }
    }
}

fn object_key(obj: &impl Resource) -> ObjectKey {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap() {
        let backoff = ErrorBackoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(300),
        };
        assert_eq!(backoff.delay(1), Duration::from_millis(500));
        assert_eq!(backoff.delay(2), Duration::from_secs(1));
        assert_eq!(backoff.delay(5), Duration::from_secs(8));
        assert_eq!(backoff.delay(20), Duration::from_secs(300));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn became_leader_fires_on_each_rising_edge_only() {
        let (tx, rx) = watch::channel(false);
        let stream = became_leader(rx);
        let mut stream = std::pin::pin!(stream);
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .expect("fires when leadership is gained");
        tx.send_replace(false);
        let nothing = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(nothing.is_err(), "losing leadership must not trigger reconciles");
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .expect("fires again after regaining");
    }
}
