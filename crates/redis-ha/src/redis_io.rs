//! Observing and acting on Redis and Sentinel over the `redis` crate (tokio). Every call opens its
//! own connection and is bounded by [`Timeouts`] as a whole, so an unreachable or stalled Pod
//! costs the healer at most that long. Parsing is separate and pure.
use std::{collections::BTreeMap, future::Future, time::Duration};

use redis::{AsyncConnectionConfig, IntoConnectionInfo, aio::MultiplexedConnection};

use crate::{
    config::{Endpoint, SentinelTimings},
    healer::{Action, Observation, RedisPod, Replication, Role, SentinelPod, SentinelView},
};

/// Bounds on each call: connecting, and the whole call (connect + command(s)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            call: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{endpoint}: {what} timed out after {after:?}")]
    Timeout {
        endpoint: Endpoint,
        what: &'static str,
        after: Duration,
    },
    #[error("{endpoint}: {what}: {source}")]
    Redis {
        endpoint: Endpoint,
        what: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("{0} is not a member of this RedisHA")]
    UnknownMember(String),
    /// A planned failover abandoned before Sentinel was asked: it could not be made safe.
    #[error("planned failover abandoned: {pod}: {why}")]
    NotVerified { pod: String, why: String },
    #[error("{endpoint}: {what}: unexpected reply: {detail}")]
    Unexpected {
        endpoint: Endpoint,
        what: &'static str,
        detail: String,
    },
}

/// Where to send a command, with the password Redis or Sentinel requires.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub endpoint: &'a Endpoint,
    pub password: Option<&'a str>,
    pub timeouts: Timeouts,
    /// A Sentinel that has no password yet (one started before `spec.auth` was set, until its
    /// Pod is rolled) refuses `AUTH`: for a Sentinel that refusal means "connect without".
    sentinel: bool,
}

impl<'a> Target<'a> {
    pub fn new(endpoint: &'a Endpoint, password: Option<&'a str>, timeouts: Timeouts) -> Self {
        Self {
            endpoint,
            password,
            timeouts,
            sentinel: false,
        }
    }

    /// A Sentinel, which requires the set's password when `spec.auth` is set.
    pub fn sentinel(endpoint: &'a Endpoint, password: Option<&'a str>, timeouts: Timeouts) -> Self {
        Self {
            sentinel: true,
            ..Self::new(endpoint, password, timeouts)
        }
    }

    fn redis_error(&self, what: &'static str) -> impl FnOnce(redis::RedisError) -> IoError + '_ {
        move |source| IoError::Redis {
            endpoint: self.endpoint.clone(),
            what,
            source,
        }
    }

    fn unexpected(&self, what: &'static str, detail: impl Into<String>) -> IoError {
        IoError::Unexpected {
            endpoint: self.endpoint.clone(),
            what,
            detail: detail.into(),
        }
    }

    async fn connect(&self, what: &'static str) -> Result<MultiplexedConnection, IoError> {
        match self.connect_with(what, self.password).await {
            Err(error) if self.sentinel && self.password.is_some() && is_no_password_configured(&error) => {
                self.connect_with(what, None).await
            }
            connected => connected,
        }
    }

    async fn connect_with(&self, what: &'static str, password: Option<&str>) -> Result<MultiplexedConnection, IoError> {
        let mut info = (self.endpoint.host.clone(), self.endpoint.port)
            .into_connection_info()
            .map_err(self.redis_error(what))?;
        // Redis 7.0 has no CLIENT SETINFO; do not send it.
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(self.redis_error(what))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(Some(self.timeouts.call));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(self.redis_error(what))
    }

    /// Runs `body` on a fresh connection, the whole bounded by the call timeout.
    async fn call<T, F, Fut>(&self, what: &'static str, body: F) -> Result<T, IoError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, IoError>>,
    {
        let work = async {
            let connection = self.connect(what).await?;
            body(connection).await
        };
        tokio::time::timeout(self.timeouts.call, work)
            .await
            .unwrap_or_else(|_| {
                Err(IoError::Timeout {
                    endpoint: self.endpoint.clone(),
                    what,
                    after: self.timeouts.call,
                })
            })
    }

    async fn query<T: redis::FromRedisValue>(&self, what: &'static str, command: redis::Cmd) -> Result<T, IoError> {
        self.call(what, |mut connection| async move {
            command
                .query_async(&mut connection)
                .await
                .map_err(self.redis_error(what))
        })
        .await
    }
}

/// Why an `INFO replication` reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no role line")]
    NoRole,
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("field {field}: {value:?} is not a number")]
    NotANumber { field: &'static str, value: String },
}

/// Parses `INFO replication`.
pub fn parse_info_replication(info: &str) -> Result<Replication, ParseError> {
    let fields: BTreeMap<&str, &str> = info
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .collect();
    let number = |field: &'static str| -> Result<Option<i64>, ParseError> {
        fields
            .get(field)
            .map(|value| {
                value.parse::<i64>().map_err(|_| ParseError::NotANumber {
                    field,
                    value: (*value).to_owned(),
                })
            })
            .transpose()
    };
    let role = match fields.get("role").copied() {
        Some("master") => Role::Master,
        Some("slave") | Some("replica") => Role::Replica,
        Some(other) => return Err(ParseError::UnknownRole(other.to_owned())),
        None => return Err(ParseError::NoRole),
    };
    let master = match (role, fields.get("master_host"), number("master_port")?) {
        (Role::Replica, Some(host), Some(port)) => Some(Endpoint::new(
            *host,
            u16::try_from(port).map_err(|_| ParseError::NotANumber {
                field: "master_port",
                value: port.to_string(),
            })?,
        )),
        _ => None,
    };
    let offset = match role {
        Role::Replica => number("slave_repl_offset")?.or(number("master_repl_offset")?),
        Role::Master => number("master_repl_offset")?,
    }
    .unwrap_or(0);
    let link_up = fields.get("master_link_status") == Some(&"up");
    let link_down_seconds = match role {
        Role::Replica if !link_up => number("master_link_down_since_seconds")?,
        _ => None,
    };
    Ok(Replication {
        role,
        master,
        link_up,
        link_down_seconds,
        sync_in_progress: number("master_sync_in_progress")? == Some(1),
        offset,
        priority: match role {
            Role::Replica => number("slave_priority")?.and_then(|p| u32::try_from(p).ok()),
            Role::Master => None,
        },
        requires_replicas: role == Role::Master && fields.contains_key("min_slaves_good_slaves"),
        connected_replicas: number("connected_slaves")?.unwrap_or(0).try_into().unwrap_or(0),
    })
}

/// A flat `[key, value, key, value, …]` reply (SENTINEL MASTER, one entry of REPLICAS) as a map.
pub fn pairs(flat: Vec<String>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut items = flat.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        map.insert(key, value);
    }
    map
}

/// Reads a Sentinel's view from its `SENTINEL MASTER` fields and `GET-MASTER-ADDR-BY-NAME`.
pub fn parse_sentinel_view(master: &BTreeMap<String, String>, address: Option<Endpoint>) -> SentinelView {
    let count = |key: &str| master.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    let flagged = |wanted: &[&str]| {
        master
            .get("flags")
            .is_some_and(|flags| flags.split(',').any(|f| wanted.contains(&f)))
    };
    SentinelView {
        master: address,
        failover_in_progress: flagged(&["failover_in_progress"]),
        master_down: flagged(&["s_down", "o_down"]),
        known_replicas: count("num-slaves"),
        known_sentinels: count("num-other-sentinels"),
        config_epoch: master.get("config-epoch").and_then(|v| v.parse().ok()).unwrap_or(0),
        tilt: false,
        settings: (|| {
            let number = |key: &str| master.get(key)?.parse::<u32>().ok();
            let timings = SentinelTimings {
                down_after_ms: number("down-after-milliseconds")?,
                failover_timeout_ms: number("failover-timeout")?,
            };
            Some((timings, number("quorum")?))
        })(),
    }
}

/// Whether `INFO sentinel` says the Sentinel is in TILT mode.
pub fn parse_tilt(info: &str) -> bool {
    info.lines().any(|line| line.trim() == "sentinel_tilt:1")
}

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

/// `SENTINEL SENTINELS set`: each other known Sentinel's fields.
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

async fn sentinel_ok(target: Target<'_>, what: &'static str, command: redis::Cmd) -> Result<(), IoError> {
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

/// One Redis Pod to observe: its announced address (how Sentinels and replicas name it) and the
/// address the operator reaches it at (the Pod IP when the operator does not resolve Pod FQDNs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisMember {
    pub pod: String,
    pub ordinal: u32,
    pub announced: Endpoint,
    pub connect: Endpoint,
    pub role_label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelMember {
    pub pod: String,
    pub connect: Endpoint,
}

/// Everything the healer needs to act on a RedisHA's Redis and Sentinels.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    pub master_set: &'a str,
    pub redis: &'a [RedisMember],
    pub sentinels: &'a [SentinelMember],
    pub quorum: i32,
    /// `spec.replicas`: the Redis count the spec wants.
    pub desired_replicas: u32,
    pub password: Option<&'a str>,
    pub timings: SentinelTimings,
    pub timeouts: Timeouts,
}

/// Observes every Redis and Sentinel concurrently; one that does not answer within the bound is
/// observed as unreachable (None), never waited for longer.
pub async fn observe(cluster: Cluster<'_>) -> Observation {
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
    Observation {
        redis,
        sentinels,
        quorum: usize::try_from(cluster.quorum).unwrap_or(1),
        timings: cluster.timings,
        desired_replicas: cluster.desired_replicas,
    }
}

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

/// Whether `AUTH` was refused while connecting. The client library does not keep the reason;
/// a server with no password configured refuses it too, and then takes commands without one.
fn is_no_password_configured(error: &IoError) -> bool {
    matches!(error, IoError::Redis { source, .. } if source.kind() == redis::ErrorKind::AuthenticationFailed)
}

/// Whether Redis refused the password (`WRONGPASS`, `NOAUTH`).
pub fn is_auth_refused(error: &IoError) -> bool {
    matches!(error, IoError::Redis { source, .. }
        if source.kind() == redis::ErrorKind::AuthenticationFailed
            || ["WRONGPASS", "NOAUTH"].iter().any(|code| source.to_string().contains(code)))
}

/// `PING`.
pub async fn ping(target: Target<'_>) -> Result<(), IoError> {
    let _: String = target.query("PING", redis::cmd("PING").clone()).await?;
    Ok(())
}

/// A password change made live on a Redis still running with the previous password (`target`
/// authenticates with it): it accepts the new one as well (`ACL SETUSER default on >new`, until it
/// restarts from the new template) and authenticates to its master with the new one (`CONFIG SET
/// masterauth`), so old and new Pods replicate from each other while the Pods roll. Then the
/// Sentinels' links to it are reopened ([`drop_sentinel_links`]).
pub async fn accept_new_password(target: Target<'_>, new: &str, sentinel_hosts: &[&str]) -> Result<(), IoError> {
    accept_password_too(target, new).await?;
    config_set(target, "masterauth", new).await?;
    drop_sentinel_links(target, sentinel_hosts).await
}

/// `ACL SETUSER default on >new`: the default user takes `new` beside the passwords it has.
async fn accept_password_too(target: Target<'_>, new: &str) -> Result<(), IoError> {
    target
        .query(
            "ACL SETUSER",
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("default")
                .arg("on")
                .arg(format!(">{new}"))
                .clone(),
        )
        .await
}

/// Closes the Sentinels' connections to `target` so they reconnect and authenticate afresh.
/// Sentinel sends `AUTH` once, when it opens a link, and takes `-NOAUTH` answers to its PINGs for
/// a live link it never reopens: a Sentinel that opened its links with the new password before
/// this Redis accepted it (a Sentinel Pod restarted by the roll) would hold a healthy master down
/// after `down-after-milliseconds`.
pub async fn drop_sentinel_links(target: Target<'_>, sentinel_hosts: &[&str]) -> Result<(), IoError> {
    let clients: String = target
        .query("CLIENT LIST", redis::cmd("CLIENT").arg("LIST").clone())
        .await?;
    for id in sentinel_client_ids(&clients, sentinel_hosts) {
        // Gone already is as good as closed.
        let _: Result<i64, _> = target
            .query(
                "CLIENT KILL",
                redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).clone(),
            )
            .await;
    }
    Ok(())
}

/// The ids of the Sentinels' connections in a `CLIENT LIST` reply: named `sentinel-<id>-cmd` or
/// `-pubsub` by Sentinel, or, since a link whose `AUTH` was refused could not name itself either,
/// any connection from a Sentinel's address that is not a replication link.
pub fn sentinel_client_ids(client_list: &str, sentinel_hosts: &[&str]) -> Vec<u64> {
    client_list
        .lines()
        .filter_map(|line| {
            let field = |key: &str| {
                line.split(' ')
                    .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            };
            let named = field("name").is_some_and(|name| name.starts_with("sentinel-"));
            let from_sentinel = field("addr")
                .and_then(|addr| addr.rsplit_once(':'))
                .is_some_and(|(host, _)| sentinel_hosts.contains(&host));
            let replication = field("flags").is_some_and(|flags| flags.contains(['S', 'M']));
            let sentinel_link = named || (from_sentinel && !replication);
            sentinel_link.then(|| field("id")?.parse().ok())?
        })
        .collect()
}

/// For each of `pods` that refuses the current password but takes `previous`: makes it accept the
/// current one ([`accept_new_password`]). Returns what was done per Pod.
pub async fn adopt_password<'a>(
    cluster: Cluster<'a>,
    pods: &[String],
    previous: Option<&'a str>,
) -> Vec<(String, Result<(), IoError>)> {
    let Some(new) = cluster.password else {
        return Vec::new(); // turning auth off is not rotated live
    };
    let sentinel_hosts: Vec<&str> = cluster.sentinels.iter().map(|s| s.connect.host.as_str()).collect();
    let mut done = Vec::new();
    for member in cluster.redis.iter().filter(|m| pods.contains(&m.pod)) {
        match ping(Target::new(&member.connect, Some(new), cluster.timeouts)).await {
            Err(error) if is_auth_refused(&error) => {}
            _ => continue, // takes the new password already, or is down for another reason
        }
        let outcome = accept_new_password(
            Target::new(&member.connect, previous, cluster.timeouts),
            new,
            &sentinel_hosts,
        )
        .await;
        done.push((member.pod.clone(), outcome));
    }
    done
}

/// For each Sentinel that refuses the current password but takes `previous`: makes it accept the
/// current one as well (`ACL SETUSER default on >new`), so Redis Pods not rolled yet, which send
/// the previous one, and rolled ones, which send the new one, both reach it. The previous one
/// stops working when the Sentinel Pods roll, after the Redis Pods. Returns what was done per Pod.
pub async fn adopt_sentinel_password<'a>(
    cluster: Cluster<'a>,
    previous: Option<&'a str>,
) -> Vec<(String, Result<(), IoError>)> {
    let Some(new) = cluster.password else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for member in cluster.sentinels {
        match ping(Target::sentinel(&member.connect, Some(new), cluster.timeouts)).await {
            Err(error) if is_auth_refused(&error) => {}
            _ => continue,
        }
        let outcome = accept_password_too(Target::sentinel(&member.connect, previous, cluster.timeouts), new).await;
        done.push((member.pod.clone(), outcome));
    }
    done
}

/// Tells every Sentinel the current password: for the master set (`SENTINEL SET … auth-pass`)
/// and for its peers (`SENTINEL CONFIG SET sentinel-pass`, after which it reopens its links to
/// them); true when all answered.
pub async fn tell_sentinels_password(cluster: Cluster<'_>) -> bool {
    let password = cluster.password.unwrap_or_default().to_owned();
    let told = futures::future::join_all(cluster.sentinels.iter().map(|member| {
        let password = password.clone();
        async move {
            let target = Target::sentinel(&member.connect, cluster.password, cluster.timeouts);
            sentinel_set(target, cluster.master_set, &[("auth-pass", password.clone())]).await?;
            if password.is_empty() {
                return Ok(());
            }
            sentinel_ok(
                target,
                "SENTINEL CONFIG SET",
                redis::cmd("SENTINEL")
                    .arg("CONFIG")
                    .arg("SET")
                    .arg("sentinel-pass")
                    .arg(&password)
                    .clone(),
            )
            .await
        }
    }))
    .await;
    !told.is_empty() && told.iter().all(Result::is_ok)
}

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
/// (seen once: Sentinel elected itself 17 s after the request, after a 15 s pause had ended).
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
    let observed = futures::future::join_all(others.iter().map(|r| info_replication(target(r)))).await;
    let mut avoided: Vec<&RedisMember> = cluster.redis.iter().filter(|m| avoid.contains(&m.pod)).collect();
    let mut candidates = Vec::new();
    for (member, replication) in others.into_iter().zip(observed) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER_INFO: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=127.0.0.1,port=7001,state=online,offset=4242,lag=0\r\n\
        min_slaves_good_slaves:2\r\nmaster_failover_state:no-failover\r\nmaster_replid:abc\r\nmaster_repl_offset:4242\r\n";
    const REPLICA_INFO: &str = "# Replication\r\nrole:slave\r\nmaster_host:cache-0.cache-headless.apps.svc.cluster.local\r\n\
        master_port:6379\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\n\
        master_link_down_since_seconds:7\r\nmaster_sync_in_progress:1\r\nslave_read_repl_offset:10\r\nslave_repl_offset:10\r\n\
        slave_priority:100\r\nconnected_slaves:0\r\nmaster_repl_offset:12\r\n";

    #[test]
    fn sentinel_links_are_told_apart_from_other_clients() {
        // Redis 7.0's CLIENT LIST: one line per client, the healer's own connection included.
        let list = "id=3 addr=10.0.0.7:41234 laddr=10.0.0.5:6379 fd=8 name=sentinel-1a2b3c4d-cmd age=40 flags=N cmd=ping user=default\n\
            id=4 addr=10.0.0.7:41236 laddr=10.0.0.5:6379 fd=9 name=sentinel-1a2b3c4d-pubsub age=40 flags=P cmd=subscribe user=default\n\
            id=5 addr=10.0.0.8:41000 laddr=10.0.0.5:6379 fd=13 name= age=2 flags=N cmd=ping user=default\n\
            id=6 addr=10.0.0.8:41002 laddr=10.0.0.5:6379 fd=14 name= age=2 flags=N cmd=subscribe user=default\n\
            id=9 addr=10.0.0.2:50000 laddr=10.0.0.5:6379 fd=10 name= age=0 flags=N cmd=client|list user=default\n\
            id=12 addr=10.0.0.9:50002 laddr=10.0.0.5:6379 fd=11 name=app-sentinel-like age=3 flags=N cmd=set user=default\n\
            id=15 addr=10.0.0.8:6379 laddr=10.0.0.5:6379 fd=12 name= age=30 flags=S cmd=replconf user=default\n";
        // 10.0.0.8 is a Sentinel whose AUTH was refused (it could not name its links) and, in
        // this made-up list, also a replica's address: its replication link stays.
        assert_eq!(sentinel_client_ids(list, &["10.0.0.7", "10.0.0.8"]), [3, 4, 5, 6]);
        assert_eq!(sentinel_client_ids(list, &[]), [3, 4], "named links only");
        assert!(sentinel_client_ids("", &["10.0.0.7"]).is_empty());
        assert!(
            sentinel_client_ids("id=x name=sentinel-1-cmd\nname=sentinel-2-cmd", &[]).is_empty(),
            "no usable id"
        );
    }

    #[test]
    fn info_replication_of_a_master() {
        let replication = parse_info_replication(MASTER_INFO).expect("parses");
        assert_eq!(
            replication,
            Replication {
                role: Role::Master,
                master: None,
                link_up: false,
                link_down_seconds: None,
                sync_in_progress: false,
                offset: 4242,
                priority: None,
                requires_replicas: true,
                connected_replicas: 2,
            }
        );
    }

    #[test]
    fn info_replication_of_a_syncing_replica_uses_its_replica_offset() {
        let replication = parse_info_replication(REPLICA_INFO).expect("parses");
        assert_eq!(replication.role, Role::Replica);
        assert_eq!(
            replication.master,
            Some(Endpoint::new("cache-0.cache-headless.apps.svc.cluster.local", 6379))
        );
        assert!(!replication.link_up);
        assert_eq!(replication.link_down_seconds, Some(7));
        assert_eq!(replication.priority, Some(100));
        assert!(replication.sync_in_progress);
        assert_eq!(replication.offset, 10);
        let linked = REPLICA_INFO.replace("master_link_status:down", "master_link_status:up");
        assert_eq!(
            parse_info_replication(&linked).expect("parses").link_down_seconds,
            None,
            "a link that is up has no down time, whatever a stale field says"
        );
    }

    #[test]
    fn bad_info_is_an_error_not_a_guess() {
        assert_eq!(parse_info_replication("# Replication\r\n"), Err(ParseError::NoRole));
        assert_eq!(
            parse_info_replication("role:sentinel\r\n"),
            Err(ParseError::UnknownRole("sentinel".into()))
        );
        assert!(matches!(
            parse_info_replication("role:master\r\nmaster_repl_offset:x\r\n"),
            Err(ParseError::NotANumber { .. })
        ));
    }

    #[test]
    fn a_sentinel_view_reads_flags_and_counts() {
        let master = pairs(
            [
                "name",
                "cache",
                "flags",
                "master,failover_in_progress",
                "num-slaves",
                "2",
                "num-other-sentinels",
                "2",
            ]
            .map(String::from)
            .to_vec(),
        );
        let view = parse_sentinel_view(&master, Some(Endpoint::new("h", 6379)));
        assert!(view.failover_in_progress);
        assert_eq!(view.settings, None, "not reported: nothing to compare");
        let mut with_settings = master.clone();
        for (key, value) in [
            ("down-after-milliseconds", "4000"),
            ("failover-timeout", "20000"),
            ("quorum", "2"),
        ] {
            with_settings.insert(key.into(), value.into());
        }
        assert_eq!(
            parse_sentinel_view(&with_settings, None).settings,
            Some((SentinelTimings::default(), 2))
        );
        assert!(!view.master_down);
        assert_eq!((view.known_replicas, view.known_sentinels), (2, 2));
        let quiet = pairs(["flags", "master"].map(String::from).to_vec());
        assert!(!parse_sentinel_view(&quiet, None).failover_in_progress);
        for flags in ["master,s_down", "master,s_down,o_down,disconnected"] {
            let down = pairs(["flags", flags].map(String::from).to_vec());
            assert!(parse_sentinel_view(&down, None).master_down, "{flags}");
        }
        let disconnected = pairs(["flags", "master,disconnected"].map(String::from).to_vec());
        assert!(
            !parse_sentinel_view(&disconnected, None).master_down,
            "a link being re-established is not a judgement"
        );
    }

    #[test]
    fn tilt_mode_is_read_from_info_sentinel() {
        let info = "# Sentinel\r\nsentinel_masters:1\r\nsentinel_tilt:1\r\nsentinel_tilt_since_seconds:4\r\n";
        assert!(parse_tilt(info));
        assert!(!parse_tilt(&info.replace("sentinel_tilt:1", "sentinel_tilt:0")));
        assert!(!parse_tilt(""));
    }

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
