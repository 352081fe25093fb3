//! What the renderers take from a RedisHA (ports, file names, where the files are mounted, the
//! Sentinels to ask, the announced hosts) and the checks of what a spec may add to redis.conf.
use std::collections::BTreeMap;

use crate::{
    crd::RedisHA,
    names::{headless_service, pod_fqdn, sentinel_headless_service, sentinel_set},
};

pub const REDIS_PORT: u16 = 6379;
pub const SENTINEL_PORT: u16 = 26379;

/// ConfigMap keys (and file names under [`Layout::config_dir`]).
pub const REDIS_CONF: &str = "redis.conf";
pub const REDIS_START: &str = "redis-start.sh";
pub const REDIS_READY: &str = "redis-ready.sh";
pub const REDIS_PRESTOP: &str = "redis-prestop.sh";
pub const SENTINEL_CONF: &str = "sentinel.conf";
pub const SENTINEL_INIT: &str = "sentinel-init.sh";
pub const SENTINEL_READY: &str = "sentinel-ready.sh";

/// The environment variables the scripts read: the Pod's name (downward API) and the password
/// (a Secret key reference; `REDISCLI_AUTH` is how redis-cli takes it without a command-line flag).
pub const ENV_POD_NAME: &str = "POD_NAME";
pub const ENV_PASSWORD: &str = "REDIS_PASSWORD";
pub const ENV_REDISCLI_AUTH: &str = "REDISCLI_AUTH";

/// The master a Redis replicates while it waits for the operator: a name that never resolves
/// (RFC 2606 `.invalid`), so the Redis is a replica that takes no writes and serves no stale
/// master role, and the healer (which reads `master_host`) knows it is waiting.
pub const WAITING_MASTER_HOST: &str = "capstan-waiting-for-operator.invalid";

/// Sentinel timings, chosen for the outage goals: a dead master is noticed after
/// `down_after_ms`, and a failover that stalls is abandoned (and retried) after a bounded time.
/// 4 s rather than 5: a master cut off from the network costs down-after plus about 4 s
/// (agreement, election, promotion, relabel), and 5 s plus that overruns the 10 s outage goal;
/// 3 s would fail over needlessly when a loaded node stalls a Redis for a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentinelTimings {
    pub down_after_ms: u32,
    pub failover_timeout_ms: u32,
}

impl Default for SentinelTimings {
    fn default() -> Self {
        Self {
            down_after_ms: 4_000,
            failover_timeout_ms: 20_000,
        }
    }
}

/// `min-replicas-max-lag` when writes need a replica: an isolated master refuses writes this
/// many seconds after its replicas' last acknowledgement (they send one every second).
pub const MIN_REPLICAS_MAX_LAG_SECONDS: u32 = 5;

/// A host and port as Redis and Sentinel announce them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How a process finds the hostname it announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// `$POD_NAME.<suffix>`: the Pod's stable FQDN under its headless Service.
    PodFqdn { suffix: String },
    /// A fixed host (a host-only test where every process shares 127.0.0.1).
    Fixed(String),
}

/// Where the files are inside the containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The ConfigMap mount (read-only).
    pub config_dir: String,
    /// A writable emptyDir: the effective redis.conf and Sentinel's own sentinel.conf.
    pub runtime_dir: String,
    /// Redis's `dir` (its claim, or an emptyDir).
    pub data_dir: String,
    /// The bootstrap record's mount (a mutable ConfigMap, optional): [`BOOTSTRAP_MASTER_KEY`]
    /// names the last master the operator verified, [`BOOTSTRAP_REPLICAS_KEY`] the Redis count.
    pub bootstrap_dir: String,
}

/// The key of the bootstrap ConfigMap that names the last master the operator verified.
pub const BOOTSTRAP_MASTER_KEY: &str = "master";
/// Its key with the Redis count the spec wants (`spec.replicas`).
pub const BOOTSTRAP_REPLICAS_KEY: &str = "replicas";

impl Default for Layout {
    fn default() -> Self {
        Self {
            config_dir: "/etc/redis-ha".into(),
            runtime_dir: "/run/redis-ha".into(),
            data_dir: "/data".into(),
            bootstrap_dir: "/etc/redis-ha-bootstrap".into(),
        }
    }
}

/// Everything the renderers need, taken from a RedisHA ([`Rendering::for_redis_ha`]) or built by
/// hand for a host-only test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendering {
    /// The Sentinel master-set name: the RedisHA's name.
    pub master_set: String,
    pub quorum: i32,
    /// Whether the Pods get a password through [`ENV_PASSWORD`].
    pub auth: bool,
    /// Persistence on a claim (`appendonly yes`) or none (an emptyDir gives nothing to keep).
    pub persistent: bool,
    /// `spec.config`, checked by [`check_extra_config`].
    pub extra_config: BTreeMap<String, String>,
    /// Redis's `bind`.
    pub bind: String,
    pub redis_port: u16,
    pub sentinel_port: u16,
    pub redis_announce: Announce,
    pub sentinel_announce: Announce,
    /// Ordinal 0, the master on first creation.
    pub bootstrap_master: Endpoint,
    /// What turns a Redis Pod's name into its announced host (`.<headless>.<ns>.svc.<domain>`).
    pub redis_host_suffix: String,
    /// Every Sentinel, asked who the master is.
    pub sentinels: Vec<Endpoint>,
    pub timings: SentinelTimings,
    pub layout: Layout,
}

impl Rendering {
    /// The rendering for a RedisHA in Kubernetes: stable Pod FQDNs under the headless Services.
    pub fn for_redis_ha(rha: &RedisHA, name: &str, namespace: &str, cluster_domain: &str) -> Self {
        let redis_service = headless_service(name);
        let sentinel_service = sentinel_headless_service(name);
        let sentinels = (0..rha.spec.sentinel.replicas.max(0))
            .map(|i| {
                Endpoint::new(
                    pod_fqdn(
                        &format!("{}-{i}", sentinel_set(name)),
                        &sentinel_service,
                        namespace,
                        cluster_domain,
                    ),
                    SENTINEL_PORT,
                )
            })
            .collect();
        Self {
            master_set: name.to_owned(),
            quorum: rha.spec.sentinel.effective_quorum(),
            auth: rha.spec.auth.is_some(),
            persistent: rha.spec.storage.is_some(),
            extra_config: rha.spec.config.clone(),
            bind: "* -::*".into(),
            redis_port: REDIS_PORT,
            sentinel_port: SENTINEL_PORT,
            redis_announce: Announce::PodFqdn {
                suffix: format!("{redis_service}.{namespace}.svc.{cluster_domain}"),
            },
            sentinel_announce: Announce::PodFqdn {
                suffix: format!("{sentinel_service}.{namespace}.svc.{cluster_domain}"),
            },
            bootstrap_master: Endpoint::new(
                pod_fqdn(&format!("{name}-0"), &redis_service, namespace, cluster_domain),
                REDIS_PORT,
            ),
            redis_host_suffix: format!(".{redis_service}.{namespace}.svc.{cluster_domain}"),
            sentinels,
            timings: SentinelTimings::default(),
            layout: Layout::default(),
        }
    }
}

/// Why `spec.config` (or the password) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "spec.config.{0}: the operator sets this directive itself (replication, addresses, auth and \
         safety settings are managed); remove it"
    )]
    OwnedDirective(String),
    #[error("spec.config.{0}: not a redis.conf directive name (lowercase letters, digits and '-')")]
    InvalidName(String),
    #[error("spec.config.{0}: the value must be non-empty and on one line")]
    InvalidValue(String),
    #[error(
        "the password must be non-empty, on one line, without spaces, quotes or backslashes \
         (Sentinel writes it unquoted into its own config file and could not start again)"
    )]
    InvalidPassword,
    #[error("spec.config.{name}: {why}")]
    BreaksFailover { name: String, why: &'static str },
}

/// The `replica-priority` every replica runs with: Redis's default. The operator owns the
/// directive: it sets 0 on a replica a planned failover must not promote (lagging, or removed by
/// a scale-down) and restores this value once the set is settled.
pub const REPLICA_PRIORITY: u32 = 100;
/// The fewest clients a Redis must accept: its replicas, the Sentinels' two links each, the
/// healer, the probes and some applications.
pub const MIN_MAXCLIENTS: u64 = 64;

/// Directives the operator sets or that would break what it relies on. Redis reads the last
/// occurrence of a directive, so accepting any of these would silently override the operator.
pub const OWNED_DIRECTIVES: &[&str] = &[
    "bind",
    "port",
    "protected-mode",
    "dir",
    "replicaof",
    "slaveof",
    "requirepass",
    "masterauth",
    "masteruser",
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "min-slaves-to-write",
    "min-slaves-max-lag",
    "replica-announce-ip",
    "replica-announce-port",
    "slave-announce-ip",
    "slave-announce-port",
    "replica-announced",
    "include",
    "rename-command",
    "daemonize",
    "supervised",
    "pidfile",
    "logfile",
    "unixsocket",
    "aclfile",
    "user",
    "replica-priority",
    "slave-priority",
];

/// Values of directives a user may set that would quietly break replication or failover.
fn check_failover_safe(directive: &str, value: &str) -> Result<(), &'static str> {
    let value = value.trim().to_ascii_lowercase();
    match directive {
        "replica-read-only" | "slave-read-only" if value == "no" => {
            Err("writable replicas take writes that their next resync from the master silently discards")
        }
        "maxclients" if value.parse::<u64>().map_or(true, |n| n < MIN_MAXCLIENTS) => Err(
            "must be a number of at least 64: the replicas, the Sentinels (two links each), the operator and the probes need connections of their own",
        ),
        _ => Ok(()),
    }
}

/// Refuses `spec.config` entries the operator owns, and names or values that could smuggle in
/// another directive (a line break) or are not directives at all.
pub fn check_extra_config(config: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, value) in config {
        let directive = name.to_ascii_lowercase();
        if directive.is_empty()
            || !directive
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ConfigError::InvalidName(name.clone()));
        }
        if OWNED_DIRECTIVES.contains(&directive.as_str()) {
            return Err(ConfigError::OwnedDirective(name.clone()));
        }
        if value.trim().is_empty() || value.chars().any(char::is_control) {
            return Err(ConfigError::InvalidValue(name.clone()));
        }
        check_failover_safe(&directive, value).map_err(|why| ConfigError::BreaksFailover {
            name: name.clone(),
            why,
        })?;
    }
    Ok(())
}

/// A password Redis and Sentinel can keep in their config files. Sentinel rewrites its file with
/// `auth-pass` and `sentinel-pass` unquoted, so a space splits the line and a quote or backslash
/// changes it: Sentinel would refuse its own file at the next start.
pub fn check_password(password: &[u8]) -> Result<(), ConfigError> {
    let unsafe_char = |c: char| c.is_control() || c.is_whitespace() || ['"', '\'', '\\'].contains(&c);
    match std::str::from_utf8(password) {
        Ok(text) if !text.is_empty() && !text.chars().any(unsafe_char) => Ok(()),
        _ => Err(ConfigError::InvalidPassword),
    }
}
