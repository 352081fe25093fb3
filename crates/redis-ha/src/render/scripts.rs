//! The scripts the Pods run. Each is a static POSIX sh file under `src/scripts/` (so a shell
//! linter reads it as it runs), preceded by a header of `NAME='value'` lines that feeds it its
//! parameters, single-quoted for sh, and by the functions every script shares (`lib.sh`).
use std::fmt::Write as _;

use crate::{
    config::{
        Announce, BOOTSTRAP_MASTER_KEY, BOOTSTRAP_REPLICAS_KEY, ENV_POD_NAME, MIN_REPLICAS_MAX_LAG_SECONDS, Rendering,
        WAITING_MASTER_HOST,
    },
    crd::RedisHA,
};

const LIB: &str = include_str!("../scripts/lib.sh");
const REDIS_START: &str = include_str!("../scripts/redis-start.sh");
const REDIS_READY: &str = include_str!("../scripts/redis-ready.sh");
const REDIS_PRESTOP: &str = include_str!("../scripts/redis-prestop.sh");
const SENTINEL_INIT: &str = include_str!("../scripts/sentinel-init.sh");
const SENTINEL_READY: &str = include_str!("../scripts/sentinel-ready.sh");

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
/// How many rounds a new Sentinel asks its peers before seeding from ordinal 0.
const SEED_ASK_ROUNDS: u32 = 5;
/// How long a new Sentinel waits for the master's name to resolve before starting anyway.
const RESOLVE_WAIT_SECONDS: u32 = 60;

/// Single-quotes a value for sh.
pub(crate) fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// How a script sets `ANNOUNCE_HOST`: the Pod's name (downward API) and its FQDN suffix, or a
/// fixed host.
fn announce_assignment(announce: &Announce) -> String {
    match announce {
        Announce::PodFqdn { suffix } => {
            format!(
                "ANNOUNCE_HOST=\"${{{ENV_POD_NAME}}}\"{}",
                sh_quote(&format!(".{suffix}"))
            )
        }
        Announce::Fixed(host) => format!("ANNOUNCE_HOST={}", sh_quote(host)),
    }
}

/// A rendered script: the header (the variables `lib.sh` needs, then the script's own), the
/// shared functions, the script's body.
fn script(r: &Rendering, purpose: &str, announce: &Announce, own: &[(&str, String)], body: &str) -> String {
    let sentinels: Vec<String> = r.sentinels.iter().map(|s| format!("{} {}", s.host, s.port)).collect();
    let mut out = format!(
        "#!/bin/sh\n# Rendered by capstan for RedisHA {set}: {purpose}\nset -u\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        set = r.master_set,
    );
    let shared = [
        ("MASTER_SET", r.master_set.clone()),
        ("REDIS_PORT", r.redis_port.to_string()),
        ("SENTINELS", sentinels.join("\n")),
    ];
    for (name, value) in shared.iter().chain(own) {
        let _ = writeln!(out, "{name}={}", sh_quote(value));
    }
    let _ = writeln!(out, "{}\n", announce_assignment(announce));
    out.push_str(LIB);
    out.push_str(body);
    out
}

/// The Redis container's command. It never elects itself: it starts as a replica of the master
/// the Sentinels name; if they name this Pod, it has them fail over first (unless there is nobody
/// to hand over to: first creation, or a single instance); if no Sentinel answers it waits for
/// the operator as a replica of [`WAITING_MASTER_HOST`].
pub(crate) fn redis_start_script(r: &Rendering) -> String {
    let own = [
        ("CONFIG_DIR", r.layout.config_dir.clone()),
        ("RUNTIME_DIR", r.layout.runtime_dir.clone()),
        ("BOOTSTRAP_DIR", r.layout.bootstrap_dir.clone()),
        ("BOOTSTRAP_REPLICAS_KEY", BOOTSTRAP_REPLICAS_KEY.to_owned()),
        ("WAITING_MASTER_HOST", WAITING_MASTER_HOST.to_owned()),
        ("MIN_REPLICAS_MAX_LAG", MIN_REPLICAS_MAX_LAG_SECONDS.to_string()),
        ("ASK_SENTINEL_ROUNDS", ASK_SENTINEL_ROUNDS.to_string()),
        ("FAILOVER_WAIT_SECONDS", FAILOVER_WAIT_SECONDS.to_string()),
        ("FAILOVER_WAIT_HALVES", (FAILOVER_WAIT_SECONDS * 2).to_string()),
        ("OWN_FAILOVER_HALVES", OWN_FAILOVER_HALF_SECONDS.to_string()),
        ("REASK_HALVES", REASK_HALF_SECONDS.to_string()),
    ];
    script(
        r,
        "start Redis as the Sentinels' master or its replica",
        &r.redis_announce,
        &own,
        REDIS_START,
    )
}

/// Redis readiness: a master when it answers as master; a replica when its link is up and it is
/// not syncing.
pub(crate) fn redis_ready_script(r: &Rendering) -> String {
    script(r, "Redis readiness", &r.redis_announce, &[], REDIS_READY)
}

/// The Redis container's `preStop`: a master with replicas pauses writes and has the Sentinels
/// fail over before the process stops, so a planned shutdown loses no acknowledged write and the
/// outage is the handover, not the Sentinels' down-after.
pub(crate) fn redis_prestop_script(r: &Rendering) -> String {
    let poll_seconds = format!("{}.{}", PRESTOP_POLL_MS / 1000, PRESTOP_POLL_MS % 1000 / 100);
    let own = [
        ("PRESTOP_PAUSE_MS", PRESTOP_PAUSE_MS.to_string()),
        ("PRESTOP_POLLS", PRESTOP_POLLS.to_string()),
        ("PRESTOP_POLL_SECONDS", poll_seconds),
        ("PRESTOP_REASK_POLLS", PRESTOP_REASK_POLLS.to_string()),
    ];
    script(
        r,
        "hand the master role over before stopping",
        &r.redis_announce,
        &own,
        REDIS_PRESTOP,
    )
}

/// The Sentinel init container: seeds sentinel.conf onto the writable volume, monitoring the
/// master the other Sentinels name (ordinal 0 when none answers: first creation).
pub(crate) fn sentinel_init_script(r: &Rendering) -> String {
    let own = [
        ("CONFIG_DIR", r.layout.config_dir.clone()),
        ("RUNTIME_DIR", r.layout.runtime_dir.clone()),
        ("BOOTSTRAP_DIR", r.layout.bootstrap_dir.clone()),
        ("BOOTSTRAP_MASTER_KEY", BOOTSTRAP_MASTER_KEY.to_owned()),
        (
            "BOOTSTRAP_MASTER",
            format!("{} {}", r.bootstrap_master.host, r.bootstrap_master.port),
        ),
        ("REDIS_HOST_SUFFIX", r.redis_host_suffix.clone()),
        ("SEED_ASK_ROUNDS", SEED_ASK_ROUNDS.to_string()),
        ("RESOLVE_WAIT_SECONDS", RESOLVE_WAIT_SECONDS.to_string()),
    ];
    script(r, "seed sentinel.conf", &r.sentinel_announce, &own, SENTINEL_INIT)
}

/// Sentinel readiness: it answers and knows a master for the set.
pub(crate) fn sentinel_ready_script(r: &Rendering) -> String {
    let own = [("SENTINEL_PORT", r.sentinel_port.to_string())];
    script(r, "Sentinel readiness", &r.sentinel_announce, &own, SENTINEL_READY)
}

/// Every script as rendered for representative RedisHAs (without a password or storage, and
/// with both), named `<case>/<file>`: what a shell linter checks.
pub fn sample_scripts() -> Vec<(String, String)> {
    let cases = [
        ("plain", serde_json::json!({})),
        (
            "auth-storage",
            serde_json::json!({"replicas": 3, "auth": {"secretName": "redis-auth"}, "storage": {"size": "1Gi"}}),
        ),
    ];
    let mut scripts = Vec::new();
    for (case, spec) in cases {
        let rha: RedisHA = serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.capstan.dev/v1alpha1",
            "kind": "RedisHA",
            "metadata": {"name": "cache", "namespace": "apps"},
            "spec": spec,
        }))
        .expect("the sample RedisHA is valid");
        let r = Rendering::for_redis_ha(&rha, "cache", "apps", "cluster.local");
        let data = super::redis_config_data(&r)
            .expect("the sample RedisHA renders")
            .into_iter()
            .chain(super::sentinel_config_data(&r));
        scripts.extend(
            data.filter(|(file, _)| file.ends_with(".sh"))
                .map(|(file, text)| (format!("{case}/{file}"), text)),
        );
    }
    scripts
}
