//! A planned failover: the old master's writes paused, the replicas that must not take over made
//! unpromotable, then `SENTINEL FAILOVER`.
use std::time::Duration;

use super::{
    Cluster, RedisMember, SentinelMember,
    commands::{config_set, info_replication, sentinel_failover, sentinel_replicas},
    conn::{IoError, Target},
};

/// Sentinel reads a replica's `replica-priority` from its `INFO`, every 10 s outside a failover.
const PRIORITY_SEEN_WITHIN: Duration = Duration::from_secs(15);

/// Waits (at most `bound`) until the Sentinel reports `slave-priority 0` for every replica
/// announced as one of `hosts`; true when it does. Sentinel picks the replica to promote from what
/// it last read, so a `replica-priority 0` it has not seen yet does not keep a replica out.
pub async fn sentinel_sees_priority_zero(
    target: Target<'_>,
    master_set: &str,
    hosts: &[&str],
    bound: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Ok(replicas) = sentinel_replicas(target, master_set).await {
            let seen = hosts.iter().all(|host| {
                replicas.iter().any(|r| {
                    r.get("ip").map(String::as_str) == Some(*host)
                        && r.get("slave-priority").map(String::as_str) == Some("0")
                })
            });
            if seen {
                return true;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How long a planned failover pauses writes on the master it leaves, beyond Sentinel's
/// `failover-timeout`: the pause must outlast any failover Sentinel may still complete, or writes
/// resuming on the old master could be acknowledged by a replica Sentinel then does not promote
/// (a Sentinel can elect itself after a pause as long as `failover-timeout` alone has ended).
/// The demotion unpauses at once; a failover that never happens stalls writes this long.
pub const PLANNED_FAILOVER_PAUSE_MARGIN: Duration = Duration::from_secs(10);
/// How long the replicas get to catch up with the paused master before Sentinel is asked.
const CATCH_UP: Duration = Duration::from_secs(2);

/// `CLIENT PAUSE ms WRITE`: write commands wait; replication, reads and admin commands go on.
pub async fn pause_writes(target: Target<'_>, pause: Duration) -> Result<(), IoError> {
    let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
    let _: () = target
        .query(
            "CLIENT PAUSE",
            redis::cmd("CLIENT").arg("PAUSE").arg(millis).arg("WRITE").clone(),
        )
        .await?;
    Ok(())
}

/// `CLIENT UNPAUSE`.
pub async fn unpause(target: Target<'_>) -> Result<(), IoError> {
    let _: () = target
        .query("CLIENT UNPAUSE", redis::cmd("CLIENT").arg("UNPAUSE").clone())
        .await?;
    Ok(())
}

/// A planned failover away from the master `from`, never to the `avoid` Pods, losing no
/// acknowledged write. Sentinel picks the replica by its own cached offsets (up to 10 s old), so
/// the operator decides who may be picked:
/// 1. Every other replica must answer (one the operator cannot reach could be lagging and still
///    be picked: abandon). Those not linked or mid-sync join `avoid`, and every avoided replica
///    gets `replica-priority 0`; only Sentinels that have seen those priorities are asked.
/// 2. The master pauses writes and the remaining replicas must catch up with its offset within
///    [`CATCH_UP`]; one that does not abandons the failover (writes resume; the next pass tries
///    again), since it can no longer be made unpromotable in time.
/// 3. The first Sentinel that accepts fails over. The paused writes fail once the old master is
///    demoted (READONLY) rather than land on it.
///
/// The priorities are restored by the healer once the set is settled (`Action::RestorePriority`),
/// also after an abandoned attempt or an operator restart in the middle.
pub async fn planned_failover<'a>(cluster: Cluster<'a>, from: &str, avoid: &[String]) -> Result<(), IoError> {
    let target = |member: &'a RedisMember| Target::new(&member.connect, cluster.password, cluster.timeouts);
    let master = cluster
        .redis
        .iter()
        .find(|m| m.pod == from)
        .ok_or_else(|| IoError::UnknownMember(from.to_owned()))?;
    let others: Vec<&RedisMember> = cluster
        .redis
        .iter()
        .filter(|m| m.pod != from && !avoid.contains(&m.pod))
        .collect();
    let answers = futures::future::join_all(others.iter().map(|r| info_replication(target(r)))).await;
    let mut avoided: Vec<&RedisMember> = cluster.redis.iter().filter(|m| avoid.contains(&m.pod)).collect();
    let mut candidates = Vec::new();
    for (member, replication) in others.into_iter().zip(answers) {
        match replication {
            Err(error) => {
                return Err(IoError::NotVerified {
                    pod: member.pod.clone(),
                    why: format!("it does not answer ({error}), so it may be lagging and still be promoted"),
                });
            }
            Ok(r) if !r.link_up || r.sync_in_progress => avoided.push(member),
            Ok(_) => candidates.push(member),
        }
    }
    if candidates.is_empty() {
        return Err(IoError::NotVerified {
            pod: from.to_owned(),
            why: "no replica is linked and in sync to take over".to_owned(),
        });
    }
    for member in &avoided {
        config_set(target(member), "replica-priority", "0").await?;
    }
    let hosts: Vec<&str> = avoided.iter().map(|m| m.announced.host.as_str()).collect();
    let hosts = &hosts;
    let seen = futures::future::join_all(cluster.sentinels.iter().map(|m| async move {
        let sentinel = Target::sentinel(&m.connect, cluster.password, cluster.timeouts);
        (hosts.is_empty()
            || sentinel_sees_priority_zero(sentinel, cluster.master_set, hosts, PRIORITY_SEEN_WITHIN).await)
            .then_some(m)
    }))
    .await;
    let askable: Vec<&SentinelMember> = seen.into_iter().flatten().collect();
    if askable.is_empty() {
        return Err(IoError::NotVerified {
            pod: hosts.join(", "),
            why: "no Sentinel has seen replica-priority 0 on it yet".to_owned(),
        });
    }
    let pause = Duration::from_millis(u64::from(cluster.timings.failover_timeout_ms)) + PLANNED_FAILOVER_PAUSE_MARGIN;
    pause_writes(target(master), pause).await?;
    let resume = |why: IoError| async move {
        if let Err(error) = unpause(target(master)).await {
            tracing::warn!(pod = %from, %error, "resuming writes after an abandoned failover failed");
        }
        why
    };
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let master_offset = match info_replication(target(master)).await {
            Ok(r) => r.offset,
            Err(error) => return Err(resume(error).await),
        };
        let offsets = futures::future::join_all(candidates.iter().map(|r| info_replication(target(r)))).await;
        let behind: Vec<&str> = candidates
            .iter()
            .zip(&offsets)
            .filter(|(_, r)| !r.as_ref().is_ok_and(|r| r.link_up && r.offset >= master_offset))
            .map(|(m, _)| m.pod.as_str())
            .collect();
        if behind.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = IoError::NotVerified {
                pod: behind.join(", "),
                why: format!("not caught up with the paused master's offset {master_offset} within {CATCH_UP:?}"),
            };
            return Err(resume(why).await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut last = None;
    for member in askable {
        match sentinel_failover(
            Target::sentinel(&member.connect, cluster.password, cluster.timeouts),
            cluster.master_set,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(error) => last = Some(error),
        }
    }
    Err(resume(last.unwrap_or(IoError::UnknownMember("no Sentinel".into()))).await)
}
