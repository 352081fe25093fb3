//! The healer as a background task of the leading manager: for each RedisHA, survey its Redis and
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
pub(crate) mod decide;
pub(crate) mod members;
mod plan;
pub(crate) mod redis;
mod rollout;
mod schedule;
mod survey;

pub use decide::decide;
pub use plan::{Action, Plan, Wait};
pub use rollout::{PodState, Step, rollout_step};
pub use survey::{RedisPod, Replication, Role, SentinelPod, SentinelView, Survey};

use std::{collections::HashMap, sync::Arc, time::Duration};

use capstan_runtime::{ChildCache, RefusedWrite, TaskContext, Trigger};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};

use self::redis::{Cluster, Performed, Timeouts};
use crate::{
    RedisHA,
    config::Rendering,
    names::ROLE_LABEL,
    shared::{Key, Shared},
};
use members::members;
use schedule::HealSchedule;
use tokio::time::Instant;

/// How often each RedisHA is surveyed when all is quiet.
pub const PASS_INTERVAL: Duration = Duration::from_secs(3);
/// How often while something is in motion (a failover, an action just taken, a roll step).
pub const FAST_PASS_INTERVAL: Duration = Duration::from_millis(250);
/// Consecutive fast passes before falling back to [`PASS_INTERVAL`]: a state that never settles
/// is not polled hot forever.
pub(crate) const MAX_FAST_PASSES: u32 = 240;
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
    /// answer is part of the survey, not an error; only a lost leadership ends the task.
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
        let mut survey = task.leadership.while_leader(redis::survey(cluster)).await?;
        let mut rotated = false;
        if let Some(previous) = &previous_password {
            // The order matters: every Redis accepts the new password, then the Sentinels switch
            // to it, then Pods restart with it. A Sentinel told first drops its links and reopens
            // them with a password the master refuses, and holds it down after down-after.
            let mut refusing: Vec<String> = survey
                .redis
                .iter()
                .filter(|p| p.replication.is_none())
                .map(|p| p.pod.clone())
                .collect();
            let adopted = task
                .leadership
                .while_leader(redis::adopt_password(cluster, &refusing, previous.as_deref()))
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
                .while_leader(redis::adopt_sentinel_password(cluster, previous.as_deref()))
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
                survey = task.leadership.while_leader(redis::survey(cluster)).await?;
            }
            if refusing.is_empty()
                && !sentinels_refusing
                && self.shared.sentinels_need(&key, &password)
                && task
                    .leadership
                    .while_leader(redis::tell_sentinels_password(cluster))
                    .await?
            {
                self.shared.sentinels_told(key.clone(), password.clone());
            }
        }
        // No Pod restarts with the new password before the Sentinels authenticate with it.
        let sentinels_behind = previous_password.is_some() && self.shared.sentinels_need(&key, &password);
        let plan = decide(&survey);
        let mut refusals = Vec::new();
        for action in &plan.actions {
            let done = task.leadership.while_leader(redis::perform(action, cluster)).await?;
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
                    .while_leader(redis::planned_failover(cluster, &from, &avoid))
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
