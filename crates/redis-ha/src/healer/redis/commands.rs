//! The Redis and Sentinel commands the healer and the test tools send, one function each.
use std::collections::BTreeMap;

use super::{
    conn::{IoError, Target},
    parse::{pairs, parse_info_replication, parse_sentinel_view, parse_tilt},
};
use crate::{
    config::{Endpoint, SentinelTimings},
    healer::{Replication, SentinelView},
};

/// `INFO replication` of one Redis.
pub async fn info_replication(target: Target<'_>) -> Result<Replication, IoError> {
    let what = "INFO replication";
    let info: String = target
        .query(what, redis::cmd("INFO").arg("replication").clone())
        .await?;
    parse_info_replication(&info).map_err(|e| target.unexpected(what, e.to_string()))
}

/// `REPLICAOF host port`, or `REPLICAOF NO ONE` with `None`.
pub async fn replicaof(target: Target<'_>, master: Option<&Endpoint>) -> Result<(), IoError> {
    let mut command = redis::cmd("REPLICAOF");
    match master {
        Some(master) => command.arg(&master.host).arg(master.port),
        None => command.arg("NO").arg("ONE"),
    };
    let reply: String = target.query("REPLICAOF", command).await?;
    if reply.starts_with("OK") {
        Ok(())
    } else {
        Err(target.unexpected("REPLICAOF", reply))
    }
}

/// `CONFIG SET name value` (e.g. `replica-priority 0` on Pods a failover must not choose).
pub async fn config_set(target: Target<'_>, name: &str, value: &str) -> Result<(), IoError> {
    let _: () = target
        .query(
            "CONFIG SET",
            redis::cmd("CONFIG").arg("SET").arg(name).arg(value).clone(),
        )
        .await?;
    Ok(())
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME set`: None when the Sentinel does not monitor it.
pub async fn sentinel_master_address(target: Target<'_>, master_set: &str) -> Result<Option<Endpoint>, IoError> {
    let what = "SENTINEL GET-MASTER-ADDR-BY-NAME";
    let reply: Option<Vec<String>> = target
        .query(
            what,
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(master_set)
                .clone(),
        )
        .await?;
    match reply.as_deref() {
        None | Some([]) => Ok(None),
        Some([host, port]) => port
            .parse()
            .map(|port| Some(Endpoint::new(host.clone(), port)))
            .map_err(|_| target.unexpected(what, format!("port {port:?}"))),
        Some(other) => Err(target.unexpected(what, format!("{other:?}"))),
    }
}

fn is_no_such_master(error: &IoError) -> bool {
    matches!(error, IoError::Redis { source, .. } if source.to_string().contains("No such master"))
}

/// `SENTINEL MASTER set` as a map; None when the Sentinel does not monitor it.
pub async fn sentinel_master(
    target: Target<'_>,
    master_set: &str,
) -> Result<Option<BTreeMap<String, String>>, IoError> {
    match target
        .query::<Vec<String>>(
            "SENTINEL MASTER",
            redis::cmd("SENTINEL").arg("MASTER").arg(master_set).clone(),
        )
        .await
    {
        Ok(flat) => Ok(Some(pairs(flat))),
        Err(error) if is_no_such_master(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

async fn sentinel_list(
    target: Target<'_>,
    what: &'static str,
    sub: &str,
    master_set: &str,
) -> Result<Vec<BTreeMap<String, String>>, IoError> {
    let entries: Vec<Vec<String>> = target
        .query(what, redis::cmd("SENTINEL").arg(sub).arg(master_set).clone())
        .await?;
    Ok(entries.into_iter().map(pairs).collect())
}

/// `SENTINEL REPLICAS set`: each known replica's fields (`ip`, `port`, `flags`, …).
pub async fn sentinel_replicas(target: Target<'_>, master_set: &str) -> Result<Vec<BTreeMap<String, String>>, IoError> {
    sentinel_list(target, "SENTINEL REPLICAS", "REPLICAS", master_set).await
}

/// `SENTINEL SENTINELS set`: each other known Sentinel's fields (only the tests ask).
#[cfg(feature = "testing")]
pub async fn sentinel_sentinels(
    target: Target<'_>,
    master_set: &str,
) -> Result<Vec<BTreeMap<String, String>>, IoError> {
    sentinel_list(target, "SENTINEL SENTINELS", "SENTINELS", master_set).await
}

/// A Sentinel's view of the master set (what the healer needs).
pub async fn sentinel_view(target: Target<'_>, master_set: &str) -> Result<SentinelView, IoError> {
    let info: String = target
        .query("INFO sentinel", redis::cmd("INFO").arg("sentinel").clone())
        .await?;
    let tilt = parse_tilt(&info);
    let Some(master) = sentinel_master(target, master_set).await? else {
        return Ok(SentinelView {
            master: None,
            failover_in_progress: false,
            master_down: false,
            known_replicas: 0,
            known_sentinels: 0,
            config_epoch: 0,
            tilt,
            settings: None,
        });
    };
    let address = sentinel_master_address(target, master_set).await?;
    Ok(SentinelView {
        tilt,
        ..parse_sentinel_view(&master, address)
    })
}

pub(super) async fn sentinel_ok(target: Target<'_>, what: &'static str, command: redis::Cmd) -> Result<(), IoError> {
    let reply: String = target.query(what, command).await?;
    if reply == "OK" {
        Ok(())
    } else {
        Err(target.unexpected(what, reply))
    }
}

/// `SENTINEL FAILOVER set`: a failover without asking the other Sentinels.
pub async fn sentinel_failover(target: Target<'_>, master_set: &str) -> Result<(), IoError> {
    sentinel_ok(
        target,
        "SENTINEL FAILOVER",
        redis::cmd("SENTINEL").arg("FAILOVER").arg(master_set).clone(),
    )
    .await
}

/// `SENTINEL RESET pattern`: how many master sets were reset.
pub async fn sentinel_reset(target: Target<'_>, pattern: &str) -> Result<i64, IoError> {
    target
        .query(
            "SENTINEL RESET",
            redis::cmd("SENTINEL").arg("RESET").arg(pattern).clone(),
        )
        .await
}

/// `SENTINEL REMOVE set`; a Sentinel that does not monitor it is fine.
pub async fn sentinel_remove(target: Target<'_>, master_set: &str) -> Result<(), IoError> {
    match sentinel_ok(
        target,
        "SENTINEL REMOVE",
        redis::cmd("SENTINEL").arg("REMOVE").arg(master_set).clone(),
    )
    .await
    {
        Err(error) if is_no_such_master(&error) => Ok(()),
        other => other,
    }
}

/// `SENTINEL MONITOR set host port quorum`.
pub async fn sentinel_monitor(
    target: Target<'_>,
    master_set: &str,
    master: &Endpoint,
    quorum: i32,
) -> Result<(), IoError> {
    sentinel_ok(
        target,
        "SENTINEL MONITOR",
        redis::cmd("SENTINEL")
            .arg("MONITOR")
            .arg(master_set)
            .arg(&master.host)
            .arg(master.port)
            .arg(quorum)
            .clone(),
    )
    .await
}

/// `SENTINEL SET set option value …`.
pub async fn sentinel_set(target: Target<'_>, master_set: &str, options: &[(&str, String)]) -> Result<(), IoError> {
    let mut command = redis::cmd("SENTINEL");
    command.arg("SET").arg(master_set);
    for (option, value) in options {
        command.arg(*option).arg(value);
    }
    sentinel_ok(target, "SENTINEL SET", command).await
}

/// Makes a Sentinel monitor `master` with the rendered settings: REMOVE, MONITOR, SET (the same
/// timings and password sentinel.conf has).
pub async fn sentinel_remonitor(
    target: Target<'_>,
    master_set: &str,
    master: &Endpoint,
    quorum: i32,
    timings: SentinelTimings,
    password: Option<&str>,
) -> Result<(), IoError> {
    sentinel_remove(target, master_set).await?;
    sentinel_monitor(target, master_set, master, quorum).await?;
    let mut options = vec![
        ("down-after-milliseconds", timings.down_after_ms.to_string()),
        ("failover-timeout", timings.failover_timeout_ms.to_string()),
        ("parallel-syncs", "1".to_owned()),
    ];
    if let Some(password) = password {
        options.push(("auth-pass", password.to_owned()));
    }
    sentinel_set(target, master_set, &options).await
}

/// `PING`.
pub async fn ping(target: Target<'_>) -> Result<(), IoError> {
    let _: String = target.query("PING", redis::cmd("PING").clone()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::healer::redis::Timeouts;

    #[tokio::test]
    async fn an_unreachable_redis_fails_within_the_bound() {
        // A listener that accepts and never answers: the call must end by its timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..4 {
                match listener.accept().await {
                    Ok((socket, _)) => held.push(socket),
                    Err(_) => break,
                }
            }
            held
        });
        let endpoint = Endpoint::new("127.0.0.1", port);
        let timeouts = Timeouts {
            connect: Duration::from_millis(300),
            call: Duration::from_millis(500),
        };
        let started = std::time::Instant::now();
        let result = info_replication(Target::new(&endpoint, None, timeouts)).await;
        let elapsed = started.elapsed();
        println!("stalled INFO replication failed after {elapsed:?}: {result:?}");
        assert!(result.is_err());
        assert!(
            elapsed >= Duration::from_millis(250),
            "it did wait for an answer: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(3), "bounded: {elapsed:?}");
        accept.abort();
    }
}
