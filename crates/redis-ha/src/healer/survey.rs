//! The survey: what the healer reads of a RedisHA's members in one pass: each Redis's `INFO replication` and each
//! Sentinel's view of the master set.
use crate::config::{Endpoint, SentinelTimings, WAITING_MASTER_HOST};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

impl Role {
    /// The value of [`crate::names::ROLE_LABEL`].
    pub fn label(self) -> &'static str {
        match self {
            Role::Master => crate::names::ROLE_MASTER,
            Role::Replica => crate::names::ROLE_REPLICA,
        }
    }
}

/// What one Redis reports in `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub role: Role,
    /// A replica's configured master (`master_host`/`master_port`).
    pub master: Option<Endpoint>,
    /// `master_link_status:up`.
    pub link_up: bool,
    /// `master_link_down_since_seconds` while the link is down: -1 when it never came up since
    /// this Redis started; None while it is up (or on a master).
    pub link_down_seconds: Option<i64>,
    /// `master_sync_in_progress:1`: its dataset is being replaced.
    pub sync_in_progress: bool,
    /// `master_repl_offset` on a master, `slave_repl_offset` on a replica (0: never synced).
    pub offset: i64,
    /// A replica's `slave_priority` (0: Sentinel never promotes it).
    pub priority: Option<u32>,
    /// A master's `min-replicas-to-write` is on (`INFO` then reports `min_slaves_good_slaves`).
    pub requires_replicas: bool,
    pub connected_replicas: u32,
}

impl Replication {
    /// A replica the start script left waiting for the operator to choose a master.
    pub fn is_waiting_for_operator(&self) -> bool {
        self.master.as_ref().is_some_and(|m| m.host == WAITING_MASTER_HOST)
    }
}

/// One Redis Pod as surveyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisPod {
    pub pod: String,
    pub ordinal: u32,
    /// Its announced address (the Pod FQDN and port), as Sentinels and replicas name it.
    pub address: Endpoint,
    /// The Pod's current `redis.capstan.dev/role` label.
    pub role_label: Option<String>,
    /// None when Redis did not answer.
    pub replication: Option<Replication>,
}

/// One Sentinel's view of the master set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelView {
    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`; None when it does not monitor the set.
    pub master: Option<Endpoint>,
    /// A failover flag in `SENTINEL MASTER`'s flags.
    pub failover_in_progress: bool,
    /// `s_down` or `o_down` in those flags: this Sentinel has not heard from the master it names
    /// for down-after (or it reports itself a replica). A Sentinel without the flag sees a master.
    pub master_down: bool,
    /// `num-slaves`.
    pub known_replicas: u32,
    /// `num-other-sentinels`.
    pub known_sentinels: u32,
    /// `config-epoch`: the epoch of the failover that produced this view. A higher epoch is the
    /// newer configuration, which every Sentinel adopts from the others' hello messages.
    pub config_epoch: u64,
    /// In TILT mode (`INFO sentinel`'s `sentinel_tilt`): after a stall of its own (a blocked
    /// event loop, a clock jump) a Sentinel takes no action for 30 s, failovers included.
    pub tilt: bool,
    /// Its `down-after-milliseconds`, `failover-timeout` and `quorum` for the set, when it
    /// reports them: anyone who can reach a Sentinel can `SENTINEL SET` them.
    pub settings: Option<(SentinelTimings, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelPod {
    pub pod: String,
    /// None when the Sentinel did not answer.
    pub view: Option<SentinelView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    pub redis: Vec<RedisPod>,
    pub sentinels: Vec<SentinelPod>,
    /// Sentinels that must agree (`spec.sentinel.quorum` in force).
    pub quorum: usize,
    /// Sentinel's timings as the operator renders them. A replica's link down for less than
    /// down-after is no evidence that its master is gone; a Sentinel found with others gets them back.
    pub timings: SentinelTimings,
    /// The Redis count the spec wants: the master requires a replica's acknowledgement exactly
    /// when there are several.
    pub desired_replicas: u32,
}
