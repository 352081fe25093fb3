//! Kubernetes Events for meaningful transitions. Publishing is best effort and off the reconcile's
//! path (like client-go's broadcaster): an Event that cannot be written is logged, never turned
//! into a reconcile failure, and a reconcile never waits for one.
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Publishes events on behalf of one controller.
#[derive(Clone)]
pub struct EventPublisher {
    recorder: Recorder,
}

impl EventPublisher {
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: format!("capstan-{controller}"),
            instance,
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    pub fn normal(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(regarding, EventType::Normal, reason, action, note);
    }

    pub fn warning(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(regarding, EventType::Warning, reason, action, note);
    }

    fn publish(&self, regarding: &ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        let (recorder, regarding, reason) = (self.recorder.clone(), regarding.clone(), reason.to_owned());
        tokio::spawn(async move {
            if let Err(error) = recorder.publish(&event, &regarding).await {
                tracing::warn!(%error, reason, "could not publish event");
            }
        });
    }
}
