//! Pure rendering of redis.conf, sentinel.conf and the scripts the Pods run.
//!
//! What is the same for every Pod lives in ConfigMaps (rendered here); what differs per Pod (its
//! announced hostname, whom it replicates, the password) is added at start by the scripts, on a
//! writable volume, so no password is ever written into a ConfigMap and no bare Pod IP into
//! persistent configuration. The scripts are POSIX sh using only redis-cli and coreutils/sed, as in
//! the official `redis:7` image and on a Debian host; they run every redis-cli call under
//! `timeout` and bound every loop.
use std::{collections::BTreeMap, fmt::Write as _};

use crate::crd::RedisHA;

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
/// (agreement, election, promotion, relabel), and the bench measured 11.1 s with 5 s against the
/// 10 s goal; 3 s would fail over needlessly when a loaded node stalls a Redis for a moment.
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

impl Announce {
    fn shell_assignment(&self) -> String {
        match self {
            Announce::PodFqdn { suffix } => format!("ANNOUNCE_HOST=\"${{{ENV_POD_NAME}}}.{suffix}\""),
            Announce::Fixed(host) => format!("ANNOUNCE_HOST={}", sh_quote(host)),
        }
    }
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

/// Names of a RedisHA's Services, shared by the renderers and the builders.
pub fn headless_service(name: &str) -> String {
    format!("{name}-headless")
}
pub fn sentinel_headless_service(name: &str) -> String {
    format!("{name}-sentinel-headless")
}
pub fn sentinel_set(name: &str) -> String {
    format!("{name}-sentinel")
}

/// `<pod>.<service>.<namespace>.svc.<cluster domain>`.
pub fn pod_fqdn(pod: &str, service: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("{pod}.{service}.{namespace}.svc.{cluster_domain}")
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

/// redis.conf as stored in the ConfigMap (the start script adds the per-Pod lines).
pub fn redis_conf(r: &Rendering) -> Result<String, ConfigError> {
    check_extra_config(&r.extra_config)?;
    let mut out = format!(
        "# Rendered by capstan for RedisHA {set}. redis-start.sh copies this file to a writable volume\n\
         # and adds replica-announce-ip, replicaof and the password there.\n\
         bind {bind}\n\
         port {port}\n\
         protected-mode no\n\
         dir {dir}\n\
         replica-read-only yes\n\
         replica-serve-stale-data yes\n",
        set = r.master_set,
        bind = r.bind,
        port = r.redis_port,
        dir = r.layout.data_dir,
    );
    // min-replicas-to-write depends on the Redis count, which must not be part of the Pod
    // template (a scale would roll every Pod): redis-start.sh adds it from the mutable record,
    // and the healer sets it live on the master when the count changes.
    if r.persistent {
        out.push_str("appendonly yes\n");
    } else {
        out.push_str("# No claim: nothing survives the Pod, so no persistence work.\nappendonly no\nsave \"\"\n");
    }
    if !r.extra_config.is_empty() {
        out.push_str("# spec.config\n");
        for (name, value) in &r.extra_config {
            let _ = writeln!(out, "{} {}", name.to_ascii_lowercase(), value.trim());
        }
    }
    Ok(out)
}

/// sentinel.conf as stored in the ConfigMap: `@ANNOUNCE_HOST@`, `@MASTER_HOST@` and
/// `@MASTER_PORT@` are filled in by sentinel-init.sh on the writable copy Sentinel rewrites.
pub fn sentinel_conf(r: &Rendering) -> String {
    let set = &r.master_set;
    format!(
        "# Rendered by capstan for RedisHA {set}. sentinel-init.sh copies this to a writable volume,\n\
         # filling in the placeholders; Sentinel then rewrites its copy as it learns.\n\
         bind {bind}\n\
         port {port}\n\
         dir {runtime}\n\
         protected-mode no\n\
         sentinel resolve-hostnames yes\n\
         sentinel announce-hostnames yes\n\
         sentinel announce-ip @ANNOUNCE_HOST@\n\
         sentinel monitor {set} @MASTER_HOST@ @MASTER_PORT@ {quorum}\n\
         sentinel down-after-milliseconds {set} {down}\n\
         sentinel failover-timeout {set} {failover}\n\
         sentinel parallel-syncs {set} 1\n",
        bind = r.bind,
        port = r.sentinel_port,
        runtime = r.layout.runtime_dir,
        quorum = r.quorum,
        down = r.timings.down_after_ms,
        failover = r.timings.failover_timeout_ms,
    )
}

/// Single-quotes a value for sh.
fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Variables and functions every script starts with.
fn prelude(r: &Rendering, purpose: &str, announce: &Announce) -> String {
    let sentinels: Vec<String> = r.sentinels.iter().map(|s| format!("{} {}", s.host, s.port)).collect();
    format!(
        r#"#!/bin/sh
# Rendered by capstan for RedisHA {set}: {purpose}
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MASTER_SET={set_q}
REDIS_PORT={redis_port}
SENTINEL_PORT={sentinel_port}
CONFIG_DIR={config_dir}
RUNTIME_DIR={runtime_dir}
WAITING_MASTER_HOST={waiting}
SENTINELS={sentinels}
{announce}

log() {{ echo "capstan: $*" >&2; }}
# Every call is bounded: a Sentinel or Redis that does not answer must not hang a Pod.
redis_cli() {{ timeout 3 redis-cli "$@" 2>/dev/null | tr -d '\r'; }}
# The Sentinels take the set's password ({auth_env}), as Redis does. One still without a password
# (spec.auth just set) refuses the AUTH, and redis-cli then runs the command without it.
sentinel_cli() {{ timeout 3 redis-cli "$@" 2>/dev/null | tr -d '\r'; }}
# "config-epoch host port" of the master each answering Sentinel names, one line each.
sentinel_answers() {{
  printf '%s\n' "$SENTINELS" | while read -r s_host s_port; do
    [ -n "$s_host" ] || continue
    epoch=$(sentinel_cli --raw -h "$s_host" -p "$s_port" SENTINEL MASTER "$MASTER_SET" | sed -n '/^config-epoch$/{{n;p;q;}}')
    case "$epoch" in ''|*[!0-9]*) continue ;; esac
    reply=$(sentinel_cli --raw -h "$s_host" -p "$s_port" SENTINEL get-master-addr-by-name "$MASTER_SET" | tr '\n' ' ')
    set -- $reply
    [ $# -eq 2 ] && echo "$epoch $1 $2"
  done
}}
# The master the Sentinels' newest configuration names (highest config-epoch: right after a
# failover only its leader has switched, the others follow by gossip), the one most of those
# Sentinels name on a tie, as "host port"; nothing when none answers.
sentinel_master() {{
  answers=$(sentinel_answers | sort -k1,1nr)
  top=$(printf '%s\n' "$answers" | head -n 1 | cut -d' ' -f1)
  [ -n "$top" ] || return 0
  printf '%s\n' "$answers" | sed -n "s/^$top //p" | sort | uniq -c | sort -rn | head -n 1 | sed 's/^ *[0-9]* //'
}}
is_me() {{ [ "$1" = "$ANNOUNCE_HOST" ] && [ "$2" = "$REDIS_PORT" ]; }}
# Asks the Sentinels, one after the other, until one starts a failover; $1 (default 0) Sentinels
# are asked last instead of first, so a repeated request goes through another one.
# Succeeds when a Sentinel accepted (it may refuse: NOGOODSLAVE, INPROG).
request_failover() {{
  count=$(printf '%s\n' "$SENTINELS" | sed -n '$=')
  skip=$(( ${{1:-0}} % ${{count:-1}} ))
  {{ printf '%s\n' "$SENTINELS" | tail -n +$((skip + 1)); printf '%s\n' "$SENTINELS" | head -n "$skip"; }} | {{
    while read -r s_host s_port; do
      [ -n "$s_host" ] || continue
      reply=$(sentinel_cli -h "$s_host" -p "$s_port" SENTINEL FAILOVER "$MASTER_SET")
      log "SENTINEL FAILOVER $MASTER_SET via $s_host:$s_port: $reply"
      [ "$reply" = OK ] && exit 0
    done
    exit 1
  }}
}}
# A value for a config file: double-quoted, with backslashes and quotes escaped.
conf_quote() {{ printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }}
"#,
        set = r.master_set,
        set_q = sh_quote(&r.master_set),
        redis_port = r.redis_port,
        sentinel_port = r.sentinel_port,
        config_dir = sh_quote(&r.layout.config_dir),
        runtime_dir = sh_quote(&r.layout.runtime_dir),
        waiting = sh_quote(WAITING_MASTER_HOST),
        sentinels = sh_quote(&sentinels.join("\n")),
        announce = announce.shell_assignment(),
        auth_env = ENV_REDISCLI_AUTH,
    )
}

/// How long the scripts wait: Sentinels answering at start, and a failover away from this Pod.
const ASK_SENTINEL_ROUNDS: u32 = 15;
const FAILOVER_WAIT_SECONDS: u32 = 60;
/// How long (half-seconds) a returning master leaves the Sentinels, which all see it down, to
/// fail over on their own before asking one; and how often it asks again while none does.
const OWN_FAILOVER_HALF_SECONDS: u32 = 4;
const REASK_HALF_SECONDS: u32 = 4;
/// How long the master's `preStop` pauses writes while Sentinel hands over (milliseconds), and
/// how long it waits for the handover: both well inside the grace period. Clients wait from the
/// pause until the process stops after the handover, so the hook looks for the switch every
/// 200 ms (each look asks every Sentinel); it asks again each second while they refuse.
const PRESTOP_PAUSE_MS: u32 = 15_000;
const PRESTOP_POLL_MS: u32 = 200;
const PRESTOP_POLLS: u32 = PRESTOP_PAUSE_MS / PRESTOP_POLL_MS;
const PRESTOP_REASK_POLLS: u32 = 1_000 / PRESTOP_POLL_MS;

/// The Redis container's command. It never elects itself: it starts as a replica of the master
/// the Sentinels name; if they name this Pod, it has them fail over first (unless there is nobody
/// to hand over to: first creation, or a single instance); if no Sentinel answers it waits for
/// the operator as a replica of [`WAITING_MASTER_HOST`].
pub fn redis_start_script(r: &Rendering) -> String {
    let mut script = prelude(
        r,
        "start Redis as the Sentinels' master or its replica",
        &r.redis_announce,
    );
    let _ = write!(
        script,
        r#"RUNTIME_CONF="$RUNTIME_DIR/redis.conf"
BOOTSTRAP_DIR={bootstrap_dir}

# Writes the effective config (the ConfigMap's plus this Pod's lines) and becomes redis-server.
# $1: "master", or "host port" of the master to replicate.
start() {{
  umask 077
  {{
    cat "$CONFIG_DIR/redis.conf"
    echo "replica-announce-ip $ANNOUNCE_HOST"
    if [ -n "${{{password}:-}}" ]; then
      quoted=$(conf_quote "${password}")
      echo "requirepass $quoted"
      echo "masterauth $quoted"
    fi
    if [ "$1" != master ]; then echo "replicaof $1"; fi
    # An isolated master stops taking writes once no replica has acknowledged for the lag; one
    # Redis alone has no replica to wait for. The count comes from the operator's record (read
    # at start, so a scale changes no template); without one, replicas are required.
    if [ "$(cat "$BOOTSTRAP_DIR/{replicas_key}" 2>/dev/null)" = 1 ]; then
      echo "min-replicas-to-write 0"
    else
      echo "min-replicas-to-write 1"
      echo "min-replicas-max-lag {max_lag}"
    fi
  }} > "$RUNTIME_CONF.tmp" || exit 1
  mv "$RUNTIME_CONF.tmp" "$RUNTIME_CONF" || exit 1
  log "starting as ${{1}} (announcing $ANNOUNCE_HOST:$REDIS_PORT)"
  exec redis-server "$RUNTIME_CONF"
}}

# How the answering Sentinels see the master they monitor: "failover" when one of them fails
# over, "down" when every one that answers has marked it down (s_down or o_down), else "up".
sentinels_judgement() {{
  printf '%s\n' "$SENTINELS" | {{
    seen=0
    down=0
    while read -r s_host s_port; do
      [ -n "$s_host" ] || continue
      flags=$(sentinel_cli --raw -h "$s_host" -p "$s_port" SENTINEL MASTER "$MASTER_SET" | sed -n '/^flags$/{{n;p;q;}}')
      [ -n "$flags" ] || continue
      seen=$((seen + 1))
      case ",$flags," in *,failover_in_progress,*) echo failover; exit 0 ;; esac
      case ",$flags," in *,s_down,*|*,o_down,*) down=$((down + 1)) ;; esac
    done
    if [ "$seen" -gt 0 ] && [ "$down" -eq "$seen" ]; then echo down; else echo up; fi
  }}
}}

# The most replicas any Sentinel knows for the master set.
known_replicas() {{
  printf '%s\n' "$SENTINELS" | while read -r s_host s_port; do
    [ -n "$s_host" ] || continue
    n=$(sentinel_cli --raw -h "$s_host" -p "$s_port" SENTINEL MASTER "$MASTER_SET" | sed -n '/^num-slaves$/{{n;p;q;}}')
    case "$n" in ''|*[!0-9]*) ;; *) echo "$n" ;; esac
  done | sort -n | tail -n 1
}}

master=""
round=0
while [ "$round" -lt {ask_rounds} ]; do
  master=$(sentinel_master)
  [ -n "$master" ] && break
  round=$((round + 1))
  sleep 2
done
if [ -z "$master" ]; then
  log "no Sentinel answered: waiting for the operator to choose a master"
  start "$WAITING_MASTER_HOST $REDIS_PORT"
fi
set -- $master
if ! is_me "$1" "$2"; then
  start "$1 $2"
fi

known=$(known_replicas)
if [ "${{known:-0}}" -eq 0 ]; then
  # The Sentinels name this Pod and know no replica: first creation, nothing to hand over to.
  start master
fi

# Restart safety: the Sentinels still name this Pod master, but it may have come back empty.
# Serving as master now would make the replicas resync from it and lose everything, so hand over.
# Not at once: a Sentinel whose last INFO of a replica predates that Pod's recreation (when it
# was master) turns a replica promoted now straight back, and the failover hangs until its
# timeout. Once every answering Sentinel has marked this Pod down, each has polled the replicas
# every second since their links dropped, so none holds a stale role. The Sentinels then fail
# over on their own (o_down); only if none has started after a moment is one asked, then every
# 2 s another one, never while a failover is in progress (a second would raise the epoch twice).
log "the Sentinels still name this Pod master ($known replicas known): waiting until they see it down"
waited=0
down_for=0
asked=0
while [ "$waited" -lt {failover_halves} ]; do
  master=$(sentinel_master)
  if [ -n "$master" ]; then
    set -- $master
    if ! is_me "$1" "$2"; then start "$1 $2"; fi
  fi
  case "$(sentinels_judgement)" in
    down)
      down_for=$((down_for + 1))
      if [ "$down_for" -ge {own_failover_halves} ] && [ $(((down_for - {own_failover_halves}) % {reask_halves})) -eq 0 ]; then
        log "the Sentinels see this Pod down and have not failed over: asking"
        request_failover "$asked"
        asked=$((asked + 1))
      fi ;;
    failover) down_for=0 ;;
  esac
  sleep 0.5
  waited=$((waited + 1))
done
log "no failover after {failover_wait}s: waiting for the operator to choose a master"
start "$WAITING_MASTER_HOST $REDIS_PORT"
"#,
        bootstrap_dir = sh_quote(&r.layout.bootstrap_dir),
        replicas_key = BOOTSTRAP_REPLICAS_KEY,
        max_lag = MIN_REPLICAS_MAX_LAG_SECONDS,
        password = ENV_PASSWORD,
        ask_rounds = ASK_SENTINEL_ROUNDS,
        failover_wait = FAILOVER_WAIT_SECONDS,
        failover_halves = FAILOVER_WAIT_SECONDS * 2,
        own_failover_halves = OWN_FAILOVER_HALF_SECONDS,
        reask_halves = REASK_HALF_SECONDS,
    );
    script
}

/// Redis readiness: a master when it answers as master; a replica when its link is up and it is
/// not syncing.
pub fn redis_ready_script(r: &Rendering) -> String {
    let mut script = prelude(r, "Redis readiness", &r.redis_announce);
    script.push_str(
        r#"info=$(redis_cli -h 127.0.0.1 -p "$REDIS_PORT" INFO replication)
field() { printf '%s\n' "$info" | sed -n "s/^$1://p"; }
case "$(field role)" in
  master) exit 0 ;;
  slave)
    if [ "$(field master_link_status)" = up ] && [ "$(field master_sync_in_progress)" = 0 ]; then exit 0; fi
    echo "replica of $(field master_host): link $(field master_link_status), syncing $(field master_sync_in_progress)"
    exit 1 ;;
  *) echo "Redis does not answer"; exit 1 ;;
esac
"#,
    );
    script
}

/// The Redis container's `preStop`: a master with replicas pauses writes and has the Sentinels
/// fail over before the process stops, so a planned shutdown loses no acknowledged write and the
/// outage is the handover, not the Sentinels' down-after.
pub fn redis_prestop_script(r: &Rendering) -> String {
    let mut script = prelude(r, "hand the master role over before stopping", &r.redis_announce);
    let _ = write!(
        script,
        r#"info=$(redis_cli -h 127.0.0.1 -p "$REDIS_PORT" INFO replication)
field() {{ printf '%s\n' "$info" | sed -n "s/^$1://p"; }}
[ "$(field role)" = master ] || exit 0
connected=$(field connected_slaves)
if [ "${{connected:-0}}" -eq 0 ]; then
  log "no replica connected: nothing to hand over to"
  exit 0
fi
# A master the Sentinels no longer name (left by a planned failover, not yet demoted) has nothing
# to hand over: asking would fail over the new master.
named=$(sentinel_master)
if [ -n "$named" ]; then
  set -- $named
  if ! is_me "$1" "$2"; then log "the Sentinels name $1:$2: nothing to hand over"; exit 0; fi
fi
# Writes wait (rather than land on a master about to stop) until the handover is done.
redis_cli -h 127.0.0.1 -p "$REDIS_PORT" CLIENT PAUSE {pause} WRITE >/dev/null
requested=no
request_failover && requested=yes
waited=0
while [ "$waited" -lt {wait} ]; do
  sleep {poll}
  waited=$((waited + 1))
  master=$(sentinel_master)
  if [ -n "$master" ]; then
    set -- $master
    if ! is_me "$1" "$2"; then log "handed over to $1:$2"; exit 0; fi
  fi
  # Refused (the Sentinels have not learnt a replica yet, or another failover runs): ask again
  # each second rather than leave it to the Sentinels' down-after once the process is gone.
  if [ "$requested" = no ] && [ $((waited % {reask})) -eq 0 ]; then
    request_failover && requested=yes
  fi
done
log "the Sentinels did not fail over in time"
exit 0
"#,
        pause = PRESTOP_PAUSE_MS,
        wait = PRESTOP_POLLS,
        poll = format_args!("{}.{}", PRESTOP_POLL_MS / 1000, PRESTOP_POLL_MS % 1000 / 100),
        reask = PRESTOP_REASK_POLLS,
    );
    script
}

/// How many rounds a new Sentinel asks its peers before seeding from ordinal 0.
const SEED_ASK_ROUNDS: u32 = 5;
/// How long a new Sentinel waits for the master's name to resolve before starting anyway.
const RESOLVE_WAIT_SECONDS: u32 = 60;

/// The Sentinel init container: seeds sentinel.conf onto the writable volume, monitoring the
/// master the other Sentinels name (ordinal 0 when none answers: first creation).
pub fn sentinel_init_script(r: &Rendering) -> String {
    let mut script = prelude(r, "seed sentinel.conf", &r.sentinel_announce);
    let _ = write!(
        script,
        r#"CONF="$RUNTIME_DIR/sentinel.conf"
BOOTSTRAP_DIR={bootstrap_dir}
REDIS_HOST_SUFFIX={suffix}
if [ -s "$CONF" ]; then
  log "keeping $CONF, which Sentinel maintains"
  exit 0
fi
master=""
round=0
while [ "$round" -lt {rounds} ]; do
  master=$(sentinel_master)
  [ -n "$master" ] && break
  round=$((round + 1))
  sleep 1
done
# No peer answered: a first creation, or every Sentinel restarted at once (their state is on
# an emptyDir). Then the last master the operator verified holds the newest data (the Redis Pods
# may have come back from their claims): seed it, not blindly ordinal 0, whose replica data
# would become the master's and the others' would be resynced away.
recorded=$(cat "$BOOTSTRAP_DIR/{bootstrap_key}" 2>/dev/null)
case "$recorded" in
  "$MASTER_SET"-[0-9]|"$MASTER_SET"-[0-9][0-9]) recorded_master="$recorded$REDIS_HOST_SUFFIX $REDIS_PORT" ;;
  *) recorded_master="" ;;
esac
if [ -z "$master" ] && [ -n "$recorded_master" ]; then
  master=$recorded_master
  log "no other Sentinel answered: monitoring $recorded, the last master the operator verified"
elif [ -z "$master" ]; then
  master={bootstrap}
  log "no other Sentinel answered: monitoring the bootstrap master $master"
else
  log "the other Sentinels name $master"
fi
set -- $master
# Sentinel exits when a monitored hostname does not resolve; a Pod's DNS record appears shortly
# after its Pod (publishNotReadyAddresses), so wait for it, bounded.
waited=0
while [ "$waited" -lt {resolve_wait} ] && ! getent hosts "$1" >/dev/null 2>&1; do
  waited=$((waited + 1))
  sleep 1
done
umask 077
sed -e "s|@ANNOUNCE_HOST@|$ANNOUNCE_HOST|" -e "s|@MASTER_HOST@|$1|" -e "s|@MASTER_PORT@|$2|" \
  "$CONFIG_DIR/sentinel.conf" > "$CONF.tmp" || exit 1
if [ -n "${{{password}:-}}" ]; then
  # The password Redis takes, required of every client and peer Sentinel too: without it
  # anyone who reaches the Pod could fail the set over or point the Sentinels elsewhere.
  quoted=$(conf_quote "${password}")
  {{
    echo "sentinel auth-pass $MASTER_SET $quoted"
    echo "requirepass $quoted"
    echo "sentinel sentinel-pass $quoted"
  }} >> "$CONF.tmp" || exit 1
fi
mv "$CONF.tmp" "$CONF"
"#,
        rounds = SEED_ASK_ROUNDS,
        resolve_wait = RESOLVE_WAIT_SECONDS,
        bootstrap = sh_quote(&format!("{} {}", r.bootstrap_master.host, r.bootstrap_master.port)),
        bootstrap_dir = sh_quote(&r.layout.bootstrap_dir),
        bootstrap_key = BOOTSTRAP_MASTER_KEY,
        suffix = sh_quote(&r.redis_host_suffix),
        password = ENV_PASSWORD,
    );
    script
}

/// Sentinel readiness: it answers and knows a master for the set.
pub fn sentinel_ready_script(r: &Rendering) -> String {
    let mut script = prelude(r, "Sentinel readiness", &r.sentinel_announce);
    script.push_str(
        r#"reply=$(sentinel_cli --raw -h 127.0.0.1 -p "$SENTINEL_PORT" SENTINEL get-master-addr-by-name "$MASTER_SET" | tr '\n' ' ')
set -- $reply
[ $# -eq 2 ] && exit 0
echo "Sentinel knows no master for $MASTER_SET"
exit 1
"#,
    );
    script
}

/// The Redis ConfigMap's data.
pub fn redis_config_data(r: &Rendering) -> Result<BTreeMap<String, String>, ConfigError> {
    Ok(BTreeMap::from([
        (REDIS_CONF.to_owned(), redis_conf(r)?),
        (REDIS_START.to_owned(), redis_start_script(r)),
        (REDIS_READY.to_owned(), redis_ready_script(r)),
        (REDIS_PRESTOP.to_owned(), redis_prestop_script(r)),
    ]))
}

/// The Sentinel ConfigMap's data.
pub fn sentinel_config_data(r: &Rendering) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SENTINEL_CONF.to_owned(), sentinel_conf(r)),
        (SENTINEL_INIT.to_owned(), sentinel_init_script(r)),
        (SENTINEL_READY.to_owned(), sentinel_ready_script(r)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rha(yaml_spec: &str) -> RedisHA {
        serde_yaml::from_str(&format!(
            "apiVersion: cache.capstan.dev/v1alpha1\nkind: RedisHA\nmetadata: {{name: cache, namespace: apps}}\nspec: {yaml_spec}\n"
        ))
        .expect("valid RedisHA")
    }

    fn rendering(yaml_spec: &str) -> Rendering {
        Rendering::for_redis_ha(&rha(yaml_spec), "cache", "apps", "cluster.local")
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn redis_conf_owns_addresses_and_requires_a_replica_when_there_are_several() {
        let conf = redis_conf(&rendering("{}")).expect("renders");
        let lines = lines(&conf);
        for expected in [
            "bind * -::*",
            "port 6379",
            "protected-mode no",
            "dir /data",
            "appendonly no",
        ] {
            assert!(lines.contains(&expected), "{expected:?} in\n{conf}");
        }
        let directives = lines.join("\n");
        assert!(
            !directives.contains("replicaof"),
            "the role is chosen at start, not in the ConfigMap"
        );
        assert!(!directives.contains("requirepass") && !directives.contains("masterauth"));
    }

    #[test]
    fn the_redis_count_is_no_part_of_the_rendered_files_and_storage_turns_on_the_aof() {
        let three = redis_config_data(&rendering("{replicas: 3}")).expect("renders");
        let one = redis_config_data(&rendering("{replicas: 1}")).expect("renders");
        assert_eq!(three, one, "a scale changes no file, so no template and no roll");
        let conf = redis_conf(&rendering("{replicas: 1, storage: {size: 1Gi}}")).expect("renders");
        assert!(lines(&conf).contains(&"appendonly yes"));
        assert!(
            !conf.contains("min-replicas-to-write"),
            "added at start from the record"
        );
    }

    #[test]
    fn writes_need_a_replica_unless_the_record_says_one_redis() {
        let script = redis_start_script(&rendering("{}"));
        let start = script.find("start() {").expect("defined");
        let end = start + script[start..].find("\n}\n").expect("ends") + 3;
        let effective = |record: Option<&str>| {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("redis.conf"), "port 6379\n").expect("conf");
            if let Some(count) = record {
                std::fs::write(dir.path().join(BOOTSTRAP_REPLICAS_KEY), count).expect("record");
            }
            let d = dir.path().display();
            let program = format!(
                "CONFIG_DIR='{d}'\nRUNTIME_DIR='{d}'\nBOOTSTRAP_DIR='{d}'\nRUNTIME_CONF='{d}/effective.conf'\nANNOUNCE_HOST=h\nREDIS_PORT=6379\n\
                 log() {{ :; }}\nconf_quote() {{ printf '%s' \"$1\"; }}\n{}start master\n",
                script[start..end].replace("exec redis-server \"$RUNTIME_CONF\"", ":")
            );
            let status = std::process::Command::new("/bin/sh")
                .args(["-c", &program])
                .status()
                .expect("/bin/sh runs");
            assert!(status.success());
            std::fs::read_to_string(dir.path().join("effective.conf")).expect("written")
        };
        let one = effective(Some("1"));
        assert!(
            one.contains("min-replicas-to-write 0") && !one.contains("max-lag"),
            "{one}"
        );
        for record in [Some("3"), None, Some("junk")] {
            let conf = effective(record);
            assert!(
                conf.contains("min-replicas-to-write 1\nmin-replicas-max-lag 5"),
                "{record:?}: {conf}"
            );
        }
    }

    #[test]
    fn extra_config_is_appended_after_the_operators_directives() {
        let conf = redis_conf(&rendering(
            "{config: {maxmemory: 100mb, maxmemory-policy: allkeys-lru}}",
        ))
        .expect("renders");
        let lines = lines(&conf);
        let port = lines.iter().position(|l| *l == "port 6379").expect("port");
        let maxmemory = lines.iter().position(|l| *l == "maxmemory 100mb").expect("maxmemory");
        assert!(port < maxmemory);
        assert!(lines.contains(&"maxmemory-policy allkeys-lru"));
    }

    #[test]
    fn owned_directives_are_refused_with_their_name() {
        for directive in ["bind", "port", "replicaof", "slaveof", "dir", "requirepass", "Include"] {
            let config = BTreeMap::from([(directive.to_owned(), "x".to_owned())]);
            assert_eq!(
                check_extra_config(&config),
                Err(ConfigError::OwnedDirective(directive.to_owned()))
            );
        }
        let config = BTreeMap::from([("rename-command".to_owned(), "CONFIG \"\"".to_owned())]);
        let error = check_extra_config(&config).expect_err("owned");
        assert!(error.to_string().contains("spec.config.rename-command"), "{error}");
        assert!(error.to_string().contains("operator sets this directive"), "{error}");
    }

    #[test]
    fn values_that_break_replication_or_failover_are_refused_with_why() {
        for directive in ["replica-priority", "slave-priority"] {
            let config = BTreeMap::from([(directive.to_owned(), "0".to_owned())]);
            assert_eq!(
                check_extra_config(&config),
                Err(ConfigError::OwnedDirective(directive.to_owned())),
                "the operator sets priorities for planned failovers"
            );
        }
        for (name, value, why) in [
            ("replica-read-only", "no", "writable replicas"),
            ("slave-read-only", "NO", "writable replicas"),
            ("maxclients", "10", "at least 64"),
            ("maxclients", "many", "at least 64"),
        ] {
            let config = BTreeMap::from([(name.to_owned(), value.to_owned())]);
            let error = check_extra_config(&config).expect_err("refused");
            assert!(
                matches!(&error, ConfigError::BreaksFailover { name: n, .. } if n == name),
                "{error}"
            );
            assert!(error.to_string().contains(why), "{error}");
        }
        for (name, value) in [
            ("replica-read-only", "yes"),
            ("maxclients", "10000"),
            ("maxmemory", "64mb"),
        ] {
            let config = BTreeMap::from([(name.to_owned(), value.to_owned())]);
            assert_eq!(check_extra_config(&config), Ok(()), "{name} {value}");
        }
    }

    #[test]
    fn a_value_cannot_smuggle_in_another_directive() {
        let config = BTreeMap::from([("maxmemory".to_owned(), "1mb\nreplicaof evil 6379".to_owned())]);
        assert_eq!(
            check_extra_config(&config),
            Err(ConfigError::InvalidValue("maxmemory".into()))
        );
        let config = BTreeMap::from([("max memory".to_owned(), "1mb".to_owned())]);
        assert_eq!(
            check_extra_config(&config),
            Err(ConfigError::InvalidName("max memory".into()))
        );
        let mut r = rendering("{}");
        r.extra_config = BTreeMap::from([("port".to_owned(), "7000".to_owned())]);
        assert_eq!(redis_conf(&r), Err(ConfigError::OwnedDirective("port".into())));
    }

    #[test]
    fn passwords_must_survive_sentinels_config_rewrite() {
        assert_eq!(
            check_password(b"s3cret-with_symbols!@#$%^&*()=+[]{}<>?/.,;:~`|"),
            Ok(())
        );
        assert_eq!(check_password(b"with space"), Err(ConfigError::InvalidPassword));
        assert_eq!(check_password(b"with\"quote"), Err(ConfigError::InvalidPassword));
        assert_eq!(check_password(b"with'quote"), Err(ConfigError::InvalidPassword));
        assert_eq!(check_password(b"back\\slash"), Err(ConfigError::InvalidPassword));
        assert_eq!(check_password(b"pw\n"), Err(ConfigError::InvalidPassword));
        assert_eq!(check_password(b""), Err(ConfigError::InvalidPassword));
        assert_eq!(check_password(&[0xff, 0xfe]), Err(ConfigError::InvalidPassword));
    }

    #[test]
    fn sentinel_conf_monitors_by_hostname_with_bounded_timings() {
        let conf = sentinel_conf(&rendering("{sentinel: {replicas: 5}}"));
        let lines = lines(&conf);
        for expected in [
            "port 26379",
            "dir /run/redis-ha",
            "sentinel resolve-hostnames yes",
            "sentinel announce-hostnames yes",
            "sentinel announce-ip @ANNOUNCE_HOST@",
            "sentinel monitor cache @MASTER_HOST@ @MASTER_PORT@ 3",
            "sentinel down-after-milliseconds cache 4000",
            "sentinel failover-timeout cache 20000",
            "sentinel parallel-syncs cache 1",
        ] {
            assert!(lines.contains(&expected), "{expected:?} in\n{conf}");
        }
        let resolve = lines
            .iter()
            .position(|l| l.contains("resolve-hostnames"))
            .expect("resolve");
        let monitor = lines
            .iter()
            .position(|l| l.contains("sentinel monitor"))
            .expect("monitor");
        assert!(
            resolve < monitor,
            "a hostname in `monitor` needs resolve-hostnames first"
        );
        let timings = SentinelTimings::default();
        assert!((3_000..=5_000).contains(&timings.down_after_ms));
        assert!(timings.failover_timeout_ms <= 60_000);
    }

    #[test]
    fn scripts_use_stable_fqdns_and_never_hold_the_password() {
        let r = rendering("{auth: {secretName: redis-auth}}");
        assert_eq!(
            r.bootstrap_master,
            Endpoint::new("cache-0.cache-headless.apps.svc.cluster.local", 6379)
        );
        assert_eq!(
            r.sentinels[2],
            Endpoint::new("cache-sentinel-2.cache-sentinel-headless.apps.svc.cluster.local", 26379)
        );
        let start = redis_start_script(&r);
        assert!(start.contains(r#"ANNOUNCE_HOST="${POD_NAME}.cache-headless.apps.svc.cluster.local""#));
        assert!(start.contains("cache-sentinel-1.cache-sentinel-headless.apps.svc.cluster.local 26379"));
        assert!(start.contains(r#"echo "replica-announce-ip $ANNOUNCE_HOST""#));
        assert!(
            start.contains("${REDIS_PASSWORD:-}"),
            "the password comes from the environment"
        );
        let init = sentinel_init_script(&r);
        assert!(init.contains(r#"ANNOUNCE_HOST="${POD_NAME}.cache-sentinel-headless.apps.svc.cluster.local""#));
        assert!(init.contains("'cache-0.cache-headless.apps.svc.cluster.local 6379'"));
        for line in ["requirepass $quoted", "sentinel sentinel-pass $quoted"] {
            assert!(init.contains(line), "the Sentinel requires the password: {line}");
        }
        assert!(
            !start.contains("env -u"),
            "the scripts send the password to the Sentinels"
        );
        let domain = Rendering::for_redis_ha(&rha("{}"), "cache", "apps", "corp.example");
        assert!(redis_start_script(&domain).contains("cache-headless.apps.svc.corp.example"));
    }

    #[test]
    fn the_start_script_hands_over_instead_of_serving_as_a_returning_master() {
        let script = redis_start_script(&rendering("{}"));
        let failover = script.find("request_failover \"$asked\"").expect("asks for a failover");
        let named_me = script
            .find("if ! is_me \"$1\" \"$2\"; then\n  start \"$1 $2\"")
            .expect("replica path");
        assert!(named_me < failover);
        assert!(script.contains("SENTINEL FAILOVER"));
        assert!(script.contains("WAITING_MASTER_HOST='capstan-waiting-for-operator.invalid'"));
        assert!(!script.contains("replicaof no one"), "never elects itself");
    }

    /// Runs the start script's shell function `name` as `call`, with `sentinel_cli` stubbed:
    /// each Sentinel host `s<i>` answers `replies[i]` to every command.
    fn run_start_function(name: &str, call: &str, replies: &[&str]) -> String {
        let script = redis_start_script(&rendering("{}"));
        let function = |f: &str| {
            let start = script.find(&format!("{f}() {{")).expect("defined");
            let end = start + script[start..].find("\n}\n").expect("ends") + 3;
            script[start..end].to_owned()
        };
        let sentinels: Vec<String> = (0..replies.len()).map(|i| format!("s{i} 26379")).collect();
        let cases: String = replies
            .iter()
            .enumerate()
            .map(|(i, reply)| format!("s{i}) printf '{reply}' ;; "))
            .collect();
        let program = format!(
            "SENTINELS='{}'\nMASTER_SET=m\nlog() {{ :; }}\nsentinel_cli() {{ case \"$3\" in {cases} esac; }}\n{}{call}\n",
            sentinels.join("\n"),
            function(name),
        );
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &program])
            .output()
            .expect("/bin/sh runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    #[test]
    fn a_returning_master_asks_only_once_every_answering_sentinel_sees_it_down() {
        let flags = |f: &str| format!("name\\nm\\nflags\\n{f}\\nnum-slaves\\n2\\n");
        let judge = |replies: &[&str]| run_start_function("sentinels_judgement", "sentinels_judgement", replies);
        let (up, down, odown, failing) = (
            flags("master"),
            flags("master,s_down"),
            flags("master,s_down,o_down"),
            flags("master,s_down,o_down,failover_in_progress"),
        );
        assert_eq!(judge(&[&up, &up, &up]), "up");
        assert_eq!(
            judge(&[&down, &up, &odown]),
            "up",
            "one Sentinel still sees it: no verdict"
        );
        assert_eq!(judge(&[&down, &odown, &down]), "down");
        assert_eq!(
            judge(&[&down, "", &odown]),
            "down",
            "a Sentinel that does not answer has no say"
        );
        assert_eq!(
            judge(&[&down, &failing, &up]),
            "failover",
            "the Sentinels fail over on their own"
        );
        assert_eq!(judge(&["", "", ""]), "up", "nobody answering is no reason to ask");
        let script = redis_start_script(&rendering("{}"));
        let waiting = script.find("case \"$(sentinels_judgement)\" in").expect("judged");
        let asking = script.find("request_failover \"$asked\"").expect("asks");
        assert!(waiting < asking, "the request comes under the judgement");
    }

    #[test]
    fn a_repeated_failover_request_goes_through_another_sentinel_first() {
        let script = redis_start_script(&rendering("{}"));
        let start = script.find("request_failover() {").expect("defined");
        let end = start + script[start..].find("\n}\n").expect("ends") + 3;
        let first_asked = |skip: usize| {
            let program = format!(
                "SENTINELS='s0 26379\ns1 26379\ns2 26379'\nMASTER_SET=m\nlog() {{ :; }}\n\
                 sentinel_cli() {{ echo \"$2\" >&2; }}\n{}request_failover {skip}\n",
                &script[start..end]
            );
            let output = std::process::Command::new("/bin/sh")
                .args(["-c", &program])
                .output()
                .expect("/bin/sh runs");
            String::from_utf8_lossy(&output.stderr).to_string()
        };
        // The stub answers nothing (no OK), so every Sentinel is asked, in rotated order.
        assert_eq!(
            run_order(&first_asked(0)),
            ["s0", "s1", "s2"].map(String::from).to_vec()
        );
        assert_eq!(
            run_order(&first_asked(1)),
            ["s1", "s2", "s0"].map(String::from).to_vec()
        );
        assert_eq!(
            run_order(&first_asked(2)),
            ["s2", "s0", "s1"].map(String::from).to_vec()
        );
        assert_eq!(
            run_order(&first_asked(4)),
            ["s1", "s2", "s0"].map(String::from).to_vec()
        );
    }

    fn run_order(out: &str) -> Vec<String> {
        out.lines().map(str::to_owned).collect()
    }

    #[test]
    fn sentinels_that_all_restart_seed_the_last_master_the_operator_verified() {
        let r = rendering("{}");
        let script = sentinel_init_script(&r);
        let start = script.find("recorded=$(cat").expect("reads the record");
        let end = start + script[start..].find("\nset -- $master\n").expect("then uses it");
        let choose = |recorded: Option<&str>, peers_name: &str| {
            let dir = tempfile::tempdir().expect("temp dir");
            if let Some(recorded) = recorded {
                std::fs::write(dir.path().join(BOOTSTRAP_MASTER_KEY), recorded).expect("record");
            }
            let program = format!(
                "MASTER_SET=cache\nREDIS_PORT=6379\nBOOTSTRAP_DIR='{}'\nREDIS_HOST_SUFFIX={}\nlog() {{ :; }}\nmaster='{peers_name}'\n{}\necho \"$master\"\n",
                dir.path().display(),
                sh_quote(&r.redis_host_suffix),
                &script[start..end]
            );
            let output = std::process::Command::new("/bin/sh")
                .args(["-c", &program])
                .output()
                .expect("/bin/sh runs");
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        };
        let host = |pod: &str| format!("{pod}.cache-headless.apps.svc.cluster.local 6379");
        assert_eq!(choose(Some("cache-2"), ""), host("cache-2"), "the recorded master");
        assert_eq!(choose(None, ""), host("cache-0"), "first creation: ordinal 0");
        assert_eq!(
            choose(Some("cache-2"), "peer 6379"),
            "peer 6379",
            "a peer that answers wins"
        );
        for hostile in ["other-1", "cache-x", "cache-1; reboot", "cache-1 evil.example 6379", ""] {
            assert_eq!(
                choose(Some(hostile), ""),
                host("cache-0"),
                "{hostile:?} is not a Pod of this set"
            );
        }
    }

    #[test]
    fn the_prestop_hook_looks_for_the_handover_often_and_within_the_pause() {
        let script = redis_prestop_script(&rendering("{}"));
        assert!(script.contains("CLIENT PAUSE 15000 WRITE"), "{script}");
        assert!(
            script.contains("while [ \"$waited\" -lt 75 ]; do\n  sleep 0.2\n"),
            "{script}"
        );
        assert!(script.contains("$((waited % 5))"), "asks again each second: {script}");
    }

    #[test]
    fn every_redis_cli_call_is_bounded_by_timeout() {
        let r = rendering("{}");
        for script in [
            redis_start_script(&r),
            redis_ready_script(&r),
            redis_prestop_script(&r),
            sentinel_init_script(&r),
            sentinel_ready_script(&r),
        ] {
            for line in script
                .lines()
                .filter(|l| l.contains("redis-cli ") && !l.trim_start().starts_with('#'))
            {
                assert!(line.contains("timeout 3 redis-cli"), "unbounded call: {line}");
            }
        }
    }

    #[test]
    fn every_script_parses_with_bin_sh() {
        let r = rendering("{auth: {secretName: redis-auth}}");
        let scripts = redis_config_data(&r)
            .expect("renders")
            .into_iter()
            .chain(sentinel_config_data(&r))
            .filter(|(key, _)| key.ends_with(".sh"));
        let mut checked = 0;
        for (key, script) in scripts {
            let output = std::process::Command::new("/bin/sh")
                .args(["-n", "-c", &script])
                .output()
                .expect("/bin/sh runs");
            assert!(
                output.status.success(),
                "{key}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
        assert_eq!(checked, 5);
    }

    #[test]
    fn shell_quoting_survives_single_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }
}
