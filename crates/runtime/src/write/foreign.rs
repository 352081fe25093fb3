//! Waking an owner whose child was refused because a same-named object someone else controls is
//! in the way ([`Error::ForeignChild`](crate::Error::ForeignChild)).
//!
//! Child caches hold only capstan's objects, so the foreign object's deletion reaches no informer
//! and the refused owner, which waits for a change, would wait forever. While a refusal is
//! outstanding, one watch of that single name (field selector `metadata.name`) waits for the
//! object to go away or change hands, then queues the owner. A refusal lasts until the owner's
//! next reconcile that does not refuse the same child again, the owner's deletion, the loss of
//! leadership, or the controller's end: no such watch runs without an outstanding refusal.
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt, watcher},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::{informer::WatchBackoff, lock, process::leadership::Leadership, process::metrics::Metrics};

/// `(namespace, name)` of an owner the controller reconciles.
pub(crate) type OwnerKey = (String, String);

/// The object in the way: which kind, which name (in the owner's namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Blocked {
    group: String,
    version: String,
    plural: String,
    name: String,
}

/// The foreign object as it was when it was refused; any other state may free the name.
#[derive(Debug, Clone, PartialEq)]
struct Blocker {
    uid: Option<String>,
    owner_references: Vec<OwnerReference>,
}

impl Blocker {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            uid: meta.uid.clone(),
            owner_references: meta.owner_references.clone().unwrap_or_default(),
        }
    }
}

struct Refusal {
    id: u64,
    /// Refused again during the owner's reconcile in progress (see [`ForeignWatches::begin`]).
    renewed: bool,
    watch: AbortHandle,
}

#[derive(Default)]
struct Refusals {
    next_id: u64,
    by_owner: HashMap<OwnerKey, HashMap<Blocked, Refusal>>,
}

impl Refusals {
    fn len(&self) -> usize {
        self.by_owner.values().map(HashMap::len).sum()
    }
}

/// The outstanding refusals of one controller, each with its watch.
pub(crate) struct ForeignWatches {
    client: Client,
    controller: &'static str,
    owner_kind: String,
    owner_api_version: String,
    metrics: Metrics,
    leadership: Leadership,
    wake: mpsc::UnboundedSender<OwnerKey>,
    refusals: Mutex<Refusals>,
}

impl ForeignWatches {
    /// Refusals of owners of `owner_kind`/`owner_api_version` (the controller's kind) are
    /// watched; a freed name sends the owner on `wake`.
    pub(crate) fn new(
        client: Client,
        controller: &'static str,
        (owner_kind, owner_api_version): (String, String),
        metrics: Metrics,
        leadership: Leadership,
        wake: mpsc::UnboundedSender<OwnerKey>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            controller,
            owner_kind,
            owner_api_version,
            metrics,
            leadership,
            wake,
            refusals: Mutex::new(Refusals::default()),
        })
    }

    /// Records that `owner` was refused the child `resource`/`name` in `namespace` because
    /// `existing` is in the way, and watches that name unless it is watched already. Owners of
    /// another kind than the controller's are not tracked (nothing would reconcile them).
    pub(crate) fn refused(
        self: &Arc<Self>,
        owner: &OwnerReference,
        namespace: &str,
        resource: &ApiResource,
        name: &str,
        existing: &ObjectMeta,
    ) {
        if owner.kind != self.owner_kind || owner.api_version != self.owner_api_version {
            return;
        }
        let owner_key = (namespace.to_owned(), owner.name.clone());
        let blocked = Blocked {
            group: resource.group.clone(),
            version: resource.version.clone(),
            plural: resource.plural.clone(),
            name: name.to_owned(),
        };
        let mut refusals = lock(&self.refusals);
        if let Some(refusal) = refusals
            .by_owner
            .get_mut(&owner_key)
            .and_then(|children| children.get_mut(&blocked))
        {
            refusal.renewed = true;
            return;
        }
        refusals.next_id += 1;
        let id = refusals.next_id;
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, resource);
        let watch = tokio::spawn(watch_until_freed(
            Arc::downgrade(self),
            api,
            owner_key.clone(),
            blocked.clone(),
            Blocker::of(existing),
            id,
        ))
        .abort_handle();
        refusals.by_owner.entry(owner_key).or_default().insert(
            blocked,
            Refusal {
                id,
                renewed: true,
                watch,
            },
        );
        self.metrics.set_foreign_child_watches(self.controller, refusals.len());
    }

    /// A reconcile of `owner` starts: its refusals count as outstanding only if it refuses them
    /// again before [`end`](Self::end). kube's controller never runs two reconciles of one object
    /// at once, so the marks cannot mix.
    pub(crate) fn begin(&self, owner: &OwnerKey) {
        if let Some(children) = lock(&self.refusals).by_owner.get_mut(owner) {
            for refusal in children.values_mut() {
                refusal.renewed = false;
            }
        }
    }

    /// The reconcile of `owner` ended (however): refusals it did not renew are over.
    pub(crate) fn end(&self, owner: &OwnerKey) {
        self.drop_where(owner, |refusal| !refusal.renewed);
    }

    /// `owner` was deleted: none of its refusals matter any more.
    pub(crate) fn forget(&self, owner: &OwnerKey) {
        self.drop_where(owner, |_| true);
    }

    fn drop_where(&self, owner: &OwnerKey, over: impl Fn(&Refusal) -> bool) {
        let mut refusals = lock(&self.refusals);
        let Some(children) = refusals.by_owner.get_mut(owner) else {
            return;
        };
        children.retain(|_, refusal| {
            let keep = !over(refusal);
            if !keep {
                refusal.watch.abort();
            }
            keep
        });
        if children.is_empty() {
            refusals.by_owner.remove(owner);
        }
        self.metrics.set_foreign_child_watches(self.controller, refusals.len());
    }

    /// The watch `id` ended: removes its refusal (unless a newer one replaced it) and, when the
    /// name was freed, queues the owner.
    fn finished(&self, owner: &OwnerKey, blocked: &Blocked, id: u64, freed: bool) {
        {
            let mut refusals = lock(&self.refusals);
            if let Some(children) = refusals.by_owner.get_mut(owner) {
                if children.get(blocked).is_some_and(|r| r.id == id) {
                    children.remove(blocked);
                }
                if children.is_empty() {
                    refusals.by_owner.remove(owner);
                }
            }
            self.metrics.set_foreign_child_watches(self.controller, refusals.len());
        }
        if freed {
            tracing::info!(
                controller = self.controller,
                namespace = %owner.0,
                owner = %owner.1,
                blocking = %format!("{}/{}", blocked.plural, blocked.name),
                "the object in the way of a child went away or changed hands; reconciling its owner"
            );
            self.metrics.foreign_child_wakeup(self.controller);
            // A closed receiver is a stopped controller: nothing left to wake.
            let _ = self.wake.send(owner.clone());
        }
    }
}

impl Drop for ForeignWatches {
    fn drop(&mut self) {
        // The controller stopped: its watches go with it.
        for children in lock(&self.refusals).by_owner.values() {
            for refusal in children.values() {
                refusal.watch.abort();
            }
        }
    }
}

/// Watches `blocked.name` until it no longer holds `blocker` (deleted, replaced, or its owner
/// references changed) or leadership is lost, then reports to `watches`.
async fn watch_until_freed(
    watches: Weak<ForeignWatches>,
    api: Api<DynamicObject>,
    owner: OwnerKey,
    blocked: Blocked,
    blocker: Blocker,
    id: u64,
) {
    let Some(leadership) = watches.upgrade().map(|w| w.leadership.clone()) else {
        return;
    };
    let config = watcher::Config::default().fields(&format!("metadata.name={}", blocked.name));
    let freed = tokio::select! {
        () = leadership.lost() => false,
        () = until_freed(api, config, &blocker) => true,
    };
    if let Some(watches) = watches.upgrade() {
        watches.finished(&owner, &blocked, id, freed);
    }
}

async fn until_freed(api: Api<DynamicObject>, config: watcher::Config, blocker: &Blocker) {
    let events = watcher(api, config).backoff(WatchBackoff::default());
    let mut events = std::pin::pin!(events);
    // What the current (re-)list found under the name.
    let mut listed: Option<Blocker> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::debug!(%error, "watch of an object in the way failed; retrying");
                continue;
            }
        };
        let still_blocked = match event {
            watcher::Event::Init => {
                listed = None;
                true
            }
            watcher::Event::InitApply(obj) => {
                listed = Some(Blocker::of(&obj.metadata));
                true
            }
            watcher::Event::InitDone => listed.as_ref() == Some(blocker),
            watcher::Event::Apply(obj) => Blocker::of(&obj.metadata) == *blocker,
            watcher::Event::Delete(_) => false,
        };
        if !still_blocked {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, controller_uid: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            owner_references: controller_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "other".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]
            }),
            resource_version: Some("1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_blocker_is_the_same_object_with_the_same_owners_whatever_else_changes() {
        let refused = Blocker::of(&meta("u1", None));
        let mut updated = meta("u1", None);
        updated.resource_version = Some("2".into());
        updated.labels = Some([("a".to_owned(), "b".to_owned())].into());
        assert_eq!(Blocker::of(&updated), refused, "a status or label change frees nothing");
        assert_ne!(Blocker::of(&meta("u2", None)), refused, "replaced by another object");
        assert_ne!(Blocker::of(&meta("u1", Some("o"))), refused, "changed hands");
    }
}
