//! The healer's decisions, as pure functions of what was observed: each Redis's `INFO
//! replication` and each Sentinel's view. The caller observes ([`crate::redis_io`]), asks
//! [`decide`] and carries out the actions; the rules live here, tested without a process.
//!
//! Rules (issue 13): never act while a Sentinel has a failover in progress; with one master,
//! label roles, re-point stray replicas and fix Sentinels monitoring another master; with several,
//! keep the Sentinel quorum's choice (else the one most Sentinels name, else the highest offset)
//! and demote the others; with none
//! and no quorum to fail over, promote the replica with the highest offset (never an empty one
//! when another holds data); `SENTINEL RESET` only when a Sentinel knows more replicas or
//! Sentinels than exist. Sentinels resolve disagreement by `config-epoch` (a failover's newer
//! configuration wins and spreads by gossip), and so does the healer: a view older than another's
//! is catching up, never a vote against the newer one.
use std::collections::BTreeMap;

use crate::config::{Endpoint, SentinelTimings, WAITING_MASTER_HOST};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

impl Role {
    /// The value of [`crate::build::ROLE_LABEL`].
    pub fn label(self) -> &'static str {
        match self {
            Role::Master => crate::build::ROLE_MASTER,
            Role::Replica => crate::build::ROLE_REPLICA,
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

/// One Redis Pod as observed.
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
pub struct Observation {
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
    fn waiting(wait: Wait) -> Self {
        Self {
            master: None,
            actions: Vec::new(),
            wait: Some(wait),
            warnings: Vec::new(),
            failover_blocker: None,
        }
    }
}

/// The highest `config-epoch` any answering Sentinel reports: one more per failover.
pub fn newest_epoch(observation: &Observation) -> u64 {
    observation
        .sentinels
        .iter()
        .filter_map(|s| s.view.as_ref())
        .map(|v| v.config_epoch)
        .max()
        .unwrap_or(0)
}

/// A Sentinel whose view is older than another's: the newer configuration reaches it by
/// Sentinel's own gossip within seconds, so it never outvotes the newer view (re-pointing it, as
/// any Sentinel naming another master, only hastens what gossip does).
fn is_catching_up(view: &SentinelView, newest: u64) -> bool {
    view.config_epoch < newest
}

/// The master the Sentinels' newest configuration names, if a quorum of answering Sentinels
/// names it — or if it comes from a failover (epoch above 0), which a majority of Sentinels
/// authorized by electing its leader, while the others have not caught up yet.
pub fn quorum_master(observation: &Observation) -> Option<Endpoint> {
    let newest = newest_epoch(observation);
    let mut votes: BTreeMap<&Endpoint, usize> = BTreeMap::new();
    for master in observation
        .sentinels
        .iter()
        .filter_map(|s| s.view.as_ref())
        .filter(|v| !is_catching_up(v, newest))
        .filter_map(|v| v.master.as_ref())
    {
        *votes.entry(master).or_default() += 1;
    }
    let needed = if newest > 0 { 1 } else { observation.quorum.max(1) };
    votes
        .into_iter()
        .filter(|(_, count)| *count >= needed)
        .max_by_key(|(_, count)| *count)
        .map(|(master, _)| master.clone())
}

/// Decides what to do about the observed state.
pub fn decide(observation: &Observation) -> Plan {
    Plan {
        failover_blocker: failover_blocker(observation),
        ..decide_actions(observation)
    }
}

/// Why the Sentinels could not fail over now, or None when they could: a Sentinel learns the
/// replicas from the master's `INFO` and the other Sentinels from their hellos, up to ten
/// seconds after they appear, and until then `SENTINEL FAILOVER` is refused (`NOGOODSLAVE`) and a
/// lost master is not replaced. Every answering Sentinel must know every answering replica and
/// every other answering Sentinel, and none may be in TILT mode.
pub fn failover_blocker(observation: &Observation) -> Option<String> {
    let replicas = observation
        .redis
        .iter()
        .filter(|p| p.replication.as_ref().is_some_and(|r| r.role == Role::Replica))
        .count();
    let answering: Vec<(&str, &SentinelView)> = observation
        .sentinels
        .iter()
        .filter_map(|s| Some((s.pod.as_str(), s.view.as_ref()?)))
        .collect();
    if answering.is_empty() {
        return Some("no Sentinel answers".to_owned());
    }
    let others = answering.len() - 1;
    answering.iter().find_map(|(pod, view)| {
        if view.tilt {
            Some(format!(
                "Sentinel {pod} is in TILT mode (it stalled; it takes no action for 30 s)"
            ))
        } else if (view.known_replicas as usize) < replicas {
            Some(format!(
                "Sentinel {pod} knows {} of {replicas} replicas",
                view.known_replicas
            ))
        } else if (view.known_sentinels as usize) < others {
            Some(format!(
                "Sentinel {pod} knows {} of {others} other Sentinels",
                view.known_sentinels
            ))
        } else {
            None
        }
    })
}

fn decide_actions(observation: &Observation) -> Plan {
    if let Some((sentinel, view)) = observation
        .sentinels
        .iter()
        .filter_map(|s| Some((s, s.view.as_ref()?)))
        .find(|(_, v)| v.failover_in_progress)
    {
        // Never fight Sentinel: no Redis or Sentinel command while it fails over. But once it has
        // promoted a replica, its leader answers that replica as the master (what Sentinel-aware
        // clients switch to); the labels follow the same answer at once, so clients of the master
        // Service are not kept waiting until the other replicas are reconfigured.
        let promoted = view.master.as_ref().and_then(|address| {
            observation
                .redis
                .iter()
                .find(|p| &p.address == address && p.replication.as_ref().is_some_and(|r| r.role == Role::Master))
        });
        return Plan {
            master: promoted.map(|p| p.pod.clone()),
            actions: promoted.map(|p| role_labels(observation, p)).unwrap_or_default(),
            ..Plan::waiting(Wait::FailoverInProgress {
                sentinel: sentinel.pod.clone(),
            })
        };
    }
    let reachable: Vec<(&RedisPod, &Replication)> = observation
        .redis
        .iter()
        .filter_map(|p| p.replication.as_ref().map(|r| (p, r)))
        .collect();
    if reachable.is_empty() {
        return Plan::waiting(Wait::NothingReachable);
    }
    let named = quorum_master(observation);
    let named_pod = |pod: &RedisPod| named.as_ref() == Some(&pod.address);
    let masters: Vec<&(&RedisPod, &Replication)> = reachable.iter().filter(|(_, r)| r.role == Role::Master).collect();
    let mut actions = Vec::new();
    let mut warnings = Vec::new();

    let master: &RedisPod = match masters.as_slice() {
        [] => {
            if let Some(named) = &named {
                let named_answers = reachable.iter().any(|(p, _)| &p.address == named);
                if !named_answers && sentinels_can_fail_over(observation, named) {
                    return Plan::waiting(Wait::SentinelsToFailOver { named: named.clone() });
                }
            }
            if let Some(evidence) = live_master_evidence(observation) {
                return Plan::waiting(Wait::MasterNotVisible { evidence });
            }
            // No master, no evidence of one anywhere, and no Sentinel quorum to fail over (or
            // the quorum names a Redis that is not master, which Sentinel would not fix):
            // promote the replica holding the most data.
            let Some((candidate, replication)) = reachable
                .iter()
                .filter(|(_, r)| !r.sync_in_progress)
                .max_by_key(|(p, r)| (r.offset, named_pod(p), std::cmp::Reverse(p.ordinal)))
            else {
                return Plan::waiting(Wait::NoCandidate);
            };
            warnings.push(format!(
                "no master and no Sentinel quorum to fail over: promoting {} (replication offset {})",
                candidate.pod, replication.offset
            ));
            actions.push(Action::Promote {
                pod: candidate.pod.clone(),
            });
            candidate
        }
        [(only, _)] => only,
        several => {
            // Without a quorum, Sentinels that name one of the masters still outvote the offset:
            // right after a failover only its leader has switched (the others follow within
            // seconds, by hello messages), and the old master, writes paused, may show the higher
            // offset. Keeping it would fight Sentinel.
            let newest = newest_epoch(observation);
            let votes = |pod: &RedisPod| {
                observation
                    .sentinels
                    .iter()
                    .filter_map(|s| s.view.as_ref())
                    .filter(|v| !is_catching_up(v, newest) && v.master.as_ref() == Some(&pod.address))
                    .count()
            };
            let (kept, _) = several
                .iter()
                .copied()
                .find(|(p, _)| named_pod(p))
                .or_else(|| {
                    several
                        .iter()
                        .copied()
                        .max_by_key(|(p, r)| (votes(p), r.offset, std::cmp::Reverse(p.ordinal)))
                })
                .copied()
                .unwrap_or(*several[0]);
            let why = if named_pod(kept) {
                "the Sentinel quorum's choice"
            } else if votes(kept) > 0 {
                "named by the most Sentinels, short of a quorum"
            } else {
                "the highest replication offset"
            };
            for (other, _) in several.iter().copied().filter(|(p, _)| p.pod != kept.pod) {
                warnings.push(format!(
                    "{} masters: keeping {} ({why}), demoting {}",
                    several.len(),
                    kept.pod,
                    other.pod
                ));
                actions.push(Action::Demote {
                    pod: other.pod.clone(),
                    master: kept.address.clone(),
                });
            }
            kept
        }
    };

    // Replicas following anyone else (an old master, the waiting placeholder) follow the master.
    for (pod, replication) in &reachable {
        let demoted = actions
            .iter()
            .any(|a| matches!(a, Action::Demote { pod: p, .. } if p == &pod.pod));
        if pod.pod != master.pod
            && replication.role == Role::Replica
            && !demoted
            && replication.master.as_ref() != Some(&master.address)
        {
            actions.push(Action::Replicate {
                pod: pod.pod.clone(),
                master: master.address.clone(),
            });
        }
    }

    // Outside a failover (this code is not reached during one), a replica kept out of a planned
    // failover is promotable again: a left-over priority 0 would shrink the set Sentinel can
    // fail over to, silently, forever.
    for (pod, replication) in &reachable {
        if pod.pod != master.pod
            && replication
                .priority
                .is_some_and(|p| p != crate::config::REPLICA_PRIORITY)
        {
            actions.push(Action::RestorePriority { pod: pod.pod.clone() });
        }
    }

    if let Some((_, replication)) = reachable.iter().find(|(p, _)| p.pod == master.pod) {
        let want = observation.desired_replicas > 1;
        // Turned on only once a replica is connected: until then it would refuse every write.
        if replication.role == Role::Master
            && replication.requires_replicas != want
            && (!want || replication.connected_replicas > 0)
        {
            actions.push(Action::RequireReplicas {
                pod: master.pod.clone(),
                required: want,
            });
        }
    }

    actions.extend(role_labels(observation, master));

    let mut sentinel_fixed = false;
    for sentinel in &observation.sentinels {
        let Some(view) = &sentinel.view else { continue };
        if view.master.as_ref() != Some(&master.address) {
            sentinel_fixed = true;
            actions.push(Action::SentinelMonitor {
                sentinel: sentinel.pod.clone(),
                master: master.address.clone(),
            });
        }
    }
    let expected = (
        observation.timings,
        u32::try_from(observation.quorum).unwrap_or(u32::MAX),
    );
    for sentinel in &observation.sentinels {
        let Some(view) = &sentinel.view else { continue };
        let monitored_right = view.master.as_ref() == Some(&master.address);
        if monitored_right && view.settings.is_some_and(|found| found != expected) {
            actions.push(Action::SentinelSettings {
                sentinel: sentinel.pod.clone(),
            });
        }
    }
    // A Sentinel that knows more replicas or Sentinels than exist keeps stale entries (scaled
    // down Pods) forever; fewer is only discovery in progress. One reset per pass, and none while
    // other Sentinels are being fixed, so a quorum always remains able to fail over.
    // A reset Sentinel knows no other until their hello messages reach it (seconds): while one is
    // rediscovering, no second reset, or a quorum could be out of reach at once.
    let other_sentinels = observation.sentinels.len().saturating_sub(1);
    let rediscovering = observation
        .sentinels
        .iter()
        .filter_map(|s| s.view.as_ref())
        .any(|v| (v.known_sentinels as usize) < other_sentinels);
    if !sentinel_fixed && !rediscovering {
        let replicas = observation.redis.len().saturating_sub(1);
        if let Some(stale) = observation.sentinels.iter().find(|s| {
            s.view
                .as_ref()
                .is_some_and(|v| v.known_replicas as usize > replicas || v.known_sentinels as usize > other_sentinels)
        }) {
            actions.push(Action::SentinelReset {
                sentinel: stale.pod.clone(),
            });
        }
    }

    Plan {
        master: Some(master.pod.clone()),
        actions,
        wait: None,
        warnings,
        failover_blocker: None,
    }
}

/// What says a master is alive although none answers the operator, or None when nothing does.
/// Evidence is a replica whose link to a Redis the operator cannot reach is up, or down for less
/// than down-after (it may come back; Sentinel has not judged yet either), and an answering
/// Sentinel, not behind the newest configuration, that names such a Redis without flagging it
/// down. A replica never connected since its start (-1) and a link to the waiting placeholder
/// are no evidence: nothing else would ever end the wait.
fn live_master_evidence(observation: &Observation) -> Option<String> {
    let seen: Vec<&Endpoint> = observation
        .redis
        .iter()
        .filter(|p| p.replication.is_some())
        .map(|p| &p.address)
        .collect();
    let unseen = |address: &Endpoint| !seen.contains(&address);
    let down_after = i64::from(observation.timings.down_after_ms / 1000);
    for pod in &observation.redis {
        let Some(replication) = &pod.replication else { continue };
        let Some(master) = replication.master.as_ref().filter(|m| unseen(m)) else {
            continue;
        };
        if replication.is_waiting_for_operator() || replication.role != Role::Replica {
            continue;
        }
        if replication.link_up {
            return Some(format!(
                "{} replicates from {master}, which the operator cannot reach",
                pod.pod
            ));
        }
        if let Some(seconds) = replication.link_down_seconds.filter(|s| (0..down_after).contains(s)) {
            return Some(format!(
                "{} lost its link to {master} only {seconds} s ago (down-after is {down_after} s)",
                pod.pod
            ));
        }
    }
    let newest = newest_epoch(observation);
    observation.sentinels.iter().find_map(|sentinel| {
        let view = sentinel.view.as_ref()?;
        let master = view.master.as_ref().filter(|m| unseen(m))?;
        (!is_catching_up(view, newest) && !view.master_down).then(|| {
            format!(
                "Sentinel {} sees {master} as a live master, which the operator cannot reach",
                sentinel.pod
            )
        })
    })
}

/// Whether the Sentinels that answer could fail over from `named` themselves: enough of them,
/// up to date, name it to reach the quorum and elect a leader (a majority of all Sentinels).
/// Fewer could never replace it, so waiting for them would hold the set without a master.
fn sentinels_can_fail_over(observation: &Observation, named: &Endpoint) -> bool {
    let newest = newest_epoch(observation);
    let naming = observation
        .sentinels
        .iter()
        .filter_map(|s| s.view.as_ref())
        .filter(|v| !is_catching_up(v, newest) && v.master.as_ref() == Some(named))
        .count();
    naming >= observation.quorum.max(observation.sentinels.len() / 2 + 1)
}

/// The label changes that make `master` the only Pod labelled master. Labels follow every Pod,
/// answering or not: an isolated old master still passes its local readiness check, and must not
/// stay behind the master Service.
fn role_labels(observation: &Observation, master: &RedisPod) -> Vec<Action> {
    observation
        .redis
        .iter()
        .filter_map(|pod| {
            let role = if pod.pod == master.pod {
                Role::Master
            } else {
                Role::Replica
            };
            (pod.role_label.as_deref() != Some(role.label())).then(|| Action::LabelRole {
                pod: pod.pod.clone(),
                role,
            })
        })
        .collect()
}

/// A Pod's standing in a roll or scale-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub pod: String,
    pub ordinal: u32,
    /// Its template matches the StatefulSet's current revision.
    pub up_to_date: bool,
    pub ready: bool,
}

/// The next step of a roll or scale-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing left to do: the caller may go on (e.g. lower `replicas`).
    Done,
    /// Wait until every Pod is ready again.
    WaitForReady,
    /// Delete this Pod (the StatefulSet recreates it from the current template).
    DeletePod(String),
    /// A planned `SENTINEL FAILOVER` away from `from`; the `avoid` Pods get `replica-priority 0`
    /// first so Sentinel never promotes them.
    Failover { from: String, avoid: Vec<String> },
}

/// The next step of a roll: outdated replicas first (highest ordinal first, one at a time), then
/// one planned failover to an up-to-date replica, then the old master, which is a replica by then.
/// Stateless, so an operator restarted mid-roll converges without a second failover.
pub fn next_roll_step(pods: &[PodState], master: Option<&str>) -> Step {
    if pods.iter().any(|p| !p.ready) {
        return Step::WaitForReady;
    }
    let is_master = |p: &PodState| Some(p.pod.as_str()) == master;
    if let Some(replica) = pods
        .iter()
        .filter(|p| !p.up_to_date && !is_master(p))
        .max_by_key(|p| p.ordinal)
    {
        return Step::DeletePod(replica.pod.clone());
    }
    match pods.iter().find(|p| is_master(p) && !p.up_to_date) {
        None => Step::Done,
        // Never rolled in place (without storage it would come back empty): the reconcile
        // surges a second Pod to hand over to.
        Some(_) if pods.len() == 1 => Step::WaitForReady,
        Some(old) => Step::Failover {
            from: old.pod.clone(),
            avoid: Vec::new(),
        },
    }
}

/// Before lowering `replicas` to `desired`: the master must not be among the Pods the
/// StatefulSet will remove (ordinals ≥ desired), so fail over to a Pod that stays first.
pub fn next_scale_down_step(pods: &[PodState], master: Option<&str>, desired: u32) -> Step {
    let Some(master_pod) = master.and_then(|m| pods.iter().find(|p| p.pod == m)) else {
        return Step::Done;
    };
    if master_pod.ordinal < desired {
        return Step::Done;
    }
    if pods.iter().any(|p| p.ordinal < desired && !p.ready) {
        return Step::WaitForReady;
    }
    Step::Failover {
        from: master_pod.pod.clone(),
        avoid: pods
            .iter()
            .filter(|p| p.ordinal >= desired && p.pod != master_pod.pod)
            .map(|p| p.pod.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ordinal: u32) -> Endpoint {
        Endpoint::new(format!("cache-{ordinal}.cache-headless.apps.svc.cluster.local"), 6379)
    }

    fn master(ordinal: u32, offset: i64) -> RedisPod {
        RedisPod {
            pod: format!("cache-{ordinal}"),
            ordinal,
            address: addr(ordinal),
            role_label: Some("master".into()),
            replication: Some(Replication {
                role: Role::Master,
                master: None,
                link_up: false,
                link_down_seconds: None,
                sync_in_progress: false,
                offset,
                priority: None,
                requires_replicas: true,
                connected_replicas: 2,
            }),
        }
    }

    fn replica(ordinal: u32, of: u32, offset: i64) -> RedisPod {
        RedisPod {
            pod: format!("cache-{ordinal}"),
            ordinal,
            address: addr(ordinal),
            role_label: Some("replica".into()),
            replication: Some(Replication {
                role: Role::Replica,
                master: Some(addr(of)),
                link_up: true,
                link_down_seconds: None,
                sync_in_progress: false,
                offset,
                priority: Some(100),
                requires_replicas: false,
                connected_replicas: 0,
            }),
        }
    }

    /// A replica whose link to `of` has been down for `seconds`.
    fn cut_off(ordinal: u32, of: u32, offset: i64, seconds: i64) -> RedisPod {
        let mut pod = replica(ordinal, of, offset);
        if let Some(r) = pod.replication.as_mut() {
            r.link_up = false;
            r.link_down_seconds = Some(seconds);
        }
        pod
    }

    fn unreachable(ordinal: u32, label: &str) -> RedisPod {
        RedisPod {
            pod: format!("cache-{ordinal}"),
            ordinal,
            address: addr(ordinal),
            role_label: Some(label.into()),
            replication: None,
        }
    }

    fn sentinel(i: u32, master: Option<u32>) -> SentinelPod {
        SentinelPod {
            pod: format!("cache-sentinel-{i}"),
            view: Some(SentinelView {
                master: master.map(addr),
                failover_in_progress: false,
                master_down: false,
                known_replicas: 2,
                known_sentinels: 2,
                config_epoch: 0,
                tilt: false,
                settings: Some((SentinelTimings::default(), 2)),
            }),
        }
    }

    fn observe(redis: Vec<RedisPod>, sentinels: Vec<SentinelPod>) -> Observation {
        Observation {
            redis,
            sentinels,
            quorum: 2,
            timings: SentinelTimings::default(),
            desired_replicas: 3,
        }
    }

    fn healthy() -> Observation {
        observe(
            vec![master(0, 100), replica(1, 0, 100), replica(2, 0, 100)],
            (0..3).map(|i| sentinel(i, Some(0))).collect(),
        )
    }

    #[test]
    fn a_healthy_set_needs_nothing() {
        let plan = decide(&healthy());
        assert_eq!(plan.master.as_deref(), Some("cache-0"));
        assert_eq!(plan.actions, []);
        assert_eq!(plan.wait, None);
        assert_eq!(plan.failover_blocker, None);
    }

    #[test]
    fn sentinels_that_have_not_learnt_every_replica_and_peer_cannot_fail_over() {
        let mut observed = healthy();
        fn view(o: &mut Observation, i: usize) -> &mut SentinelView {
            o.sentinels[i].view.as_mut().expect("answers")
        }
        view(&mut observed, 1).known_replicas = 1;
        assert_eq!(
            decide(&observed).failover_blocker.as_deref(),
            Some("Sentinel cache-sentinel-1 knows 1 of 2 replicas")
        );
        view(&mut observed, 1).known_replicas = 2;
        view(&mut observed, 2).known_sentinels = 0;
        assert_eq!(
            failover_blocker(&observed).as_deref(),
            Some("Sentinel cache-sentinel-2 knows 0 of 2 other Sentinels")
        );
        view(&mut observed, 2).known_sentinels = 2;
        view(&mut observed, 0).tilt = true;
        assert!(
            failover_blocker(&observed).is_some_and(|why| why.starts_with("Sentinel cache-sentinel-0 is in TILT mode"))
        );
        view(&mut observed, 0).tilt = false;
        // What does not answer is not waited for: a Sentinel cannot know a replica that is down.
        observed.redis[2] = unreachable(2, "replica");
        observed.sentinels[0].view = None;
        view(&mut observed, 1).known_replicas = 1;
        view(&mut observed, 2).known_replicas = 1;
        view(&mut observed, 2).known_sentinels = 1;
        assert_eq!(failover_blocker(&observed), None);
        for sentinel in &mut observed.sentinels {
            sentinel.view = None;
        }
        assert_eq!(failover_blocker(&observed).as_deref(), Some("no Sentinel answers"));
    }

    #[test]
    fn one_master_labels_roles_and_repoints_a_stray_replica() {
        let mut observed = healthy();
        observed.redis[0].role_label = None;
        observed.redis[1].role_label = Some("master".into());
        // cache-2 still follows cache-1 (an old master), and cache-1 answers as replica.
        observed.redis[2] = replica(2, 1, 90);
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-0"));
        assert_eq!(
            plan.actions,
            [
                Action::Replicate {
                    pod: "cache-2".into(),
                    master: addr(0)
                },
                Action::LabelRole {
                    pod: "cache-0".into(),
                    role: Role::Master
                },
                Action::LabelRole {
                    pod: "cache-1".into(),
                    role: Role::Replica
                },
            ]
        );
    }

    #[test]
    fn an_unreachable_old_master_loses_its_master_label() {
        // The network cut: the others failed over to cache-1; cache-0 cannot be reached but its
        // local readiness check still passes, so only the label keeps it out of the master Service.
        let mut observed = observe(
            vec![unreachable(0, "master"), master(1, 200), replica(2, 1, 200)],
            (0..3).map(|i| sentinel(i, Some(1))).collect(),
        );
        observed.redis[1].role_label = Some("replica".into());
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-1"));
        assert!(plan.actions.contains(&Action::LabelRole {
            pod: "cache-0".into(),
            role: Role::Replica
        }));
        assert!(plan.actions.contains(&Action::LabelRole {
            pod: "cache-1".into(),
            role: Role::Master
        }));
    }

    #[test]
    fn a_stale_sentinel_view_is_fixed_to_the_real_master() {
        let mut observed = healthy();
        observed.sentinels[2] = sentinel(2, Some(1));
        let plan = decide(&observed);
        assert_eq!(
            plan.actions,
            [Action::SentinelMonitor {
                sentinel: "cache-sentinel-2".into(),
                master: addr(0)
            }]
        );
    }

    #[test]
    fn several_masters_keep_the_quorums_choice_and_demote_the_rest_with_a_warning() {
        // cache-2 has the higher offset, but the Sentinels agree on cache-0.
        let observed = observe(
            vec![master(0, 100), replica(1, 0, 100), master(2, 500)],
            (0..3).map(|i| sentinel(i, Some(0))).collect(),
        );
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-0"));
        assert_eq!(
            plan.actions,
            [
                Action::Demote {
                    pod: "cache-2".into(),
                    master: addr(0)
                },
                Action::LabelRole {
                    pod: "cache-2".into(),
                    role: Role::Replica
                },
            ]
        );
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("keeping cache-0 (the Sentinel quorum's choice), demoting cache-2"));
    }

    #[test]
    fn several_masters_without_quorum_keep_the_highest_offset() {
        let observed = observe(
            vec![master(0, 100), replica(1, 0, 100), master(2, 500)],
            vec![sentinel(0, Some(1)), sentinel(1, None), sentinel(2, None)],
        );
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-2"));
        assert!(plan.actions.contains(&Action::Demote {
            pod: "cache-0".into(),
            master: addr(2)
        }));
        assert!(plan.actions.contains(&Action::Replicate {
            pod: "cache-1".into(),
            master: addr(2)
        }));
        assert!(plan.actions.contains(&Action::SentinelMonitor {
            sentinel: "cache-sentinel-0".into(),
            master: addr(2)
        }));
        assert!(plan.warnings[0].contains("the highest replication offset"));
    }

    #[test]
    fn right_after_a_failover_the_sentinel_leaders_choice_beats_the_old_masters_offset() {
        // Only the leader (sentinel-0) has switched to cache-1; the old master cache-0, writes
        // paused by its preStop, still shows the higher offset.
        let observed = observe(
            vec![master(0, 900), master(1, 800), replica(2, 0, 800)],
            vec![sentinel(0, Some(1)), sentinel(1, None), sentinel(2, None)],
        );
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-1"));
        assert!(plan.actions.contains(&Action::Demote {
            pod: "cache-0".into(),
            master: addr(1)
        }));
        assert!(
            plan.warnings[0].contains("named by the most Sentinels"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn no_master_and_no_quorum_promotes_the_highest_offset_never_the_empty_replica() {
        let mut empty = replica(0, 1, 0);
        if let Some(r) = empty.replication.as_mut() {
            r.master = Some(Endpoint::new(WAITING_MASTER_HOST, 6379));
            r.link_up = false;
        }
        let observed = observe(
            vec![empty, replica(1, 0, 700), replica(2, 0, 650)],
            (0..3).map(|i| sentinel(i, None)).collect(),
        );
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-1"));
        assert_eq!(
            plan.actions[..2],
            [
                Action::Promote { pod: "cache-1".into() },
                Action::Replicate {
                    pod: "cache-0".into(),
                    master: addr(1)
                },
            ]
        );
        assert!(plan.warnings[0].contains("promoting cache-1 (replication offset 700)"));
    }

    #[test]
    fn a_replica_mid_sync_is_not_promoted_even_with_a_higher_offset() {
        let mut syncing = cut_off(1, 0, 900, 60);
        if let Some(r) = syncing.replication.as_mut() {
            r.sync_in_progress = true;
        }
        let observed = observe(
            vec![unreachable(0, "master"), syncing, cut_off(2, 0, 10, 60)],
            (0..3).map(|i| sentinel(i, None)).collect(),
        );
        assert_eq!(decide(&observed).master.as_deref(), Some("cache-2"));
        let only_syncing = observe(
            vec![{
                let mut r = cut_off(1, 0, 900, 60);
                if let Some(rep) = r.replication.as_mut() {
                    rep.sync_in_progress = true;
                }
                r
            }],
            vec![],
        );
        assert_eq!(decide(&only_syncing).wait, Some(Wait::NoCandidate));
    }

    #[test]
    fn a_master_the_operator_cannot_reach_is_not_replaced_while_its_replicas_are_linked() {
        // The operator alone is cut off from cache-0 and two of three Sentinels; the replicas
        // still replicate from it and the Sentinel that answers sees it.
        let mut observed = observe(
            vec![unreachable(0, "master"), replica(1, 0, 700), replica(2, 0, 700)],
            vec![
                SentinelPod {
                    pod: "cache-sentinel-0".into(),
                    view: None,
                },
                SentinelPod {
                    pod: "cache-sentinel-1".into(),
                    view: None,
                },
                sentinel(2, Some(0)),
            ],
        );
        let plan = decide(&observed);
        assert_eq!(plan.actions, [], "no promotion, no label moved");
        assert!(
            matches!(&plan.wait, Some(Wait::MasterNotVisible { evidence }) if evidence.contains("cache-1 replicates from cache-0")),
            "{:?}",
            plan.wait
        );
        // After a failover one Sentinel's newest view is enough to name the master, but one
        // Sentinel cannot fail over: still no promotion while the replicas are linked.
        if let Some(view) = observed.sentinels[2].view.as_mut() {
            view.config_epoch = 3;
        }
        assert!(matches!(decide(&observed).wait, Some(Wait::MasterNotVisible { .. })));
        // Links down for less than down-after are no verdict either.
        observed.redis[1] = cut_off(1, 0, 700, 2);
        observed.redis[2] = cut_off(2, 0, 700, 2);
        let plan = decide(&observed);
        assert!(
            matches!(&plan.wait, Some(Wait::MasterNotVisible { evidence }) if evidence.contains("only 2 s ago")),
            "{:?}",
            plan.wait
        );
        // Down for longer, but the Sentinel that answers still sees the master.
        observed.redis[1] = cut_off(1, 0, 700, 30);
        observed.redis[2] = cut_off(2, 0, 650, 30);
        let plan = decide(&observed);
        assert!(
            matches!(&plan.wait, Some(Wait::MasterNotVisible { evidence }) if evidence.contains("Sentinel cache-sentinel-2 sees")),
            "{:?}",
            plan.wait
        );
        // Everyone who answers has lost it: the operator heals.
        if let Some(view) = observed.sentinels[2].view.as_mut() {
            view.master_down = true;
        }
        let plan = decide(&observed);
        assert_eq!(plan.wait, None);
        assert_eq!(plan.actions[0], Action::Promote { pod: "cache-1".into() });
    }

    #[test]
    fn after_a_failover_one_sentinel_naming_a_dead_master_does_not_block_healing() {
        // Epoch 3: one surviving Sentinel names cache-0, which is gone for it too; the other
        // Sentinels are down, so no quorum will ever replace it.
        let mut lone = sentinel(0, Some(0));
        if let Some(view) = lone.view.as_mut() {
            view.config_epoch = 3;
            view.master_down = true;
        }
        let observed = observe(
            vec![unreachable(0, "master"), cut_off(1, 0, 500, 40), cut_off(2, 0, 900, 40)],
            vec![
                lone,
                SentinelPod {
                    pod: "cache-sentinel-1".into(),
                    view: None,
                },
                SentinelPod {
                    pod: "cache-sentinel-2".into(),
                    view: None,
                },
            ],
        );
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-2"));
        assert_eq!(plan.actions[0], Action::Promote { pod: "cache-2".into() });
    }

    #[test]
    fn only_a_link_to_a_redis_the_operator_cannot_see_is_evidence() {
        // cache-2 syncs from cache-1, a reachable replica (chained): that link says nothing
        // about a master. A Sentinel behind the newest configuration is catching up, not seeing.
        let mut behind = sentinel(1, Some(0));
        if let Some(view) = behind.view.as_mut() {
            view.config_epoch = 1;
        }
        let mut newest = sentinel(0, Some(1));
        if let Some(view) = newest.view.as_mut() {
            view.config_epoch = 2;
        }
        let observed = observe(
            vec![unreachable(0, "replica"), cut_off(1, 0, 800, 20), replica(2, 1, 800)],
            vec![newest, behind],
        );
        let plan = decide(&observed);
        assert_eq!(plan.wait, None, "{:?}", plan.wait);
        assert_eq!(plan.actions[0], Action::Promote { pod: "cache-1".into() });
    }

    #[test]
    fn no_master_while_the_quorum_names_a_dead_one_leaves_it_to_sentinel() {
        let observed = observe(
            vec![unreachable(0, "master"), replica(1, 0, 100), replica(2, 0, 100)],
            (0..3).map(|i| sentinel(i, Some(0))).collect(),
        );
        let plan = decide(&observed);
        assert_eq!(plan.actions, []);
        assert_eq!(plan.wait, Some(Wait::SentinelsToFailOver { named: addr(0) }));
    }

    #[test]
    fn the_quorum_naming_a_waiting_replica_gets_it_promoted_on_a_tie() {
        // Everything restarted empty: the Sentinels name cache-1, which waits for the operator.
        let waiting = |ordinal: u32| {
            let mut pod = replica(ordinal, 0, 0);
            if let Some(r) = pod.replication.as_mut() {
                r.master = Some(Endpoint::new(WAITING_MASTER_HOST, 6379));
                r.link_up = false;
            }
            pod
        };
        let observed = observe(
            vec![waiting(0), waiting(1), waiting(2)],
            (0..3).map(|i| sentinel(i, Some(1))).collect(),
        );
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-1"));
        assert_eq!(plan.actions[0], Action::Promote { pod: "cache-1".into() });
    }

    #[test]
    fn while_a_failover_is_in_progress_only_labels_follow_the_promoted_replica() {
        // cache-1 promoted, cache-2 not yet re-pointed, the old master cache-0 still a master.
        let mut observed = observe(
            vec![master(0, 100), master(1, 100), replica(2, 0, 100)],
            (0..3).map(|i| sentinel(i, Some(if i == 1 { 1 } else { 0 }))).collect(),
        );
        observed.redis[1].role_label = Some("replica".into());
        if let Some(view) = observed.sentinels[1].view.as_mut() {
            view.failover_in_progress = true;
        }
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-1"));
        assert_eq!(
            plan.actions,
            [
                Action::LabelRole {
                    pod: "cache-0".into(),
                    role: Role::Replica
                },
                Action::LabelRole {
                    pod: "cache-1".into(),
                    role: Role::Master
                },
            ],
            "no Redis or Sentinel command, no re-pointed replica, no demotion"
        );
        assert_eq!(
            plan.wait,
            Some(Wait::FailoverInProgress {
                sentinel: "cache-sentinel-1".into()
            })
        );
    }

    #[test]
    fn nothing_is_done_while_a_failover_has_not_promoted_yet() {
        // The leader still answers the old master (unreachable), or a replica not yet promoted.
        for named in [0, 2] {
            let mut observed = observe(
                vec![unreachable(0, "master"), replica(1, 0, 100), replica(2, 0, 100)],
                (0..3).map(|i| sentinel(i, Some(named))).collect(),
            );
            if let Some(view) = observed.sentinels[0].view.as_mut() {
                view.failover_in_progress = true;
            }
            let plan = decide(&observed);
            assert_eq!(plan.actions, [], "named cache-{named}");
            assert_eq!(plan.master, None);
            assert_eq!(
                plan.wait,
                Some(Wait::FailoverInProgress {
                    sentinel: "cache-sentinel-0".into()
                })
            );
        }
    }

    #[test]
    fn reset_only_a_sentinel_that_knows_more_than_exists_and_one_at_a_time() {
        let mut observed = healthy();
        for s in &mut observed.sentinels {
            if let Some(view) = s.view.as_mut() {
                view.known_replicas = 4; // two scaled-down Pods it still remembers
            }
        }
        assert_eq!(
            decide(&observed).actions,
            [Action::SentinelReset {
                sentinel: "cache-sentinel-0".into()
            }]
        );
        let mut discovering = healthy();
        if let Some(view) = discovering.sentinels[0].view.as_mut() {
            view.known_replicas = 1;
            view.known_sentinels = 0;
        }
        assert_eq!(decide(&discovering).actions, [], "fewer is discovery in progress");
    }

    #[test]
    fn a_priority_left_at_zero_is_restored_once_settled_never_during_a_failover() {
        let mut observed = healthy();
        if let Some(r) = observed.redis[2].replication.as_mut() {
            r.priority = Some(0);
        }
        assert_eq!(
            decide(&observed).actions,
            [Action::RestorePriority { pod: "cache-2".into() }]
        );
        if let Some(view) = observed.sentinels[0].view.as_mut() {
            view.failover_in_progress = true;
        }
        assert!(
            !decide(&observed)
                .actions
                .iter()
                .any(|a| matches!(a, Action::RestorePriority { .. })),
            "Sentinel may still be choosing among the replicas"
        );
    }

    #[test]
    fn the_master_requires_a_replica_exactly_while_the_spec_wants_several() {
        let mut observed = healthy();
        observed.desired_replicas = 1;
        assert_eq!(
            decide(&observed).actions,
            [Action::RequireReplicas {
                pod: "cache-0".into(),
                required: false
            }],
            "scaled to one: nobody left to acknowledge"
        );
        let mut scaled_up = observe(vec![master(0, 100)], vec![sentinel(0, Some(0))]);
        if let Some(r) = scaled_up.redis[0].replication.as_mut() {
            r.requires_replicas = false;
            r.connected_replicas = 0;
        }
        scaled_up.desired_replicas = 3;
        assert!(
            !decide(&scaled_up)
                .actions
                .iter()
                .any(|a| matches!(a, Action::RequireReplicas { .. })),
            "no replica connected yet: requiring one would refuse every write"
        );
        if let Some(r) = scaled_up.redis[0].replication.as_mut() {
            r.connected_replicas = 1;
        }
        assert!(decide(&scaled_up).actions.contains(&Action::RequireReplicas {
            pod: "cache-0".into(),
            required: true
        }));
        assert_eq!(decide(&healthy()).actions, [], "as wanted already");
    }

    #[test]
    fn a_sentinel_whose_timings_or_quorum_were_changed_gets_them_back() {
        let mut observed = healthy();
        if let Some(view) = observed.sentinels[1].view.as_mut() {
            view.settings = Some((
                SentinelTimings {
                    down_after_ms: 100,
                    ..SentinelTimings::default()
                },
                2,
            ));
        }
        if let Some(view) = observed.sentinels[2].view.as_mut() {
            view.settings = Some((SentinelTimings::default(), 1));
        }
        assert_eq!(
            decide(&observed).actions,
            [
                Action::SentinelSettings {
                    sentinel: "cache-sentinel-1".into()
                },
                Action::SentinelSettings {
                    sentinel: "cache-sentinel-2".into()
                },
            ]
        );
        assert_eq!(decide(&healthy()).actions, [], "as rendered: nothing to do");
    }

    #[test]
    fn nothing_reachable_means_waiting() {
        let observed = observe(vec![unreachable(0, "master")], vec![sentinel(0, Some(0))]);
        assert_eq!(decide(&observed).wait, Some(Wait::NothingReachable));
    }

    fn pod(ordinal: u32, up_to_date: bool) -> PodState {
        PodState {
            pod: format!("cache-{ordinal}"),
            ordinal,
            up_to_date,
            ready: true,
        }
    }

    #[test]
    fn a_roll_goes_replicas_then_one_failover_then_the_old_master() {
        let master = Some("cache-1");
        let mut pods = vec![pod(0, false), pod(1, false), pod(2, false)];
        assert_eq!(next_roll_step(&pods, master), Step::DeletePod("cache-2".into()));
        pods[2] = pod(2, true);
        assert_eq!(next_roll_step(&pods, master), Step::DeletePod("cache-0".into()));
        pods[0] = PodState {
            ready: false,
            ..pod(0, true)
        };
        assert_eq!(next_roll_step(&pods, master), Step::WaitForReady);
        pods[0] = pod(0, true);
        assert_eq!(
            next_roll_step(&pods, master),
            Step::Failover {
                from: "cache-1".into(),
                avoid: vec![]
            }
        );
        // After the failover cache-1 is an outdated replica: deleted, no second failover.
        assert_eq!(
            next_roll_step(&pods, Some("cache-0")),
            Step::DeletePod("cache-1".into())
        );
        pods[1] = pod(1, true);
        assert_eq!(next_roll_step(&pods, Some("cache-0")), Step::Done);
        assert_eq!(
            next_roll_step(&[pod(0, false)], Some("cache-0")),
            Step::WaitForReady,
            "a single Redis is never deleted to roll it: it waits for the surge Pod"
        );
    }

    #[test]
    fn scale_down_never_removes_the_master() {
        let pods: Vec<PodState> = (0..5).map(|i| pod(i, true)).collect();
        assert_eq!(next_scale_down_step(&pods, Some("cache-1"), 3), Step::Done);
        assert_eq!(
            next_scale_down_step(&pods, Some("cache-4"), 3),
            Step::Failover {
                from: "cache-4".into(),
                avoid: vec!["cache-3".into()]
            }
        );
    }

    #[test]
    fn right_after_a_failover_the_leaders_newer_epoch_outvotes_sentinels_still_catching_up() {
        // cache-1 was just promoted at epoch 1 by sentinel-0; the other two still name cache-0 at
        // epoch 0 (hello messages reach them within seconds), and cache-0 (writes paused by its
        // preStop) still answers as master.
        let mut observed = observe(
            vec![master(0, 100), master(1, 100), replica(2, 1, 100)],
            vec![sentinel(0, Some(1)), sentinel(1, Some(0)), sentinel(2, Some(0))],
        );
        observed.redis[1].role_label = Some("replica".into());
        if let Some(view) = observed.sentinels[0].view.as_mut() {
            view.config_epoch = 1;
        }
        assert_eq!(quorum_master(&observed), Some(addr(1)));
        let plan = decide(&observed);
        assert_eq!(plan.master.as_deref(), Some("cache-1"));
        assert!(
            plan.actions.contains(&Action::Demote {
                pod: "cache-0".into(),
                master: addr(1)
            }),
            "{:?}",
            plan.actions
        );
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::Demote { pod, .. } if pod == "cache-1")),
            "the new master is never demoted: {:?}",
            plan.actions
        );
    }

    #[test]
    fn no_second_sentinel_reset_while_a_reset_one_rediscovers_the_others() {
        let mut observed = healthy();
        for s in &mut observed.sentinels {
            if let Some(view) = s.view.as_mut() {
                view.known_replicas = 4;
            }
        }
        // sentinel-0 was just reset: it knows no other Sentinel yet.
        if let Some(view) = observed.sentinels[0].view.as_mut() {
            view.known_replicas = 2;
            view.known_sentinels = 0;
        }
        assert_eq!(decide(&observed).actions, []);
        if let Some(view) = observed.sentinels[0].view.as_mut() {
            view.known_sentinels = 2;
        }
        assert_eq!(
            decide(&observed).actions,
            [Action::SentinelReset {
                sentinel: "cache-sentinel-1".into()
            }]
        );
    }
}
