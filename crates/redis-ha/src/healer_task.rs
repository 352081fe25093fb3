//! The healer as a background task of the leading manager: every few seconds, for each RedisHA,
//! observe its Redis and Sentinels, [`decide`](crate::healer::decide), carry the actions out (Redis
//! and Sentinel commands behind the leader guard, role labels with a leader-checked patch), warn,
//! and queue a reconcile when the plan changed so the status follows. While a Sentinel reports a
//! failover in progress, `decide` returns no action: the healer never fights Sentinel.
use std::{sync::Arc, time::Duration};

use capstan_runtime::{TaskContext, Trigger};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::Store,
};

use crate::{
    RedisHA,
    build::ROLE_LABEL,
    config::Rendering,
    healer::{Action, decide},
    members::members,
    redis_io::{self, Cluster, Performed, Timeouts},
    shared::Shared,
};

/// How often each RedisHA is observed.
pub const PASS_INTERVAL: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Healer {
    pub redis_has: Store<RedisHA>,
    pub pods: Store<Pod>,
    pub shared: Shared,
    pub trigger: Trigger<RedisHA>,
}

#[derive(Debug, thiserror::Error)]
pub enum HealError {
    #[error("leadership lost")]
    NotLeader(#[from] capstan_runtime::Error),
}

impl Healer {
    /// Runs passes until leadership is lost (the runtime then drops this task).
    pub async fn run(self, task: TaskContext) -> Result<(), HealError> {
        let mut interval = tokio::time::interval(PASS_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let redis_has = self.redis_has.state();
            self.shared.retain(
                &redis_has
                    .iter()
                    .filter_map(|r| Some((r.namespace()?, r.name_any())))
                    .collect(),
            );
            for rha in redis_has {
                self.heal(&rha, &task).await?;
            }
        }
    }

    /// One pass over one RedisHA. A Redis that does not answer is part of the observation, not
    /// an error; only a lost leadership ends the task.
    async fn heal(&self, rha: &Arc<RedisHA>, task: &TaskContext) -> Result<(), HealError> {
        let (Some(namespace), name) = (rha.namespace(), rha.name_any()) else {
            return Ok(());
        };
        if rha.metadata.deletion_timestamp.is_some() {
            self.shared.forget(&(namespace, name));
            return Ok(());
        }
        let key = (namespace.clone(), name.clone());
        let Some(password) = self.shared.password(&key) else {
            return Ok(()); // the reconcile has not read the auth Secret yet
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
            return Ok(());
        }
        let rendering = Rendering::for_redis_ha(rha, &name, &namespace, &self.shared.cluster_domain);
        let cluster = Cluster {
            master_set: &name,
            redis: &redis,
            sentinels: &sentinels,
            quorum: rha.spec.sentinel.effective_quorum(),
            password: password.as_deref(),
            timings: rendering.timings,
            timeouts: Timeouts::default(),
        };
        let observation = task.leadership.while_leader(redis_io::observe(cluster)).await?;
        let plan = decide(&observation);
        let regarding = rha.object_ref(&());
        for action in &plan.actions {
            let done = task.leadership.while_leader(redis_io::perform(action, cluster)).await?;
            match (done, action) {
                (Ok(Performed::ForKubernetes), Action::LabelRole { pod, role }) => {
                    task.leadership.check()?;
                    let patch = serde_json::json!({"metadata": {"labels": {ROLE_LABEL: role.label()}}});
                    if let Err(error) = Api::<Pod>::namespaced(task.client.clone(), &namespace)
                        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        tracing::warn!(%namespace, %pod, %error, "labelling the Pod's role failed");
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
        if self.shared.set_plan(key, plan) {
            self.trigger.reconcile(&namespace, &name);
        }
        Ok(())
    }
}
