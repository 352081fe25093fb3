//! redis.conf as stored in the Redis ConfigMap.
use std::fmt::Write as _;

use crate::config::{ConfigError, Rendering, check_extra_config};

/// redis.conf as stored in the ConfigMap (the start script adds the per-Pod lines).
pub(crate) fn redis_conf(r: &Rendering) -> Result<String, ConfigError> {
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
