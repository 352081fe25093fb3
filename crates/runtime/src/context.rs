//! What a reconcile gets besides its object: the client, events, leadership, and writes that are
//! leader-checked, counted, and skipped when they would change nothing.
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PropagationPolicy},
};
use serde::Serialize;
use std::{fmt::Debug, sync::Arc};

use crate::{
    Error,
    events::EventPublisher,
    informer::Informable,
    process::leadership::Leadership,
    process::metrics::Metrics,
    write::apply::{self, ApplyOutcome},
    write::children::OwnedKind,
    write::foreign::ForeignWatches,
    write::status_writes::{StatusKey, StatusWrites},
};

pub struct Context {
    client: Client,
    leadership: Leadership,
    controller: &'static str,
    events: EventPublisher,
    metrics: Metrics,
    /// Set by the controller that runs this context: refused children are watched so their
    /// owner is woken when the object in the way goes.
    foreign: Option<Arc<ForeignWatches>>,
    /// The kinds the controller owns, for [`Children::prune_all`](crate::Children::prune_all).
    owned: Vec<Arc<dyn OwnedKind>>,
    status_writes: StatusWrites,
}

impl Context {
    pub fn new(
        client: Client,
        controller: &'static str,
        metrics: Metrics,
        instance: Option<String>,
        leadership: Leadership,
    ) -> Self {
        let events = EventPublisher::new(client.clone(), controller, instance);
        Self {
            client,
            leadership,
            controller,
            events,
            metrics,
            foreign: None,
            owned: Vec::new(),
            status_writes: StatusWrites::default(),
        }
    }

    pub(crate) fn with_foreign_watches(mut self, foreign: Arc<ForeignWatches>) -> Self {
        self.foreign = Some(foreign);
        self
    }

    pub(crate) fn with_owned_kinds(mut self, owned: Vec<Arc<dyn OwnedKind>>) -> Self {
        self.owned = owned;
        self
    }

    pub(crate) fn owned_kinds(&self) -> &[Arc<dyn OwnedKind>] {
        &self.owned
    }

    pub(crate) fn foreign_watches(&self) -> Option<&Arc<ForeignWatches>> {
        self.foreign.as_ref()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn controller(&self) -> &'static str {
        self.controller
    }

    pub fn events(&self) -> &EventPublisher {
        &self.events
    }

    /// Whether this manager leads; guard side effects outside Kubernetes with
    /// [`Leadership::while_leader`].
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// Server-side applies `desired` in its namespace unless `current` already matches it.
    /// For objects the reconciled object owns, use [`Context::children`] instead.
    pub async fn apply<K>(&self, desired: &K, current: Option<&K>) -> Result<ApplyOutcome, Error>
    where
        K: Informable + Serialize,
    {
        Ok(self.apply_returning(desired, current).await?.0)
    }

    /// [`apply`](Self::apply), also returning the object as stored when it was written.
    pub(crate) async fn apply_returning<K>(
        &self,
        desired: &K,
        current: Option<&K>,
    ) -> Result<(ApplyOutcome, Option<K>), Error>
    where
        K: Informable + Serialize,
    {
        // Writes are refused once leadership is lost, even by a reconcile that started as leader.
        self.leadership.check()?;
        let namespace = desired.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        let api = Api::<K>::namespaced(self.client.clone(), &namespace);
        let (outcome, stored) = apply::apply_returning(&api, desired, current).await?;
        self.count(outcome, &K::kind(&()));
        Ok((outcome, stored))
    }

    /// Writes `status` to `obj`'s status subresource unless it already holds it.
    pub async fn apply_status<K, S>(&self, obj: &K, current: Option<&S>, status: &S) -> Result<ApplyOutcome, Error>
    where
        K: Informable,
        S: Serialize + Debug,
    {
        self.leadership.check()?;
        let namespace = obj.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        let target = format!("{}/status", K::kind(&()));
        // A cache that has not shown this controller's last write yet must not cause it twice.
        let key = status_key(obj);
        let from_version = obj.resource_version();
        let mut desired = serde_json::to_value(status).map_err(|source| Error::Serialize { what: "status", source })?;
        if self
            .status_writes
            .already_written(&key, from_version.as_deref(), &mut desired)
        {
            self.count(ApplyOutcome::Unchanged, &target);
            return Ok(ApplyOutcome::Unchanged);
        }
        let api = Api::<K>::namespaced(self.client.clone(), &namespace);
        let (outcome, stored) = apply::apply_status_value(&api, obj, current, &desired).await?;
        if let Some(stored) = stored {
            self.status_writes
                .record(key, from_version, stored.resource_version(), &desired);
        }
        self.count(outcome, &target);
        Ok(outcome)
    }

    /// Deletes `namespace/name` (in the background: dependents go with it). An object already
    /// gone counts as deleted. Refused unless this manager leads.
    pub async fn delete<K: Informable>(&self, namespace: &str, name: &str) -> Result<(), Error> {
        self.leadership.check()?;
        let api = Api::<K>::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        self.metrics.delete_sent(self.controller, &K::kind(&()));
        Ok(())
    }

    /// Takes in a changed object as the cache now holds it.
    pub(crate) fn observe<K: Informable>(&self, obj: &K) {
        self.status_writes
            .observe(&status_key(obj), obj.meta().resource_version.as_deref());
    }

    /// Forgets what this context remembers of a deleted object.
    pub(crate) fn forget<K: Informable>(&self, obj: &K) {
        self.status_writes.forget(&status_key(obj));
    }

    pub(crate) fn count(&self, outcome: ApplyOutcome, target: &str) {
        match outcome {
            ApplyOutcome::Applied => self.metrics.apply_sent(self.controller, target),
            ApplyOutcome::Unchanged => self.metrics.apply_skipped(self.controller, target),
        }
    }
}

fn status_key<K: Informable>(obj: &K) -> StatusKey {
    (
        K::kind(&()).into_owned(),
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
    )
}
