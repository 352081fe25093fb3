//! The watch every informer runs, and what its subscribers are sent through.
use futures::{Stream, StreamExt};
use kube::{
    Api, Resource,
    core::NamespaceResourceScope,
    runtime::{WatchStreamExt, utils::Backoff, watcher},
};
use serde::de::DeserializeOwned;
use std::{
    fmt::Debug,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::mpsc;

/// Kinds an informer can watch: namespaced, statically typed Kubernetes objects.
pub trait Informable:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Informable for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// The senders of one informer's changes, one per subscriber.
pub(crate) type Subscribers<K> = Arc<Mutex<Vec<mpsc::Sender<Arc<K>>>>>;

/// The watch behind an informer: retried with [`WatchBackoff`], each object trimmed before anyone
/// sees it, failures logged and skipped (the watcher itself re-lists after them).
pub(crate) fn events<K: Informable>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> impl Stream<Item = watcher::Event<K>> + Send {
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .modify(move |obj: &mut K| {
            // Managed fields are most of an object's size and no controller reads them.
            obj.meta_mut().managed_fields = None;
            trim(obj);
        })
        .filter_map(|event| async move {
            event
                .inspect_err(
                    |error| tracing::warn!(%error, kind = %K::kind(&()), "watch failed; retrying with backoff"),
                )
                .ok()
        })
}

pub(crate) async fn send<K>(senders: &[mpsc::Sender<Arc<K>>], obj: Arc<K>) {
    for sender in senders {
        // A closed receiver is a controller that has stopped; the others still listen.
        let _ = sender.send(obj.clone()).await;
    }
}

/// Retry delays for a failed watch: 250 ms doubling to 5 s, with jitter. kube's default climbs to
/// 30 s, which after a 20 s apiserver outage leaves a manager deaf for up to half a minute more.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchBackoff {
    failures: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = Duration::from_millis(250)
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(Duration::from_secs(5));
        self.failures = self.failures.saturating_add(1);
        // Up to 25 % jitter so that many watches do not retry in lockstep.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Some(base + base.mul_f64(f64::from(nanos % 1000) / 4000.0))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_grows_to_five_seconds_and_resets() {
        let mut backoff = WatchBackoff::default();
        let first = backoff.next().expect("delay");
        assert!(
            first >= Duration::from_millis(250) && first <= Duration::from_millis(313),
            "{first:?}"
        );
        let late = backoff.by_ref().nth(10).expect("delay");
        assert!(
            late >= Duration::from_secs(5) && late <= Duration::from_millis(6250),
            "{late:?}"
        );
        backoff.reset();
        assert!(backoff.next().expect("delay") < Duration::from_millis(313));
    }
}
