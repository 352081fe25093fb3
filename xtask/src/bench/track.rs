//! Seeing progress without disturbing it: watches rather than polled lists (a list of 1000
//! Deployments every 200 ms would cost the apiserver more than the manager does), each event
//! stamped when it arrives.
use std::{
    collections::HashSet,
    fmt::Debug,
    future::Future,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

/// Watch streams and their tasks need these of every kind we track.
pub trait Watchable: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {}
impl<K> Watchable for K where K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {}

/// A predicate an object may satisfy, e.g. "its status observed its generation".
pub type Condition<K> = Box<dyn Fn(&K) -> bool + Send + Sync>;

/// How many objects satisfy one condition, and when that count first reached the target.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub count: usize,
    pub reached: Option<Instant>,
}

/// Counts, from one watch, the objects satisfying each of several conditions, and remembers when
/// each count first reached `target`. A later dip (an object changing again) does not move that
/// moment: convergence is the first time everything was there.
pub struct Tracker {
    what: String,
    target: usize,
    progress: Vec<watch::Receiver<Progress>>,
    task: AbortOnDrop,
}

impl Tracker {
    /// Starts the watch and returns once its initial list is in.
    pub async fn start<K: Watchable>(
        what: &str,
        api: Api<K>,
        target: usize,
        conditions: Vec<Condition<K>>,
    ) -> anyhow::Result<Tracker> {
        let initial = Progress {
            count: 0,
            reached: None,
        };
        let (senders, progress): (Vec<_>, Vec<_>) = conditions.iter().map(|_| watch::channel(initial)).unzip();
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(count_satisfied(api, target, conditions, senders, listed_tx));
        tokio::time::timeout(Duration::from_secs(60), listed)
            .await
            .with_context(|| format!("the watch of {what} did not list within 60 s"))?
            .with_context(|| format!("the watch of {what} ended before listing"))?;
        Ok(Tracker {
            what: what.to_owned(),
            target,
            progress,
            task: AbortOnDrop(task),
        })
    }

    /// When condition `index` first held for `target` objects; fails after `limit`.
    pub async fn reached(&mut self, index: usize, name: &str, limit: Duration) -> anyhow::Result<Instant> {
        let receiver = &mut self.progress[index];
        let waited = tokio::time::timeout(limit, receiver.wait_for(|p| p.reached.is_some()))
            .await
            .map(|progress| progress.map(|p| p.reached));
        match waited {
            Ok(Ok(reached)) => reached.context("reached is set"),
            Ok(Err(_)) => bail!("the watch of {} stopped", self.what),
            Err(_) => {
                let count = receiver.borrow().count;
                let target = self.target;
                let limit = humantime::format_duration(limit);
                bail!("{}: {name}: only {count}/{target} after {limit}", self.what)
            }
        }
    }

    pub fn stop(self) {
        drop(self.task);
    }
}

async fn count_satisfied<K: Watchable>(
    api: Api<K>,
    target: usize,
    conditions: Vec<Condition<K>>,
    senders: Vec<watch::Sender<Progress>>,
    listed: tokio::sync::oneshot::Sender<()>,
) {
    let mut satisfied: Vec<HashSet<String>> = conditions.iter().map(|_| HashSet::new()).collect();
    let mut listed = Some(listed);
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let now = Instant::now();
        let (object, present) = match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => (obj, true),
            Ok(watcher::Event::Delete(obj)) => (obj, false),
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
                continue;
            }
            Ok(watcher::Event::Init) => continue,
            Err(error) => {
                eprintln!("bench: a watch failed, retrying: {error}");
                continue;
            }
        };
        let name = object.name_any();
        for ((condition, set), sender) in conditions.iter().zip(&mut satisfied).zip(&senders) {
            let changed = if present && condition(&object) {
                set.insert(name.clone())
            } else {
                set.remove(&name)
            };
            if changed {
                let count = set.len();
                sender.send_modify(|p| {
                    p.count = count;
                    if count >= target && p.reached.is_none() {
                        p.reached = Some(now);
                    }
                });
            }
        }
    }
}

/// Every version of one object as the watch delivers it, stamped on arrival: the far end of a
/// single-change latency.
pub struct ObjectWatch<K> {
    events: mpsc::UnboundedReceiver<(K, Instant)>,
    _task: AbortOnDrop,
}

impl<K: Watchable> ObjectWatch<K> {
    /// Watches the object `name` of `api` and returns once the watch has listed it.
    pub async fn start(api: Api<K>, name: &str) -> anyhow::Result<ObjectWatch<K>> {
        let (tx, events) = mpsc::unbounded_channel();
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut listed_tx = Some(listed_tx);
            let stream = watcher(api, config).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                        if tx.send((obj, now)).is_err() {
                            return;
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(listed) = listed_tx.take() {
                            let _ = listed.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(error) => eprintln!("bench: the latency watch failed, retrying: {error}"),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), listed)
            .await
            .with_context(|| format!("the watch of {name} did not list within 30 s"))?
            .with_context(|| format!("the watch of {name} ended before listing"))?;
        Ok(ObjectWatch {
            events,
            _task: AbortOnDrop(task),
        })
    }

    /// Forgets what arrived so far, so the next match is caused by what happens next.
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// When the first version satisfying `done` arrived; fails after `limit`.
    pub async fn arrival(&mut self, done: impl Fn(&K) -> bool, limit: Duration) -> anyhow::Result<Instant> {
        let wait = async {
            while let Some((object, at)) = self.events.recv().await {
                if done(&object) {
                    return Ok(at);
                }
            }
            bail!("the latency watch stopped")
        };
        tokio::time::timeout(limit, wait)
            .await
            .with_context(|| format!("no matching watch event within {}", humantime::format_duration(limit)))?
    }
}

/// Runs `request(i)` for i in 0..n with at most `concurrency` in flight; the first error stops it.
pub async fn run_all<T, F, Fut>(n: usize, concurrency: usize, request: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    futures::stream::iter(0..n)
        .map(request)
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// Polls `check` every `every` until it returns `Some`; for waits nobody times precisely.
pub async fn poll_until<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if started.elapsed() > limit {
            let why = last_error.map(|e| format!(" (last error: {e:#})")).unwrap_or_default();
            bail!(
                "timed out after {} waiting until {what}{why}",
                humantime::format_duration(limit)
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// Wall-clock time of a monotonic instant, to compare with the audit log's timestamps (the
/// apiserver runs on this host, so both read the same clock).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall: Timestamp,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            wall: Timestamp::now(),
        }
    }

    pub fn instant(&self) -> Instant {
        self.instant
    }

    pub fn wall(&self) -> Timestamp {
        self.wall
    }

    /// The wall-clock time of `at`.
    pub fn wall_at(&self, at: Instant) -> Timestamp {
        let offset = if at >= self.instant {
            k8s_openapi::jiff::SignedDuration::try_from(at - self.instant)
        } else {
            k8s_openapi::jiff::SignedDuration::try_from(self.instant - at).map(|d| -d)
        };
        offset
            .ok()
            .and_then(|offset| self.wall.checked_add(offset).ok())
            .unwrap_or(self.wall)
    }

    /// Seconds from this clock's start to `at`.
    pub fn secs_until(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.instant).as_secs_f64()
    }
}

/// A spawned task that ends with its owner.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
