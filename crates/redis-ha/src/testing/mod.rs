//! Tools for tests and the bench, behind the `testing` feature so the shipped manager does not
//! compile them: a watch on a RedisHA converging as a client sees it from outside, a probe that
//! writes through its master Service, and the healer's pieces that tests drive directly against
//! real Redis and Sentinel processes.
mod convergence;
mod write_probe;

pub use convergence::{Converged, ConvergenceWatch, pod_ip};
pub use write_probe::{ProbeLog, Route, WriteProbe, count_existing, write_acknowledged};

/// The healer's decisions, roll planning and pace, as the tests and the bench use them.
pub mod healer {
    pub use crate::healer::{
        Action, PASS_INTERVAL, Plan, Role, Step, Survey,
        decide::{decide, newest_epoch},
        members::REVISION_LABEL,
        rollout_step,
    };
}

/// The healer's Redis and Sentinel I/O: connections, the commands, reading the members, carrying
/// out an action, password rotation and the planned failover.
pub mod redis_io {
    pub use crate::healer::redis::{
        Cluster, RedisMember, SentinelMember, Timeouts, adopt_password, adopt_sentinel_password,
        commands::{
            config_set, info_replication, ping, replicaof, sentinel_failover, sentinel_master, sentinel_master_address,
            sentinel_monitor, sentinel_remonitor, sentinel_replicas, sentinel_sentinels, sentinel_set, sentinel_view,
        },
        conn::{IoError, Target, is_auth_refused},
        failover::{pause_writes, sentinel_sees_priority_zero},
        perform, planned_failover, survey, tell_sentinels_password,
    };
}
