//! The survey: reading every Redis and Sentinel of a RedisHA at once.
use super::{
    Cluster,
    commands::{info_replication, sentinel_view},
    conn::Target,
};
use crate::healer::{RedisPod, SentinelPod, Survey};

/// Surveys every Redis and Sentinel concurrently; one that does not answer within the bound is
/// recorded as unreachable (None), never waited for longer.
pub async fn survey(cluster: Cluster<'_>) -> Survey {
    let redis = futures::future::join_all(cluster.redis.iter().map(|member| async move {
        let replication = info_replication(Target::new(&member.connect, cluster.password, cluster.timeouts))
            .await
            .inspect_err(|error| tracing::debug!(pod = %member.pod, %error, "Redis unreachable"))
            .ok();
        RedisPod {
            pod: member.pod.clone(),
            ordinal: member.ordinal,
            address: member.announced.clone(),
            role_label: member.role_label.clone(),
            replication,
        }
    }));
    let sentinels = futures::future::join_all(cluster.sentinels.iter().map(|member| async move {
        let view = sentinel_view(
            Target::sentinel(&member.connect, cluster.password, cluster.timeouts),
            cluster.master_set,
        )
        .await
        .inspect_err(|error| tracing::debug!(pod = %member.pod, %error, "Sentinel unreachable"))
        .ok();
        SentinelPod {
            pod: member.pod.clone(),
            view,
        }
    }));
    let (redis, sentinels) = futures::future::join(redis, sentinels).await;
    Survey {
        redis,
        sentinels,
        quorum: usize::try_from(cluster.quorum).unwrap_or(1),
        timings: cluster.timings,
        desired_replicas: cluster.desired_replicas,
    }
}
