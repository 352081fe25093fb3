//! The healer as a background task of the leading manager: for each RedisHA, observe its Redis and
//! Sentinels, [`decide`](crate::healer::decide), carry the actions out (Redis and Sentinel
//! commands behind the leader guard, role labels with a leader-checked patch), warn, and queue a
//! reconcile when the plan changed so the status follows. While a Sentinel reports a failover in
//! progress, `decide` returns no Redis or Sentinel command: the healer never fights Sentinel.
//! Once a RedisHA is settled, the healer takes the next step of a scale-down or a roll (the
//! Redis StatefulSet is `OnDelete`): delete one outdated replica, or fail over planned.
//!
//! Passes run every few seconds, at once when one of the RedisHA's Pods changes, and every
//! quarter second while something is in motion, so a failover shows in the labels (and the
//! master Service) within a pass of Sentinel promoting a replica.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use capstan_runtime::{ChildCache, RefusedWrite, TaskContext, Trigger};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};

use crate::{
    RedisHA,
    build::ROLE_LABEL,
    config::Rendering,
    healer::{Action, Plan, Step, Wait, decide, next_roll_step, next_scale_down_step},
    members::{members, pod_states},
    redis_io::{self, Cluster, Performed, Timeouts},
    shared::{Key, Shared},
};
use tokio::time::Instant;

/// How often each RedisHA is observed when all is quiet.
pub const PASS_INTERVAL: Duration = Duration::from_secs(3);
/// How often while something is in motion (a failover, an action just taken, a roll step).
pub const FAST_PASS_INTERVAL: Duration = Duration::from_millis(250);
/// Consecutive fast passes before falling back to [`PASS_INTERVAL`]: a state that never settles
/// is not polled hot forever.
const MAX_FAST_PASSES: u32 = 240;
/// After a wake-up, a moment for the burst of Pod events that usually comes with it.
const WAKE_COALESCE: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Healer {
    pub redis_has: Store<RedisHA>,
    pub pods: Store<Pod>,
    pub stateful_sets: ChildCache<StatefulSet>,
    pub shared: Shared,
    pub trigger: Trigger<RedisHA>,
}

#[derive(Debug, thiserror::Error)]
pub enum HealError {
    #[error("leadership lost")]
    NotLeader(#[from] capstan_runtime::Error),
    #[error("a healing pass panicked: {0}")]
    Panicked(String),
}

/// One pass over one RedisHA: in motion or not, leadership lost, or out of time.
type HealOutcome = Result<Result<bool, HealError>, tokio::time::error::Elapsed>;

/// How many RedisHAs are healed at once.
pub const MAX_CONCURRENT_HEALS: usize = 8;
/// The longest one pass over one RedisHA may take (a planned failover waits up to 15 s for the
/// Sentinels to see priorities, plus its bounded Redis calls).
pub const HEAL_DEADLINE: Duration = Duration::from_secs(60);

/// When each RedisHA is due for its next pass, and which are being healed now. Pure: the task
/// feeds it the time.
#[derive(Debug, Default)]
struct HealSchedule {
    due: HashMap<Key, Instant>,
    fast_passes: HashMap<Key, u32>,
    in_flight: HashSet<Key>,
}

impl HealSchedule {
    /// New RedisHAs are due at once; deleted ones are forgotten.
    fn sync<'a>(&mut self, live: impl Iterator<Item = &'a Key>, now: Instant) {
        let live: HashSet<&Key> = live.collect();
        self.due.retain(|key, _| live.contains(key));
        self.fast_passes.retain(|key, _| live.contains(key));
        for key in live {
            self.due.entry(key.clone()).or_insert(now);
        }
    }

    /// A Pod changed: every RedisHA is due now (its pass tells whether the change was its).
    fn wake_all(&mut self, now: Instant) {
        for due in self.due.values_mut() {
            *due = (*due).min(now);
        }
    }

    /// The RedisHAs due by `now` and not being healed, as many as fit beside those in flight;
    /// they count as in flight from here.
    fn take_due(&mut self, now: Instant, limit: usize) -> Vec<Key> {
        let room = limit.saturating_sub(self.in_flight.len());
        let mut due: Vec<(&Key, &Instant)> = self
            .due
            .iter()
            .filter(|(key, at)| **at <= now && !self.in_flight.contains(*key))
            .collect();
        due.sort_by_key(|(_, at)| **at);
        let taken: Vec<Key> = due.into_iter().take(room).map(|(key, _)| key.clone()).collect();
        self.in_flight.extend(taken.iter().cloned());
        taken
    }

    /// A pass ended: next due after the fast interval while in motion (bounded), else the normal one.
    fn finished(&mut self, key: &Key, in_motion: bool, now: Instant) {
        self.in_flight.remove(key);
        let fast = self.fast_passes.entry(key.clone()).or_default();
        *fast = if in_motion { fast.saturating_add(1) } else { 0 };
        let interval = if in_motion && *fast <= MAX_FAST_PASSES {
            FAST_PASS_INTERVAL
        } else {
            PASS_INTERVAL
        };
        if let Some(due) = self.due.get_mut(key) {
            *due = now + interval;
        }
    }

    /// The earliest time a RedisHA not in flight is due; None while `limit` are in flight
    /// (the next to end makes room), so a full schedule never spins on a time already past.
    fn next_due(&self, limit: usize) -> Option<Instant> {
        if self.in_flight.len() >= limit {
            return None;
        }
        self.due
            .iter()
            .filter(|(key, _)| !self.in_flight.contains(*key))
            .map(|(_, at)| *at)
            .min()
    }
}

impl Healer {
    /// Heals every RedisHA on its own schedule until leadership is lost (the runtime then drops
    /// this task): one whose Pods do not answer (3 s timeouts) or whose roll waits on a planned
    /// failover never delays another's relabel after its failover. At most
    /// [`MAX_CONCURRENT_HEALS`] run at once, each bounded by [`HEAL_DEADLINE`].
    pub async fn run(self, task: TaskContext) -> Result<(), HealError> {
        let mut schedule = HealSchedule::default();
        let mut running: tokio::task::JoinSet<(Key, HealOutcome)> = tokio::task::JoinSet::new();
        loop {
            let redis_has = self.redis_has.state();
            let live: HashMap<Key, Arc<RedisHA>> = redis_has
                .iter()
                .filter_map(|r| Some(((r.namespace()?, r.name_any()), r.clone())))
                .collect();
            self.shared.retain(&live.keys().cloned().collect());
            let now = Instant::now();
            schedule.sync(live.keys(), now);
            for key in schedule.take_due(now, MAX_CONCURRENT_HEALS) {
                let Some(rha) = live.get(&key).cloned() else {
                    schedule.finished(&key, false, now);
                    continue;
                };
                let (healer, task) = (self.clone(), task.clone());
                running.spawn(async move {
                    let healed = tokio::time::timeout(HEAL_DEADLINE, healer.heal(&rha, &task)).await;
                    (key, healed)
                });
            }
            let next_due = schedule.next_due(MAX_CONCURRENT_HEALS).unwrap_or(now + PASS_INTERVAL);
            tokio::select! {
                () = tokio::time::sleep_until(next_due) => {}
                () = self.shared.healer_woken() => {
                    tokio::time::sleep(WAKE_COALESCE).await;
                    schedule.wake_all(Instant::now());
                }
                Some(joined) = running.join_next() => {
                    let (key, healed) = match joined {
                        Ok(done) => done,
                        // A heal that panicked: the runtime restarts the whole task with backoff.
                        Err(error) => return Err(HealError::Panicked(error.to_string())),
                    };
                    let in_motion = match healed {
                        Ok(Ok(in_motion)) => in_motion,
                        Ok(Err(lost)) => return Err(lost),
                        Err(_) => {
                            tracing::warn!(namespace = %key.0, redis_ha = %key.1, deadline = ?HEAL_DEADLINE, "a healing pass ran out of time");
                            false
                        }
                    };
                    schedule.finished(&key, in_motion, Instant::now());
                }
            }
        }
    }

    /// One pass over one RedisHA; true when something is in motion. A Redis that does not
    /// answer is part of the observation, not an error; only a lost leadership ends the task.
    async fn heal(&self, rha: &Arc<RedisHA>, task: &TaskContext) -> Result<bool, HealError> {
        let (Some(namespace), name) = (rha.namespace(), rha.name_any()) else {
            return Ok(false);
        };
        if rha.metadata.deletion_timestamp.is_some() {
            self.shared.forget(&(namespace, name));
            return Ok(false);
        }
        let key = (namespace.clone(), name.clone());
        let Some(password) = self.shared.password(&key) else {
            return Ok(false); // the reconcile has not read the auth Secret yet
        };
        let pods: Vec<Pod> = self
            .pods
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
            .map(|p| p.as_ref().clone())
            .collect();
        let (redis, sentinels) = members(&name, &namespace, &self.shared.cluster_domain, &pods);
        if redis.is_empty() {
            return Ok(false);
        }
        let rendering = Rendering::for_redis_ha(rha, &name, &namespace, &self.shared.cluster_domain);
        let cluster = Cluster {
            master_set: &name,
            redis: &redis,
            sentinels: &sentinels,
            quorum: rha.spec.sentinel.effective_quorum(),
            desired_replicas: u32::try_from(rha.spec.replicas).unwrap_or(1),
            password: password.as_deref(),
            timings: rendering.timings,
            timeouts: Timeouts::default(),
        };
        let regarding = rha.object_ref(&());
        let previous_password = self.shared.previous_password(&key);
        let mut observation = task.leadership.while_leader(redis_io::observe(cluster)).await?;
        let mut rotated = false;
        if let Some(previous) = &previous_password {
            // The order matters: every Redis accepts the new password, then the Sentinels switch
            // to it, then Pods restart with it. A Sentinel told first drops its links and reopens
            // them with a password the master refuses, and holds it down after down-after.
            let mut refusing: Vec<String> = observation
                .redis
                .iter()
                .filter(|p| p.replication.is_none())
                .map(|p| p.pod.clone())
                .collect();
            let adopted = task
                .leadership
                .while_leader(redis_io::adopt_password(cluster, &refusing, previous.as_deref()))
                .await?;
            for (pod, outcome) in adopted {
                match outcome {
                    Ok(()) => {
                        refusing.retain(|p| *p != pod);
                        rotated = true;
                        task.events.normal(
                            &regarding,
                            "PasswordRotated",
                            "RotatePassword",
                            format!("{pod} accepts the new password until it restarts with it"),
                        );
                    }
                    // Not an event per pass: the Pod's readiness and the stalled roll show it.
                    Err(error) => tracing::warn!(
                        %namespace, %pod, %error,
                        "a Pod refuses the new password and the previous one did not work"
                    ),
                }
            }
            let sentinels_adopted = task
                .leadership
                .while_leader(redis_io::adopt_sentinel_password(cluster, previous.as_deref()))
                .await?;
            let mut sentinels_refusing = false;
            for (pod, outcome) in sentinels_adopted {
                match outcome {
                    Ok(()) => {
                        rotated = true;
                        task.events.normal(
                            &regarding,
                            "PasswordRotated",
                            "RotatePassword",
                            format!("Sentinel {pod} accepts the new password until it restarts with it"),
                        );
                    }
                    Err(error) => {
                        sentinels_refusing = true;
                        tracing::warn!(
                            %namespace, %pod, %error,
                            "a Sentinel refuses the new password and the previous one did not work"
                        );
                    }
                }
            }
            if rotated {
                // What refused the new password a moment ago answers now: decide on that.
                observation = task.leadership.while_leader(redis_io::observe(cluster)).await?;
            }
            if refusing.is_empty()
                && !sentinels_refusing
                && self.shared.sentinels_need(&key, &password)
                && task
                    .leadership
                    .while_leader(redis_io::tell_sentinels_password(cluster))
                    .await?
            {
                self.shared.sentinels_told(key.clone(), password.clone());
            }
        }
        // No Pod restarts with the new password before the Sentinels authenticate with it.
        let sentinels_behind = previous_password.is_some() && self.shared.sentinels_need(&key, &password);
        let plan = decide(&observation);
        let mut refusals = Vec::new();
        for action in &plan.actions {
            let done = task.leadership.while_leader(redis_io::perform(action, cluster)).await?;
            match (done, action) {
                (Ok(Performed::ForKubernetes), Action::LabelRole { pod, role }) => {
                    task.leadership.check()?;
                    let patch = serde_json::json!({"metadata": {"labels": {ROLE_LABEL: role.label()}}});
                    match Api::<Pod>::namespaced(task.client.clone(), &namespace)
                        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => tracing::info!(%namespace, %pod, role = role.label(), "labelled the Pod's role"),
                        Err(error) => {
                            tracing::warn!(%namespace, %pod, %error, "labelling the Pod's role failed");
                            refusals.extend(RefusedWrite::from_error(
                                "PatchPodsRefused",
                                "patch",
                                "pods",
                                pod,
                                &error,
                            ));
                        }
                    }
                }
                (Ok(_), _) => tracing::info!(%namespace, redis_ha = %name, ?action, "healed"),
                (Err(error), _) => {
                    tracing::warn!(%namespace, redis_ha = %name, ?action, %error, "healing action failed");
                    task.events
                        .warning(&regarding, "HealFailed", "Heal", format!("{action:?}: {error}"));
                }
            }
        }
        for warning in &plan.warnings {
            task.events.warning(&regarding, "Healed", "Heal", warning.clone());
        }
        let mut in_motion = rotated
            || !plan.actions.is_empty()
            || matches!(
                plan.wait,
                Some(Wait::FailoverInProgress { .. } | Wait::SentinelsToFailOver { .. })
            );
        if plan.wait.is_none() && plan.actions.is_empty() && !sentinels_behind {
            in_motion |= self.rollout(rha, &pods, &plan, cluster, task, &mut refusals).await?;
        }
        // A refused write is retried each pass (what needs it has not changed), so it stays
        // recorded while it lasts; its Event goes out once, when it is new.
        let refusal = refusals.into_iter().next();
        let refusal_changed = self.shared.set_refusal(key.clone(), refusal.clone());
        if refusal_changed && let Some(refusal) = &refusal {
            task.refused(&regarding, refusal);
        }
        if self.shared.set_plan(key, plan) | refusal_changed {
            self.trigger.reconcile(&namespace, &name);
        }
        Ok(in_motion)
    }

    /// On a settled RedisHA, the next step of a scale-down (move the master below the desired
    /// count) or a roll (outdated replicas, a planned failover, the old master); true when one
    /// was taken. Stateless: an operator restarted mid-roll picks up where the Pods are. A step
    /// the apiserver refuses goes to `refusals` and is not in motion: retried at the normal pace.
    async fn rollout(
        &self,
        rha: &RedisHA,
        pods: &[Pod],
        plan: &Plan,
        cluster: Cluster<'_>,
        task: &TaskContext,
        refusals: &mut Vec<RefusedWrite>,
    ) -> Result<bool, HealError> {
        let (Some(namespace), name) = (rha.namespace(), rha.name_any()) else {
            return Ok(false);
        };
        let Some(set) = self.stateful_sets.get(&ObjectRef::new(&name).within(&namespace)) else {
            return Ok(false);
        };
        let step = match rollout_step(rha, &set, pods, plan.master.as_deref()) {
            // Sentinel refuses a failover to replicas it has not seen yet (no good replica), and
            // one in TILT mode would start it only after the writes' pause ran out.
            Step::Failover { .. } if plan.failover_blocker.is_some() => Step::WaitForReady,
            step => step,
        };
        let regarding = rha.object_ref(&());
        match step {
            Step::Done | Step::WaitForReady => Ok(false),
            Step::DeletePod(pod) => {
                task.leadership.check()?;
                tracing::info!(%namespace, redis_ha = %name, %pod, "rolling an outdated Pod");
                match Api::<Pod>::namespaced(task.client.clone(), &namespace)
                    .delete(&pod, &DeleteParams::default())
                    .await
                {
                    Ok(_) => task.events.normal(
                        &regarding,
                        "RollingPod",
                        "Roll",
                        format!("deleted {pod}, which runs an outdated template"),
                    ),
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => {
                        tracing::warn!(%namespace, %pod, %error, "deleting an outdated Pod failed");
                        if let Some(refusal) =
                            RefusedWrite::from_error("DeletePodsRefused", "delete", "pods", &pod, &error)
                        {
                            refusals.push(refusal);
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            }
            Step::Failover { from, avoid } => {
                let scaling_down = from
                    .rsplit('-')
                    .next()
                    .and_then(|o| o.parse::<i32>().ok())
                    .is_some_and(|ordinal| ordinal >= rha.spec.replicas);
                let why = match (scaling_down, avoid.is_empty()) {
                    (true, true) => "the scale-down removes it".to_owned(),
                    (true, false) => format!("the scale-down removes it (and {})", avoid.join(", ")),
                    (false, _) => "its template is outdated".to_owned(),
                };
                tracing::info!(%namespace, redis_ha = %name, %from, ?avoid, %why, "planned failover");
                match task
                    .leadership
                    .while_leader(redis_io::planned_failover(cluster, &from, &avoid))
                    .await?
                {
                    Ok(()) => task.events.normal(
                        &regarding,
                        "PlannedFailover",
                        "Failover",
                        format!("asked the Sentinels to fail over from {from}: {why}"),
                    ),
                    Err(error) => task.events.warning(
                        &regarding,
                        "PlannedFailoverFailed",
                        "Failover",
                        format!("a planned failover from {from} ({why}) was refused: {error}"),
                    ),
                }
                Ok(true)
            }
        }
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

    fn key(name: &str) -> Key {
        ("apps".to_owned(), name.to_owned())
    }

    #[test]
    fn a_slow_redis_ha_delays_no_other_and_concurrency_is_bounded() {
        let start = Instant::now();
        let mut schedule = HealSchedule::default();
        let keys: Vec<Key> = ["a", "b", "c"].into_iter().map(key).collect();
        schedule.sync(keys.iter(), start);
        assert_eq!(schedule.take_due(start, 2).len(), 2, "at most two at once");
        let rest = schedule.take_due(start, 2);
        assert!(rest.is_empty(), "no room while two are in flight: {rest:?}");
        assert_eq!(schedule.next_due(2), None, "full: wait for one to end, do not spin");
        // One pass ends (in motion): that RedisHA is due again after the fast interval, and the
        // third gets the free place although the other is still in flight (slow).
        let mut first = keys.clone();
        first.retain(|k| schedule.in_flight.contains(k));
        let (slow, quick) = (first[0].clone(), first[1].clone());
        schedule.finished(&quick, true, start);
        let third = schedule.take_due(start, 2);
        assert_eq!(third.len(), 1);
        assert!(!third.contains(&slow) && !third.contains(&quick));
        schedule.finished(&third[0], false, start);
        let later = start + FAST_PASS_INTERVAL;
        assert_eq!(
            schedule.next_due(2),
            Some(later),
            "the quick one, fast; the slow one is in flight"
        );
        assert_eq!(schedule.take_due(later, 2), std::slice::from_ref(&quick));
        assert!(!schedule.take_due(later, 8).contains(&slow), "never twice at once");
        // A Pod change makes all due now, a deleted RedisHA is forgotten.
        schedule.wake_all(later);
        schedule.sync(keys[..2].iter(), later);
        assert!(!schedule.due.contains_key(&keys[2]));
    }

    #[test]
    fn a_state_that_never_settles_falls_back_to_the_normal_interval() {
        let start = Instant::now();
        let mut schedule = HealSchedule::default();
        let k = key("a");
        schedule.sync([k.clone()].iter(), start);
        for _ in 0..=MAX_FAST_PASSES {
            schedule.take_due(start, 1);
            schedule.finished(&k, true, start);
        }
        assert_eq!(schedule.next_due(1), Some(start + PASS_INTERVAL));
        schedule.take_due(start + PASS_INTERVAL, 1);
        schedule.finished(&k, false, start);
        schedule.take_due(start, 1);
        schedule.finished(&k, true, start);
        assert_eq!(
            schedule.next_due(1),
            Some(start + FAST_PASS_INTERVAL),
            "settling resets the count"
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
