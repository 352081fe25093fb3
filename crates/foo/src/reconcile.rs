use capstan_runtime::{
    Action, Context, Names, ReconcileError, Reconciler, SharedIndex,
    conditions::{DesiredCondition, READY, merge_conditions},
};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use std::sync::Arc;

use crate::{Foo, FooStatus};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Status(#[source] capstan_runtime::Error),
    #[error("Foo has no namespace")]
    NotNamespaced,
}

impl ReconcileError for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Status(e) => e.metric_label(),
            Error::NotNamespaced => "not_namespaced",
        }
    }
}

pub struct FooReconciler {
    pods: SharedIndex<Names>,
}

impl FooReconciler {
    pub fn new(pods: SharedIndex<Names>) -> Self {
        Self { pods }
    }
}

/// The status a Foo should have given whether its friend exists.
/// What the reconcile has read for a Foo: whether its friend Pod exists, and the time its
/// conditions change at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub friend_exists: bool,
    pub now: Timestamp,
}

/// What a Foo should look like: only its status (a Foo owns no children).
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub status: FooStatus,
}

/// The pure step of the reconcile, from the Foo and what was read to what is written.
pub fn desired(foo: &Foo, inputs: &Inputs) -> Desired {
    Desired {
        status: build_status(foo, inputs.friend_exists, inputs.now),
    }
}

pub(crate) fn build_status(foo: &Foo, friend_exists: bool, now: Timestamp) -> FooStatus {
    let friend = &foo.spec.name;
    let ready = if friend_exists {
        DesiredCondition::new(READY, true, "FriendFound", format!("Pod {friend} exists"))
    } else {
        DesiredCondition::new(
            READY,
            false,
            "FriendMissing",
            format!("no Pod named {friend} in this namespace"),
        )
    };
    let previous = foo.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    FooStatus {
        happy: friend_exists,
        observed_generation: foo.meta().generation,
        conditions: merge_conditions(previous, &[ready], foo.meta().generation, now),
    }
}

impl Reconciler for FooReconciler {
    type Object = Foo;
    type Error = Error;
    const NAME: &'static str = "foo";

    async fn reconcile(&self, foo: Arc<Foo>, ctx: &Context) -> Result<Action, Error> {
        let namespace = foo.namespace().ok_or(Error::NotNamespaced)?;
        let friend_exists = self.pods.read(|pods| pods.contains(&namespace, &foo.spec.name));
        let inputs = Inputs {
            friend_exists,
            now: Timestamp::now(),
        };
        let Desired { status } = desired(&foo, &inputs);
        ctx.apply_status(foo.as_ref(), foo.status.as_ref(), &status)
            .await
            .map_err(Error::Status)?;

        let was_happy = foo.status.as_ref().map(|s| s.happy);
        if was_happy.is_some_and(|was| was != friend_exists) || (was_happy.is_none() && friend_exists) {
            let (reason, note) = if friend_exists {
                ("Happy", format!("friend Pod {} appeared", foo.spec.name))
            } else {
                ("Unhappy", format!("friend Pod {} is gone", foo.spec.name))
            };
            ctx.events().normal(&foo.object_ref(&()), reason, "UpdateStatus", note);
        }
        // Pod and Foo events drive everything; no periodic resync is needed.
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FooSpec;
    use capstan_runtime::conditions::is_true;

    #[test]
    fn status_is_happy_and_ready_iff_the_friend_exists() {
        let mut foo = Foo::new("foo-01", FooSpec { name: "jack".into() });
        foo.metadata.generation = Some(3);
        let now = Timestamp::from_second(1_000).expect("time");
        let happy = build_status(&foo, true, now);
        assert!(happy.happy);
        assert_eq!(happy.observed_generation, Some(3));
        assert!(is_true(&happy.conditions, READY));
        assert_eq!(happy.conditions[0].reason, "FriendFound");
        let sad = build_status(&foo, false, now);
        assert!(!sad.happy);
        assert!(!is_true(&sad.conditions, READY));
        assert_eq!(sad.conditions[0].reason, "FriendMissing");
    }

    #[test]
    fn an_unchanged_status_rebuilds_identically() {
        let mut foo = Foo::new("foo-01", FooSpec { name: "jack".into() });
        foo.metadata.generation = Some(1);
        foo.status = Some(build_status(&foo, true, Timestamp::from_second(1_000).expect("time")));
        let later = build_status(&foo, true, Timestamp::from_second(9_000).expect("time"));
        assert_eq!(
            Some(&later),
            foo.status.as_ref(),
            "a resync must not produce a new status"
        );
    }
}
