//! Carrying out one of the healer's actions on Redis or Sentinel.
use super::{
    Cluster,
    commands::{config_set, replicaof, sentinel_remonitor, sentinel_reset, sentinel_set},
    conn::{IoError, Target},
    failover::unpause,
};
use crate::healer::Action;

/// What [`perform`] did with an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Performed {
    /// Sent to Redis or Sentinel.
    Done,
    /// A Kubernetes change (a role label): the caller's to make through the API.
    ForKubernetes,
}

/// Carries out one of the healer's actions on Redis or Sentinel. The caller runs this only while
/// leader (a follower never sends a Redis command).
pub async fn perform(action: &Action, cluster: Cluster<'_>) -> Result<Performed, IoError> {
    let redis = |pod: &str| {
        cluster
            .redis
            .iter()
            .find(|m| m.pod == pod)
            .map(|m| Target::new(&m.connect, cluster.password, cluster.timeouts))
    };
    let sentinel = |pod: &str| {
        cluster
            .sentinels
            .iter()
            .find(|m| m.pod == pod)
            .map(|m| Target::sentinel(&m.connect, cluster.password, cluster.timeouts))
    };
    let unknown = |pod: &str| IoError::UnknownMember(pod.to_owned());
    match action {
        Action::LabelRole { .. } => return Ok(Performed::ForKubernetes),
        Action::Replicate { pod, master } => replicaof(redis(pod).ok_or_else(|| unknown(pod))?, Some(master)).await?,
        Action::Demote { pod, master } => {
            let target = redis(pod).ok_or_else(|| unknown(pod))?;
            replicaof(target, Some(master)).await?;
            // A master left by a planned failover has writes paused: now a replica, it answers
            // them READONLY instead of holding the clients.
            unpause(target).await?;
        }
        Action::Promote { pod } => replicaof(redis(pod).ok_or_else(|| unknown(pod))?, None).await?,
        Action::SentinelMonitor { sentinel: pod, master } => {
            sentinel_remonitor(
                sentinel(pod).ok_or_else(|| unknown(pod))?,
                cluster.master_set,
                master,
                cluster.quorum,
                cluster.timings,
                cluster.password,
            )
            .await?
        }
        Action::SentinelSettings { sentinel: pod } => {
            let options = [
                ("down-after-milliseconds", cluster.timings.down_after_ms.to_string()),
                ("failover-timeout", cluster.timings.failover_timeout_ms.to_string()),
                ("quorum", cluster.quorum.to_string()),
            ];
            sentinel_set(sentinel(pod).ok_or_else(|| unknown(pod))?, cluster.master_set, &options).await?;
        }
        Action::RequireReplicas { pod, required } => {
            let target = redis(pod).ok_or_else(|| unknown(pod))?;
            if *required {
                let lag = crate::config::MIN_REPLICAS_MAX_LAG_SECONDS.to_string();
                config_set(target, "min-replicas-max-lag", &lag).await?;
            }
            config_set(target, "min-replicas-to-write", if *required { "1" } else { "0" }).await?;
        }
        Action::RestorePriority { pod } => {
            let target = redis(pod).ok_or_else(|| unknown(pod))?;
            config_set(target, "replica-priority", &crate::config::REPLICA_PRIORITY.to_string()).await?;
        }
        Action::SentinelReset { sentinel: pod } => {
            sentinel_reset(sentinel(pod).ok_or_else(|| unknown(pod))?, cluster.master_set).await?;
        }
    }
    Ok(Performed::Done)
}
