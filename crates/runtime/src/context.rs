//! What a reconcile gets besides its object: the client, events, and writes that are counted and
//! skipped when they would change nothing.
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use std::fmt::Debug;
use tokio::sync::watch;

use crate::{
    Error,
    apply::{self, ApplyOutcome},
    events::EventPublisher,
    informer::Informable,
    metrics::Metrics,
};

pub struct Context {
    client: Client,
    leader: watch::Receiver<bool>,
    controller: &'static str,
    events: EventPublisher,
    metrics: Metrics,
}

impl Context {
    pub fn new(
        client: Client,
        controller: &'static str,
        metrics: Metrics,
        instance: Option<String>,
        leader: watch::Receiver<bool>,
    ) -> Self {
        let events = EventPublisher::new(client.clone(), controller, instance);
        Self {
            client,
            leader,
            controller,
            events,
            metrics,
        }
    }

    /// Writes are refused once leadership is lost, even by a reconcile that started as leader.
    fn ensure_leader(&self) -> Result<(), Error> {
        if *self.leader.borrow() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
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

    /// Server-side applies `desired` in its namespace unless `current` already matches it.
    pub async fn apply<K>(&self, desired: &K, current: Option<&K>) -> Result<ApplyOutcome, Error>
    where
        K: Informable + Serialize,
    {
        self.ensure_leader()?;
        let namespace = desired.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        let api = Api::<K>::namespaced(self.client.clone(), &namespace);
        let outcome = apply::apply(&api, desired, current).await?;
        self.count(outcome, &K::kind(&()));
        Ok(outcome)
    }

    /// Writes `status` to `obj`'s status subresource unless it already holds it.
    pub async fn apply_status<K, S>(&self, obj: &K, current: Option<&S>, status: &S) -> Result<ApplyOutcome, Error>
    where
        K: Informable,
        S: Serialize + Debug,
    {
        self.ensure_leader()?;
        let namespace = obj.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        let api = Api::<K>::namespaced(self.client.clone(), &namespace);
        let outcome = apply::apply_status(&api, obj, current, status).await?;
        self.count(outcome, &format!("{}/status", K::kind(&())));
        Ok(outcome)
    }

    fn count(&self, outcome: ApplyOutcome, target: &str) {
        match outcome {
            ApplyOutcome::Applied => self.metrics.apply_sent(self.controller, target),
            ApplyOutcome::Unchanged => self.metrics.apply_skipped(self.controller, target),
        }
    }
}
