//! The status a Memcached should have, from what the caches hold: pure, so every case is a unit
//! test. It never says `Ready` from a Deployment status that predates the spec it describes.
use capstan_runtime::{
    conditions::{DesiredCondition, READY, merge_conditions},
    labels::selector_labels,
    needs_apply,
};
use k8s_openapi::{
    api::apps::v1::{Deployment, DeploymentCondition},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt};

use crate::{Memcached, MemcachedStatus, SpecError, build::APP};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// The condition types capstan writes on a Memcached. Its status apply carries only these, so a
/// condition another field manager added is never claimed (or re-applied) by capstan.
pub const OWN_CONDITIONS: [&str; 4] = [AVAILABLE, PROGRESSING, DEGRADED, READY];

/// What the controller found when it went to apply the Deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed<'a> {
    /// The owned Deployment as cached (None before it exists). `just_changed`: this reconcile
    /// applied a new Deployment spec, so the cached copy (generation, status) predates it.
    Owned {
        deployment: Option<&'a Deployment>,
        just_changed: bool,
    },
    /// An object of this `kind` and the Memcached's name exists and this Memcached does not
    /// control it.
    Conflict { kind: &'a str },
    /// The spec is invalid; no Deployment was applied.
    Invalid(&'a SpecError),
    /// The apiserver refused an owned object as invalid (422), with this message.
    Rejected(&'a str),
}

/// Whether applying `desired` over `current` changes the Deployment's spec (template, replicas,
/// deadline): then the Deployment's generation moves and a rollout or scale begins.
pub fn changes_deployment_spec(desired: &Deployment, current: Option<&Deployment>) -> bool {
    let Some(current) = current else { return true };
    match (serde_json::to_value(&desired.spec), serde_json::to_value(&current.spec)) {
        (Ok(desired), Ok(current)) => needs_apply(&desired, Some(&current)),
        // Cannot tell: assume a change, which at worst reports a rollout one reconcile too long.
        _ => true,
    }
}

/// The label selector string of a Memcached's Pods (the scale subresource's `status.selector`).
pub fn pod_selector(mc: &Memcached) -> String {
    selector_labels(APP, &mc.name_any())
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `status` with only the conditions capstan owns: what capstan's status apply should be
/// compared with, since conditions of other managers are not part of it.
pub fn own_part(status: &MemcachedStatus) -> MemcachedStatus {
    MemcachedStatus {
        conditions: status
            .conditions
            .iter()
            .filter(|c| OWN_CONDITIONS.contains(&c.type_.as_str()))
            .cloned()
            .collect(),
        ..status.clone()
    }
}

/// Why a Deployment cannot make progress, as it reports it: `Progressing=False/
/// ProgressDeadlineExceeded`, or a `ReplicaFailure` (Pods it cannot create, such as a quota).
fn deployment_failure(deployment: &Deployment) -> Option<(&'static str, String)> {
    let conditions = deployment.status.as_ref()?.conditions.as_deref().unwrap_or_default();
    let find = |type_: &str, status: &str| {
        conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some(type_) && c.status.as_deref() == Some(status))
    };
    let message = |c: &DeploymentCondition| c.message.clone().unwrap_or_default();
    if let Some(c) = find("Progressing", "False")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Some(("ProgressDeadlineExceeded", message(c)));
    }
    find("ReplicaFailure", "True").map(|c| {
        // Reasons are `&'static str`: the ones the Deployment controller uses, else the type.
        let reason = match c.reason.as_deref() {
            Some("FailedCreate") => "FailedCreate",
            Some("FailedDelete") => "FailedDelete",
            _ => "ReplicaFailure",
        };
        (reason, message(c))
    })
}

fn deployment_available(deployment: &Deployment) -> bool {
    deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_.as_deref() == Some("Available")))
        .is_some_and(|c| c.status.as_deref() == Some("True"))
}

fn owned_conditions(size: i32, deployment: Option<&Deployment>, just_changed: bool) -> Vec<DesiredCondition> {
    let status = deployment.and_then(|d| d.status.as_ref());
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let replicas = status.and_then(|s| s.replicas).unwrap_or(0);
    // The Deployment controller has acted on the spec capstan last applied: only then do its
    // counts and conditions describe that spec.
    let observed_current = !just_changed
        && deployment.is_some_and(|d| {
            let observed = status.and_then(|s| s.observed_generation);
            observed.is_some() && observed >= d.metadata.generation
        });
    let failure = deployment.filter(|_| observed_current).and_then(deployment_failure);
    let rolled_out = observed_current && updated == size && ready == size && replicas == size;
    let available = deployment.is_some_and(deployment_available);
    let pods_ready = format!("{ready}/{size} memcached Pods ready");

    let degraded = match &failure {
        Some((reason, message)) => DesiredCondition::new(DEGRADED, true, reason, message.clone()),
        None => DesiredCondition::new(DEGRADED, false, "AsExpected", ""),
    };
    let progressing = match &failure {
        Some(("ProgressDeadlineExceeded", message)) => {
            DesiredCondition::new(PROGRESSING, false, "ProgressDeadlineExceeded", message.clone())
        }
        _ if rolled_out && size == 0 => {
            DesiredCondition::new(PROGRESSING, false, "ScaledToZero", "size is 0: no memcached Pods run")
        }
        _ if rolled_out => DesiredCondition::new(
            PROGRESSING,
            false,
            "RolloutComplete",
            format!("{size} Pods up to date and ready"),
        ),
        // Only what a person waits for (ready Pods): counts that move on the way, like updated
        // replicas, would each cost a status write.
        _ if size == 0 => DesiredCondition::new(PROGRESSING, true, "ScalingToZero", "stopping every memcached Pod"),
        _ => DesiredCondition::new(
            PROGRESSING,
            true,
            "RollingOut",
            format!("waiting for {ready}/{size} Pods to be ready"),
        ),
    };
    let available = if size == 0 {
        DesiredCondition::new(AVAILABLE, false, "ScaledToZero", "size is 0: no memcached Pods run")
    } else if available {
        DesiredCondition::new(AVAILABLE, true, "MinimumReplicasAvailable", pods_ready.clone())
    } else {
        DesiredCondition::new(AVAILABLE, false, "MinimumReplicasUnavailable", pods_ready.clone())
    };
    // Size 0 is a state someone chose, reached once the Pods are gone: Ready, so `kubectl wait
    // --for=condition=Ready` returns, with `Available=False` saying nothing serves.
    let ready = match &failure {
        Some((reason, message)) => DesiredCondition::new(READY, false, reason, message.clone()),
        None if rolled_out && size == 0 => {
            DesiredCondition::new(READY, true, "ScaledToZero", "size is 0: no memcached Pods run")
        }
        None if rolled_out && available.status => DesiredCondition::new(READY, true, "Ready", pods_ready),
        None => DesiredCondition::new(READY, false, "NotReady", pods_ready),
    };
    vec![available, progressing, degraded, ready]
}

/// The status a Memcached should have. Its conditions are only capstan's own types.
pub fn build_status(mc: &Memcached, observed: Observed<'_>, nodes: Vec<String>, now: Timestamp) -> MemcachedStatus {
    let generation = mc.meta().generation;
    let size = mc.spec.size;
    let refused = |reason: &'static str, message: String| {
        vec![
            DesiredCondition::new(AVAILABLE, false, reason, message.clone()),
            DesiredCondition::new(PROGRESSING, false, reason, message.clone()),
            DesiredCondition::new(DEGRADED, true, reason, message.clone()),
            DesiredCondition::new(READY, false, reason, message),
        ]
    };
    let (deployment_status, conditions) = match observed {
        Observed::Owned {
            deployment,
            just_changed,
        } => (
            deployment.and_then(|d| d.status.as_ref()),
            owned_conditions(size, deployment, just_changed),
        ),
        Observed::Conflict { kind } => {
            let message = format!(
                "{kind} {} exists and is not controlled by this Memcached; it is left untouched",
                mc.name_any()
            );
            (None, refused("ResourceExists", message))
        }
        Observed::Invalid(error) => (None, refused("InvalidSpec", error.to_string())),
        Observed::Rejected(message) => (None, refused("Rejected", message.to_owned())),
    };
    let previous = mc.status.as_ref().map(own_part).unwrap_or_default();
    MemcachedStatus {
        // Counted from the Pods listed, not copied from the Deployment's status: the two move
        // together (the Deployment counts the same live Pods a moment later), and copying both
        // would write this status once for the Pod and again for the Deployment's catching up.
        replicas: i32::try_from(nodes.len()).unwrap_or(i32::MAX),
        nodes,
        ready_replicas: deployment_status.and_then(|s| s.ready_replicas).unwrap_or(0),
        selector: Some(pod_selector(mc)),
        observed_generation: generation,
        conditions: merge_conditions(&previous.conditions, &conditions, generation, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::build_deployment;
    use capstan_runtime::conditions::{find_condition, is_true};
    use k8s_openapi::{
        api::apps::v1::DeploymentStatus,
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
    };

    fn memcached(size: i32) -> Memcached {
        let mut mc: Memcached = serde_yaml::from_str(&format!(
            "apiVersion: cache.capstan.dev/v1alpha1\nkind: Memcached\nmetadata: {{name: cache, namespace: apps}}\nspec: {{size: {size}}}\n"
        ))
        .expect("valid Memcached YAML");
        mc.metadata.uid = Some("uid-1".into());
        mc.metadata.generation = Some(2);
        mc
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000).expect("time")
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> DeploymentCondition {
        DeploymentCondition {
            type_: Some(type_.into()),
            status: Some(status.into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..Default::default()
        }
    }

    /// A Deployment at `generation` whose controller observed `observed`, with these counts.
    fn deployment(generation: i64, observed: i64, counts: (i32, i32, i32), available: bool) -> Deployment {
        let (replicas, updated, ready) = counts;
        let mut d = build_deployment(&memcached(3)).expect("valid");
        d.metadata.generation = Some(generation);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            conditions: Some(vec![condition(
                "Available",
                if available { "True" } else { "False" },
                "MinimumReplicasAvailable",
                "",
            )]),
            ..Default::default()
        });
        d
    }

    fn owned(d: &Deployment) -> Observed<'_> {
        Observed::Owned {
            deployment: Some(d),
            just_changed: false,
        }
    }

    fn find<'a>(status: &'a MemcachedStatus, type_: &str) -> &'a Condition {
        find_condition(&status.conditions, type_).expect("condition present")
    }

    #[test]
    fn a_rolled_out_deployment_is_ready_and_not_progressing() {
        let d = deployment(4, 4, (3, 3, 3), true);
        let pods = vec!["cache-1".into(), "cache-2".into(), "cache-3".into()];
        let status = build_status(&memcached(3), owned(&d), pods, now());
        assert!(is_true(&status.conditions, AVAILABLE));
        assert!(!is_true(&status.conditions, PROGRESSING));
        assert!(!is_true(&status.conditions, DEGRADED));
        assert!(is_true(&status.conditions, READY));
        assert_eq!((status.ready_replicas, status.replicas), (3, 3));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/instance=cache,app.kubernetes.io/name=memcached")
        );
    }

    #[test]
    fn replicas_count_the_listed_pods_so_the_deployment_catching_up_changes_nothing() {
        // The Pod is listed before the Deployment's status counts it (and the other way round):
        // the status is the same either way, so the second event costs no write.
        let before = deployment(1, 1, (0, 0, 0), false);
        let after = deployment(1, 1, (1, 1, 0), false);
        let pod = || vec!["cache-1".to_owned()];
        let first = build_status(&memcached(1), owned(&before), pod(), now());
        let second = build_status(&memcached(1), owned(&after), pod(), now());
        assert_eq!(first.replicas, 1);
        assert_eq!(first, second);
        let unlisted = build_status(&memcached(1), owned(&after), vec![], now());
        assert_eq!(unlisted.replicas, 0);
    }

    #[test]
    fn a_deployment_not_yet_observed_at_its_generation_is_progressing_even_with_every_pod_ready() {
        // The template changed (generation 5) but the Deployment controller last acted on 4:
        // its counts describe the old Pods.
        let d = deployment(5, 4, (3, 3, 3), true);
        let status = build_status(&memcached(3), owned(&d), vec![], now());
        assert!(is_true(&status.conditions, PROGRESSING));
        assert!(!is_true(&status.conditions, READY));
        assert!(is_true(&status.conditions, AVAILABLE), "old Pods still serve");
    }

    #[test]
    fn a_cached_deployment_that_predates_the_apply_is_never_ready() {
        let d = deployment(4, 4, (3, 3, 3), true);
        let stale = Observed::Owned {
            deployment: Some(&d),
            just_changed: true,
        };
        let status = build_status(&memcached(3), stale, vec![], now());
        assert!(is_true(&status.conditions, PROGRESSING));
        assert!(!is_true(&status.conditions, READY));
    }

    #[test]
    fn a_rollout_is_progressing_until_updated_and_ready_reach_size() {
        for counts in [(4, 2, 3), (3, 3, 2), (4, 3, 3)] {
            let d = deployment(5, 5, counts, true);
            let status = build_status(&memcached(3), owned(&d), vec![], now());
            assert!(is_true(&status.conditions, PROGRESSING), "{counts:?}");
            assert!(!is_true(&status.conditions, READY), "{counts:?}");
            assert_eq!(find(&status, PROGRESSING).reason, "RollingOut");
        }
    }

    #[test]
    fn a_progress_deadline_exceeded_is_degraded_with_the_deployments_reason_and_message() {
        let mut d = deployment(5, 5, (3, 1, 2), true);
        let message = r#"ReplicaSet "cache-123" has timed out progressing."#;
        d.status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conditions")
            .push(condition("Progressing", "False", "ProgressDeadlineExceeded", message));
        let status = build_status(&memcached(3), owned(&d), vec![], now());
        let degraded = find(&status, DEGRADED);
        assert_eq!(
            (
                degraded.status.as_str(),
                degraded.reason.as_str(),
                degraded.message.as_str()
            ),
            ("True", "ProgressDeadlineExceeded", message)
        );
        let progressing = find(&status, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", "ProgressDeadlineExceeded")
        );
        assert!(!is_true(&status.conditions, READY));
    }

    #[test]
    fn a_replica_failure_is_degraded_with_its_reason() {
        let mut d = deployment(5, 5, (1, 1, 1), false);
        d.status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conditions")
            .push(condition(
                "ReplicaFailure",
                "True",
                "FailedCreate",
                "pods \"cache-x\" is forbidden: exceeded quota",
            ));
        let status = build_status(&memcached(3), owned(&d), vec![], now());
        let degraded = find(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "FailedCreate")
        );
        assert!(degraded.message.contains("exceeded quota"));
    }

    #[test]
    fn failures_of_an_older_generation_do_not_count() {
        let mut d = deployment(6, 5, (3, 1, 2), true);
        d.status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conditions")
            .push(condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                "timed out",
            ));
        let status = build_status(&memcached(3), owned(&d), vec![], now());
        assert!(!is_true(&status.conditions, DEGRADED));
        assert!(is_true(&status.conditions, PROGRESSING));
    }

    #[test]
    fn size_zero_once_scaled_down_is_ready_with_reason_scaled_to_zero() {
        let mc = memcached(0);
        let d = deployment(7, 7, (0, 0, 0), true);
        let status = build_status(&mc, owned(&d), vec![], now());
        for (type_, want) in [
            (AVAILABLE, false),
            (PROGRESSING, false),
            (DEGRADED, false),
            (READY, true),
        ] {
            let c = find(&status, type_);
            assert_eq!(c.status == "True", want, "{type_}");
            if type_ != DEGRADED {
                assert_eq!(c.reason, "ScaledToZero", "{type_}");
            }
        }
        let stopping = deployment(7, 7, (2, 0, 2), true);
        let status = build_status(&mc, owned(&stopping), vec![], now());
        assert!(!is_true(&status.conditions, READY));
        assert_eq!(find(&status, PROGRESSING).reason, "ScalingToZero");
    }

    #[test]
    fn conditions_of_other_managers_are_not_carried() {
        let mut mc = memcached(3);
        let foreign = Condition {
            type_: "Backup".into(),
            status: "True".into(),
            reason: "Done".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(now()),
        };
        mc.status = Some(MemcachedStatus {
            conditions: vec![foreign.clone()],
            ..Default::default()
        });
        let d = deployment(4, 4, (3, 3, 3), true);
        let status = build_status(&mc, owned(&d), vec![], now());
        assert_eq!(status.conditions.len(), 4);
        assert!(status.conditions.iter().all(|c| c.type_ != "Backup"));
        let stored = mc.status.as_ref().expect("status");
        assert!(own_part(stored).conditions.is_empty());
    }

    #[test]
    fn a_conflict_is_degraded_with_reason_resource_exists() {
        let status = build_status(&memcached(3), Observed::Conflict { kind: "Deployment" }, vec![], now());
        let degraded = find(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ResourceExists")
        );
        assert!(!is_true(&status.conditions, READY));
    }

    #[test]
    fn only_a_spec_change_counts_as_a_new_rollout() {
        let mc = memcached(3);
        let desired = build_deployment(&mc).expect("valid");
        let mut stored = desired.clone();
        stored.metadata.generation = Some(3);
        assert!(!changes_deployment_spec(&desired, Some(&stored)));
        assert!(changes_deployment_spec(&desired, None));
        let mut bigger = mc.clone();
        bigger.spec.memory_mb = 128;
        assert!(changes_deployment_spec(
            &build_deployment(&bigger).expect("valid"),
            Some(&stored)
        ));
        let mut relabelled = stored.clone();
        relabelled.metadata.labels = None;
        assert!(!changes_deployment_spec(&desired, Some(&relabelled)));
    }
}
