//! Roll and scale-down planning: which Pod goes next, and when a planned failover moves the
//! master first. The Redis StatefulSet is `OnDelete`, so the healer deletes outdated Pods itself.
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};

use super::members::pod_states;
use crate::RedisHA;

/// A Pod's standing in a roll or scale-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub pod: String,
    pub ordinal: u32,
    /// Its template matches the StatefulSet's current revision.
    pub up_to_date: bool,
    pub ready: bool,
}

/// The next step of a roll or scale-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing left to do: the caller may go on (e.g. lower `replicas`).
    Done,
    /// Wait until every Pod is ready again.
    WaitForReady,
    /// Delete this Pod (the StatefulSet recreates it from the current template).
    DeletePod(String),
    /// A planned `SENTINEL FAILOVER` away from `from`; the `avoid` Pods get `replica-priority 0`
    /// first so Sentinel never promotes them.
    Failover { from: String, avoid: Vec<String> },
}

/// The next step of a roll: outdated replicas first (highest ordinal first, one at a time), then
/// one planned failover to an up-to-date replica, then the old master, which is a replica by then.
/// Stateless, so an operator restarted mid-roll converges without a second failover.
pub fn next_roll_step(pods: &[PodState], master: Option<&str>) -> Step {
    if pods.iter().any(|p| !p.ready) {
        return Step::WaitForReady;
    }
    let is_master = |p: &PodState| Some(p.pod.as_str()) == master;
    if let Some(replica) = pods
        .iter()
        .filter(|p| !p.up_to_date && !is_master(p))
        .max_by_key(|p| p.ordinal)
    {
        return Step::DeletePod(replica.pod.clone());
    }
    match pods.iter().find(|p| is_master(p) && !p.up_to_date) {
        None => Step::Done,
        // Never rolled in place (without storage it would come back empty): the reconcile
        // surges a second Pod to hand over to.
        Some(_) if pods.len() == 1 => Step::WaitForReady,
        Some(old) => Step::Failover {
            from: old.pod.clone(),
            avoid: Vec::new(),
        },
    }
}

/// Before lowering `replicas` to `desired`: the master must not be among the Pods the
/// StatefulSet will remove (ordinals ≥ desired), so fail over to a Pod that stays first.
pub fn next_scale_down_step(pods: &[PodState], master: Option<&str>, desired: u32) -> Step {
    let Some(master_pod) = master.and_then(|m| pods.iter().find(|p| p.pod == m)) else {
        return Step::Done;
    };
    if master_pod.ordinal < desired {
        return Step::Done;
    }
    if pods.iter().any(|p| p.ordinal < desired && !p.ready) {
        return Step::WaitForReady;
    }
    Step::Failover {
        from: master_pod.pod.clone(),
        avoid: pods
            .iter()
            .filter(|p| p.ordinal >= desired && p.pod != master_pod.pod)
            .map(|p| p.pod.clone())
            .collect(),
    }
}
/// The next scale-down or roll step for a RedisHA whose Redis StatefulSet is `set`. Waits while
/// the StatefulSet has not caught up with its spec or a Pod is missing (deleted, not recreated
/// yet), so one Pod goes at a time.
pub fn rollout_step(rha: &RedisHA, set: &StatefulSet, pods: &[Pod], master: Option<&str>) -> Step {
    let observed = set.status.as_ref().and_then(|s| s.observed_generation);
    if observed.is_none() || observed < set.metadata.generation {
        return Step::WaitForReady;
    }
    let states = pod_states(set, pods);
    let want = set.spec.replicas.unwrap_or(0);
    if i32::try_from(states.len()).unwrap_or(i32::MAX) < want {
        return Step::WaitForReady;
    }
    let desired = u32::try_from(rha.spec.replicas).unwrap_or(0);
    // A scale-down moves the master before any roll, except onto a single kept Pod that is
    // outdated: the surge Pod of a single Redis hands back only to the rolled Pod (handing back
    // first, the roll would fail over to the surge Pod again, and so on).
    let sole_kept_outdated = desired == 1 && states.iter().any(|p| p.ordinal == 0 && !p.up_to_date);
    match next_scale_down_step(&states, master, desired) {
        Step::Done => next_roll_step(&states, master),
        Step::Failover { .. } if sole_kept_outdated => next_roll_step(&states, master),
        step => step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rha(replicas: i32) -> RedisHA {
        serde_yaml::from_str(&format!(
            "apiVersion: cache.capstan.dev/v1alpha1\nkind: RedisHA\nmetadata: {{name: cache, namespace: apps}}\nspec: {{replicas: {replicas}}}\n"
        ))
        .expect("redis-ha")
    }

    fn set(replicas: i32, generation: i64, observed: i64) -> StatefulSet {
        serde_yaml::from_str(&format!(
            "metadata: {{name: cache, generation: {generation}}}\nspec: {{replicas: {replicas}, selector: {{}}, serviceName: cache-headless, template: {{}}}}\nstatus: {{replicas: {replicas}, observedGeneration: {observed}, updateRevision: cache-new}}\n"
        ))
        .expect("set")
    }

    fn pod(ordinal: u32, revision: &str) -> Pod {
        serde_yaml::from_str(&format!(
            "metadata:\n  name: cache-{ordinal}\n  labels: {{app.kubernetes.io/component: redis, controller-revision-hash: {revision}}}\nstatus:\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
        ))
        .expect("pod")
    }

    #[test]
    fn a_roll_waits_for_the_statefulset_to_see_its_spec_and_for_every_pod() {
        let pods = [pod(0, "cache-old"), pod(1, "cache-old"), pod(2, "cache-old")];
        assert_eq!(
            rollout_step(&rha(3), &set(3, 2, 1), &pods, Some("cache-0")),
            Step::WaitForReady,
            "the StatefulSet controller has not computed the new revision yet"
        );
        assert_eq!(
            rollout_step(&rha(3), &set(3, 2, 2), &pods[..2], Some("cache-0")),
            Step::WaitForReady,
            "a deleted Pod not recreated yet: never a second one at once"
        );
        assert_eq!(
            rollout_step(&rha(3), &set(3, 2, 2), &pods, Some("cache-0")),
            Step::DeletePod("cache-2".into())
        );
        let mut terminating = pods.clone();
        terminating[2].metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_eq!(
            rollout_step(&rha(3), &set(3, 2, 2), &terminating, Some("cache-0")),
            Step::WaitForReady,
            "a terminating Pod is not ready, whatever its last probe said"
        );
    }

    fn pod_state(ordinal: u32, up_to_date: bool) -> PodState {
        PodState {
            pod: format!("cache-{ordinal}"),
            ordinal,
            up_to_date,
            ready: true,
        }
    }

    #[test]
    fn a_roll_goes_replicas_then_one_failover_then_the_old_master() {
        let master = Some("cache-1");
        let mut pods = vec![pod_state(0, false), pod_state(1, false), pod_state(2, false)];
        assert_eq!(next_roll_step(&pods, master), Step::DeletePod("cache-2".into()));
        pods[2] = pod_state(2, true);
        assert_eq!(next_roll_step(&pods, master), Step::DeletePod("cache-0".into()));
        pods[0] = PodState {
            ready: false,
            ..pod_state(0, true)
        };
        assert_eq!(next_roll_step(&pods, master), Step::WaitForReady);
        pods[0] = pod_state(0, true);
        assert_eq!(
            next_roll_step(&pods, master),
            Step::Failover {
                from: "cache-1".into(),
                avoid: vec![]
            }
        );
        // After the failover cache-1 is an outdated replica: deleted, no second failover.
        assert_eq!(
            next_roll_step(&pods, Some("cache-0")),
            Step::DeletePod("cache-1".into())
        );
        pods[1] = pod_state(1, true);
        assert_eq!(next_roll_step(&pods, Some("cache-0")), Step::Done);
        assert_eq!(
            next_roll_step(&[pod_state(0, false)], Some("cache-0")),
            Step::WaitForReady,
            "a single Redis is never deleted to roll it: it waits for the surge Pod"
        );
    }

    #[test]
    fn scale_down_never_removes_the_master() {
        let pods: Vec<PodState> = (0..5).map(|i| pod_state(i, true)).collect();
        assert_eq!(next_scale_down_step(&pods, Some("cache-1"), 3), Step::Done);
        assert_eq!(
            next_scale_down_step(&pods, Some("cache-4"), 3),
            Step::Failover {
                from: "cache-4".into(),
                avoid: vec!["cache-3".into()]
            }
        );
    }

    #[test]
    fn a_single_redis_rolls_through_a_surge_pod_and_gets_it_back_rolled() {
        // replicas: 1, template changed: the only Pod waits for the surge Pod.
        assert_eq!(
            rollout_step(&rha(1), &set(1, 2, 2), &[pod(0, "cache-old")], Some("cache-0")),
            Step::WaitForReady
        );
        // The surge Pod (new template) is there: fail over to it.
        let surged = [pod(0, "cache-old"), pod(1, "cache-new")];
        assert_eq!(
            rollout_step(&rha(1), &set(2, 3, 3), &surged, Some("cache-0")),
            Step::Failover {
                from: "cache-0".into(),
                avoid: vec![]
            }
        );
        // cache-1 is master: roll cache-0 before handing back to it.
        assert_eq!(
            rollout_step(&rha(1), &set(2, 3, 3), &surged, Some("cache-1")),
            Step::DeletePod("cache-0".into())
        );
        let rolled = [pod(0, "cache-new"), pod(1, "cache-new")];
        assert_eq!(
            rollout_step(&rha(1), &set(2, 3, 3), &rolled, Some("cache-1")),
            Step::Failover {
                from: "cache-1".into(),
                avoid: vec![]
            },
            "then hand back, so the set can shrink to one"
        );
        assert_eq!(
            rollout_step(&rha(1), &set(2, 3, 3), &rolled, Some("cache-0")),
            Step::Done
        );
    }

    #[test]
    fn a_scale_down_moves_the_master_before_any_roll() {
        let pods: Vec<Pod> = (0..5).map(|o| pod(o, "cache-old")).collect();
        assert_eq!(
            rollout_step(&rha(3), &set(5, 2, 2), &pods, Some("cache-4")),
            Step::Failover {
                from: "cache-4".into(),
                avoid: vec!["cache-3".into()]
            }
        );
        let current: Vec<Pod> = (0..5).map(|o| pod(o, "cache-new")).collect();
        assert_eq!(
            rollout_step(&rha(3), &set(5, 2, 2), &current, Some("cache-1")),
            Step::Done,
            "the master stays: the StatefulSet may shrink"
        );
    }
}
