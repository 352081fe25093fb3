//! Reading and acting on Redis and Sentinel over the `redis` crate (tokio): connections
//! (`conn`), reply parsing (pure), the commands, reading a RedisHA's members, carrying out an
//! action, password rotation and the planned failover.
pub(crate) mod commands;
pub(crate) mod conn;
pub(crate) mod failover;
mod parse;
pub(crate) mod password;
mod perform;
mod survey;

pub use conn::Timeouts;
pub use failover::planned_failover;
pub use password::{adopt_password, adopt_sentinel_password, tell_sentinels_password};
pub use perform::{Performed, perform};
pub use survey::survey;

use crate::config::{Endpoint, SentinelTimings};

/// One Redis Pod to survey: its announced address (how Sentinels and replicas name it) and the
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
