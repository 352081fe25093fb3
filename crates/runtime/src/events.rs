//! Kubernetes Events for meaningful transitions. Publishing is best effort and off the reconcile's
//! path (like client-go's broadcaster): an Event that cannot be written is logged, never turned
//! into a reconcile failure, and a reconcile never waits for one.
//!
//! A repeat of an Event (same type, action, reason and object) within six minutes is counted in
//! the first one's `series` instead of written anew, as client-go's events library does. kube's
//! `Recorder` does the same but keeps every published Event whole for those six minutes (~2 KB
//! each: with thousands of objects created at once, megabytes of a manager's memory); this keeps
//! only what a repeat needs — the Event's name, its count and when it was last seen.
use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::lock;

/// How long a published Event takes repeats into its series (client-go's and kube's figure).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// Publishes events on behalf of one controller.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    /// `reportingController`: `capstan-<controller>`.
    controller: Arc<str>,
    /// `reportingInstance`: the Pod's name, else the controller's.
    instance: Arc<str>,
    recent: Arc<Mutex<RecentEvents>>,
}

impl EventPublisher {
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        let controller: Arc<str> = format!("capstan-{controller}").into();
        Self {
            client,
            instance: instance.map_or_else(|| controller.clone(), Into::into),
            controller,
            recent: Arc::default(),
        }
    }

    pub fn normal(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(regarding, "Normal", reason, action, note);
    }

    pub fn warning(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(regarding, "Warning", reason, action, note);
    }

    fn publish(&self, regarding: &ObjectReference, type_: &'static str, reason: &str, action: &str, note: String) {
        let (publisher, regarding, reason, action) =
            (self.clone(), regarding.clone(), reason.to_owned(), action.to_owned());
        tokio::spawn(async move {
            if let Err(error) = publisher.write(&regarding, type_, &reason, &action, note).await {
                tracing::warn!(%error, reason, "could not publish event");
            }
        });
    }

    async fn write(
        &self,
        regarding: &ObjectReference,
        type_: &'static str,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let key = series_key(regarding, type_, reason, action);
        let repeat = lock(&self.recent).repeat(&key, now);
        if let Some(repeat) = repeat {
            let series = EventSeries {
                count: repeat.count,
                last_observed_time: MicroTime(now),
            };
            let patch = serde_json::json!({ "series": series });
            match events
                .patch(&repeat.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // Deleted (or expired) since: start a new series below.
                Err(kube::Error::Api(status)) if status.code == 404 => lock(&self.recent).forget(&key),
                Err(error) => return Err(error),
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_.to_owned()),
            reason: Some(reason.to_owned()),
            action: Some(action.to_owned()),
            note: Some(within_note_limit(note)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.to_string()),
            reporting_instance: Some(self.instance.to_string()),
            ..Event::default()
        };
        // Remembered before it is written, so a repeat right behind it joins its series.
        lock(&self.recent).remember(key.clone(), name, now);
        let created = events.create(&PostParams::default(), &event).await;
        if created.is_err() {
            lock(&self.recent).forget(&key);
        }
        created.map(|_| ())
    }
}

/// The apiserver refuses an Event whose note is over 1 KB (a long 422 message can be): cut it at
/// a character boundary with a mark that it was cut.
fn within_note_limit(mut note: String) -> String {
    const LIMIT: usize = 1024;
    const MARK: &str = " …";
    if note.len() > LIMIT {
        let mut end = LIMIT - MARK.len();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str(MARK);
    }
    note
}

/// What identifies repeats of one Event: client-go's key (the note is not part of it).
fn series_key(regarding: &ObjectReference, type_: &str, reason: &str, action: &str) -> Box<str> {
    let field = |f: &Option<String>| f.clone().unwrap_or_default();
    [
        type_.to_owned(),
        action.to_owned(),
        reason.to_owned(),
        field(&regarding.api_version),
        field(&regarding.kind),
        field(&regarding.namespace),
        field(&regarding.name),
        field(&regarding.uid),
        field(&regarding.field_path),
    ]
    .join("\0")
    .into()
}

/// The Events published in the last [`SERIES_WINDOW`], by [`series_key`].
#[derive(Default)]
struct RecentEvents {
    by_key: HashMap<Box<str>, Published>,
    /// When expired entries were last dropped.
    swept: Option<Timestamp>,
}

struct Published {
    name: Box<str>,
    /// Occurrences so far, the first included.
    count: i32,
    last_seen: Timestamp,
}

/// A repeat to count in an existing Event's series.
#[derive(Debug, PartialEq)]
struct Repeat {
    name: String,
    count: i32,
}

impl RecentEvents {
    /// If `key` was published within the window, counts this occurrence and returns the Event to
    /// patch. Drops expired entries now and then (a sweep per publish would be quadratic).
    fn repeat(&mut self, key: &str, now: Timestamp) -> Option<Repeat> {
        if self
            .swept
            .is_none_or(|swept| swept + SignedDuration::from_secs(10) <= now)
        {
            self.by_key
                .retain(|_, published| published.last_seen + SERIES_WINDOW > now);
            self.swept = Some(now);
        }
        let published = self.by_key.get_mut(key)?;
        if published.last_seen + SERIES_WINDOW <= now {
            self.by_key.remove(key);
            return None;
        }
        published.count = published.count.saturating_add(1);
        published.last_seen = now;
        Some(Repeat {
            name: published.name.to_string(),
            count: published.count,
        })
    }

    fn remember(&mut self, key: Box<str>, name: String, now: Timestamp) {
        self.by_key.insert(
            key,
            Published {
                name: name.into(),
                count: 1,
                last_seen: now,
            },
        );
    }

    fn forget(&mut self, key: &str) {
        self.by_key.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn repeats_within_six_minutes_count_into_the_first_event() {
        let mut recent = RecentEvents::default();
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(1000);
        let key = series_key(&pod("a", "1"), "Warning", "Refused", "Apply");
        assert_eq!(recent.repeat(&key, t0), None, "nothing published yet");
        recent.remember(key.clone(), "a.1".into(), t0);
        let later = t0 + SignedDuration::from_mins(5);
        assert_eq!(
            recent.repeat(&key, later),
            Some(Repeat {
                name: "a.1".into(),
                count: 2
            })
        );
        // The window runs from the last occurrence, as a series' lastObservedTime does.
        let much_later = later + SignedDuration::from_mins(5);
        assert_eq!(recent.repeat(&key, much_later).map(|r| r.count), Some(3));
        let expired = much_later + SERIES_WINDOW;
        assert_eq!(recent.repeat(&key, expired), None, "a quiet window ends the series");
        assert!(recent.by_key.is_empty(), "the expired entry is dropped");
    }

    #[test]
    fn another_reason_object_or_uid_is_another_series() {
        let base = series_key(&pod("a", "1"), "Warning", "Refused", "Apply");
        for other in [
            series_key(&pod("a", "1"), "Normal", "Refused", "Apply"),
            series_key(&pod("a", "1"), "Warning", "Other", "Apply"),
            series_key(&pod("a", "1"), "Warning", "Refused", "Delete"),
            series_key(&pod("b", "1"), "Warning", "Refused", "Apply"),
            series_key(&pod("a", "2"), "Warning", "Refused", "Apply"),
        ] {
            assert_ne!(base, other);
        }
        // Fields are separated, so moving a character across a boundary is another key.
        assert_ne!(
            series_key(&pod("ab", "1"), "Warning", "Refused", "Apply"),
            series_key(&pod("a", "b1"), "Warning", "Refused", "Apply")
        );
    }

    #[test]
    fn long_notes_are_cut_to_the_apiservers_limit_at_a_character_boundary() {
        assert_eq!(within_note_limit("short".into()), "short");
        let exact = "x".repeat(1024);
        assert_eq!(within_note_limit(exact.clone()), exact);
        for long in ["x".repeat(5000), "é".repeat(700), format!("x{}", "€".repeat(600))] {
            let cut = within_note_limit(long.clone());
            assert!(cut.len() <= 1024 && cut.len() > 1000, "{}", cut.len());
            assert!(cut.ends_with(" …"));
            assert!(long.starts_with(cut.trim_end_matches(" …")));
        }
    }

    #[test]
    fn expired_entries_are_swept_even_if_never_repeated() {
        let mut recent = RecentEvents::default();
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(1000);
        for i in 0..100 {
            let key = series_key(&pod(&format!("p{i}"), "1"), "Normal", "Created", "Create");
            recent.remember(key, format!("p{i}.1"), t0);
        }
        let other = series_key(&pod("q", "1"), "Normal", "Created", "Create");
        assert_eq!(recent.repeat(&other, t0 + SERIES_WINDOW), None);
        assert!(recent.by_key.is_empty(), "{} entries left", recent.by_key.len());
    }
}
