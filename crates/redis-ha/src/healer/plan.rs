//! What the healer decided: the actions to carry out, or why it waits.
use super::survey::Role;
use crate::config::Endpoint;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the Pod's role label (the master and replicas Services select it).
    LabelRole { pod: String, role: Role },
    /// `REPLICAOF master` on a replica following another master (or waiting for the operator).
    Replicate { pod: String, master: Endpoint },
    /// `REPLICAOF master` on a second master: it loses writes the kept master does not have.
    Demote { pod: String, master: Endpoint },
    /// `REPLICAOF NO ONE`.
    Promote { pod: String },
    /// Make a Sentinel monitor the real master (`SENTINEL REMOVE` + `MONITOR` + `SET`).
    SentinelMonitor { sentinel: String, master: Endpoint },
    /// `SENTINEL RESET`: forget stale replicas and Sentinels, rediscover the live ones.
    SentinelReset { sentinel: String },
    /// `SENTINEL SET` the timings and quorum the operator renders on a Sentinel found with others
    /// (a shorter down-after fails over on any stall; a longer one stretches every outage).
    SentinelSettings { sentinel: String },
    /// `CONFIG SET min-replicas-to-write` on the master: 1 (with the max lag) when the spec wants
    /// several Redis, 0 for one alone. Read at start from the record too; this follows a scale
    /// live, since the count is no part of the Pod template.
    RequireReplicas { pod: String, required: bool },
    /// `CONFIG SET replica-priority` back to [`crate::config::REPLICA_PRIORITY`] on a replica a
    /// planned failover made unpromotable (left over if it was abandoned or the operator
    /// restarted in the middle).
    RestorePriority { pod: String },
}

/// Why the healer does nothing this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// A Sentinel reports a failover in progress: never fight Sentinel.
    FailoverInProgress { sentinel: String },
    /// No master answers, but a Sentinel quorum names one that does not answer either: the
    /// Sentinels' failover is due.
    SentinelsToFailOver { named: Endpoint },
    /// No Redis answered.
    NothingReachable,
    /// No master, and every replica is in the middle of a full sync.
    NoCandidate,
    /// No master answers the operator, but something says one is alive (a replica's link to it
    /// is up, or a Sentinel sees it): the operator's view is partial, and promoting would make a
    /// second master whose writes are lost when the first is seen again.
    MasterNotVisible { evidence: String },
}

/// What the healer decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The Pod that is master, or will be once the actions are carried out.
    pub master: Option<String>,
    pub actions: Vec<Action>,
    /// Set when nothing is done, with the reason.
    pub wait: Option<Wait>,
    /// Decisions worth a Warning event (a demotion, a promotion by the operator).
    pub warnings: Vec<String>,
    /// Why the Sentinels could not fail over now, whatever the plan: see [`failover_blocker`].
    pub failover_blocker: Option<String>,
}

impl Plan {
    pub(super) fn waiting(wait: Wait) -> Self {
        Self {
            master: None,
            actions: Vec::new(),
            wait: Some(wait),
            warnings: Vec::new(),
            failover_blocker: None,
        }
    }
}
