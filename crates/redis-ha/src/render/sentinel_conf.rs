//! sentinel.conf as stored in the Sentinel ConfigMap.
use crate::config::Rendering;

/// sentinel.conf as stored in the ConfigMap: `@ANNOUNCE_HOST@`, `@MASTER_HOST@` and
/// `@MASTER_PORT@` are filled in by sentinel-init.sh on the writable copy Sentinel rewrites.
pub(crate) fn sentinel_conf(r: &Rendering) -> String {
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
