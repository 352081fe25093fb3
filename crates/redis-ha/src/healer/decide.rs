//! The healer's decisions, as pure functions of what was read of the members. The healer task
//! reads them ([`super::redis`]), asks [`decide`] and carries out the actions; the rules live
//! here, tested without a process.
//!
//! Never act while a Sentinel has a failover in progress; with one master,
//! label roles, re-point stray replicas and fix Sentinels monitoring another master; with several,
//! keep the Sentinel quorum's choice (else the one most Sentinels name, else the highest offset)
//! and demote the others; with none
//! and no quorum to fail over, promote the replica with the highest offset (never an empty one
//! when another holds data); `SENTINEL RESET` only when a Sentinel knows more replicas or
//! Sentinels than exist. Sentinels resolve disagreement by `config-epoch` (a failover's newer
//! configuration wins and spreads by gossip), and so does the healer: a view older than another's
//! is catching up, never a vote against the newer one.
use std::collections::BTreeMap;

use super::{
    plan::{Action, Plan, Wait},
    survey::{RedisPod, Replication, Role, SentinelView, Survey},
};
use crate::config::Endpoint;

/// The highest `config-epoch` any answering Sentinel reports: one more per failover.
pub fn newest_epoch(survey: &Survey) -> u64 {
    survey
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
pub fn quorum_master(survey: &Survey) -> Option<Endpoint> {
    let newest = newest_epoch(survey);
    let mut votes: BTreeMap<&Endpoint, usize> = BTreeMap::new();
    for master in survey
        .sentinels
        .iter()
        .filter_map(|s| s.view.as_ref())
        .filter(|v| !is_catching_up(v, newest))
        .filter_map(|v| v.master.as_ref())
    {
        *votes.entry(master).or_default() += 1;
    }
    let needed = if newest > 0 { 1 } else { survey.quorum.max(1) };
    votes
        .into_iter()
        .filter(|(_, count)| *count >= needed)
        .max_by_key(|(_, count)| *count)
        .map(|(master, _)| master.clone())
}

/// Decides what to do about the surveyed state.
pub fn decide(survey: &Survey) -> Plan {
    Plan {
        failover_blocker: failover_blocker(survey),
        ..decide_actions(survey)
    }
}

/// Why the Sentinels could not fail over now, or None when they could: a Sentinel learns the
/// replicas from the master's `INFO` and the other Sentinels from their hellos, up to ten
/// seconds after they appear, and until then `SENTINEL FAILOVER` is refused (`NOGOODSLAVE`) and a
/// lost master is not replaced. Every answering Sentinel must know every answering replica and
/// every other answering Sentinel, and none may be in TILT mode.
pub fn failover_blocker(survey: &Survey) -> Option<String> {
    let replicas = survey
        .redis
        .iter()
        .filter(|p| p.replication.as_ref().is_some_and(|r| r.role == Role::Replica))
        .count();
    let answering: Vec<(&str, &SentinelView)> = survey
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

/// A Redis that answered, with what it reported.
type Answering<'a> = (&'a RedisPod, &'a Replication);

/// The master the actions keep or make, and the actions (a promotion, demotions) and warnings
/// that choosing it takes.
struct Chosen<'a> {
    master: &'a RedisPod,
    actions: Vec<Action>,
    warnings: Vec<String>,
}

/// The cases in priority order: a failover in progress, nothing reachable, then one master
/// chosen (promoted when there is none, kept among several); then, around that master, the
/// replicas, their priorities, the master's replica requirement, the role labels and the
/// Sentinels.
fn decide_actions(survey: &Survey) -> Plan {
    if let Some(plan) = during_sentinel_failover(survey) {
        return plan;
    }
    let reachable: Vec<Answering<'_>> = survey
        .redis
        .iter()
        .filter_map(|p| p.replication.as_ref().map(|r| (p, r)))
        .collect();
    if reachable.is_empty() {
        return Plan::waiting(Wait::NothingReachable);
    }
    let named = quorum_master(survey);
    let masters: Vec<&Answering<'_>> = reachable.iter().filter(|(_, r)| r.role == Role::Master).collect();
    let chosen = match masters.as_slice() {
        [] => match promote_without_master(survey, &reachable, named.as_ref()) {
            Ok(chosen) => chosen,
            Err(wait) => return Plan::waiting(wait),
        },
        [(only, _)] => Chosen {
            master: only,
            actions: Vec::new(),
            warnings: Vec::new(),
        },
        several => keep_one_of_several_masters(survey, several, named.as_ref()),
    };
    let Chosen {
        master,
        mut actions,
        warnings,
    } = chosen;

    let repointed = repoint_replicas(&reachable, master, &actions);
    actions.extend(repointed);
    actions.extend(restore_priorities(&reachable, master));
    actions.extend(require_replicas(survey, &reachable, master));
    actions.extend(role_labels(survey, master));
    let sentinels_repointed = repoint_sentinels(survey, master);
    let sentinel_fixed = !sentinels_repointed.is_empty();
    actions.extend(sentinels_repointed);
    actions.extend(restore_sentinel_settings(survey, master));
    if !sentinel_fixed {
        actions.extend(reset_a_stale_sentinel(survey));
    }

    Plan {
        master: Some(master.pod.clone()),
        actions,
        wait: None,
        warnings,
        failover_blocker: None,
    }
}

/// While a Sentinel reports a failover in progress: the plan that waits for it.
fn during_sentinel_failover(survey: &Survey) -> Option<Plan> {
    let (sentinel, view) = survey
        .sentinels
        .iter()
        .filter_map(|s| Some((s, s.view.as_ref()?)))
        .find(|(_, v)| v.failover_in_progress)?;
    // Never fight Sentinel: no Redis or Sentinel command while it fails over. But once it has
    // promoted a replica, its leader answers that replica as the master (what Sentinel-aware
    // clients switch to); the labels follow the same answer at once, so clients of the master
    // Service are not kept waiting until the other replicas are reconfigured.
    let promoted = view.master.as_ref().and_then(|address| {
        survey
            .redis
            .iter()
            .find(|p| &p.address == address && p.replication.as_ref().is_some_and(|r| r.role == Role::Master))
    });
    Some(Plan {
        master: promoted.map(|p| p.pod.clone()),
        actions: promoted.map(|p| role_labels(survey, p)).unwrap_or_default(),
        ..Plan::waiting(Wait::FailoverInProgress {
            sentinel: sentinel.pod.clone(),
        })
    })
}

/// No master answers: wait for the Sentinels or for a master something says is alive, else
/// promote the replica holding the most data.
fn promote_without_master<'a>(
    survey: &Survey,
    reachable: &[Answering<'a>],
    named: Option<&Endpoint>,
) -> Result<Chosen<'a>, Wait> {
    if let Some(named) = named {
        let named_answers = reachable.iter().any(|(p, _)| &p.address == named);
        if !named_answers && sentinels_can_fail_over(survey, named) {
            return Err(Wait::SentinelsToFailOver { named: named.clone() });
        }
    }
    if let Some(evidence) = live_master_evidence(survey) {
        return Err(Wait::MasterNotVisible { evidence });
    }
    // No master, no evidence of one anywhere, and no Sentinel quorum to fail over (or the
    // quorum names a Redis that is not master, which Sentinel would not fix): promote the
    // replica holding the most data.
    let named_pod = |pod: &RedisPod| named == Some(&pod.address);
    let (candidate, replication) = reachable
        .iter()
        .filter(|(_, r)| !r.sync_in_progress)
        .max_by_key(|(p, r)| (r.offset, named_pod(p), std::cmp::Reverse(p.ordinal)))
        .ok_or(Wait::NoCandidate)?;
    Ok(Chosen {
        master: candidate,
        actions: vec![Action::Promote {
            pod: candidate.pod.clone(),
        }],
        warnings: vec![format!(
            "no master and no Sentinel quorum to fail over: promoting {} (replication offset {})",
            candidate.pod, replication.offset
        )],
    })
}

/// Several masters answer: keep one, demote the others.
fn keep_one_of_several_masters<'a>(
    survey: &Survey,
    several: &[&Answering<'a>],
    named: Option<&Endpoint>,
) -> Chosen<'a> {
    let named_pod = |pod: &RedisPod| named == Some(&pod.address);
    // Without a quorum, Sentinels that name one of the masters still outvote the offset:
    // right after a failover only its leader has switched (the others follow within
    // seconds, by hello messages), and the old master, writes paused, may show the higher
    // offset. Keeping it would fight Sentinel.
    let newest = newest_epoch(survey);
    let votes = |pod: &RedisPod| {
        survey
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
    let mut chosen = Chosen {
        master: kept,
        actions: Vec::new(),
        warnings: Vec::new(),
    };
    for (other, _) in several.iter().copied().filter(|(p, _)| p.pod != kept.pod) {
        chosen.warnings.push(format!(
            "{} masters: keeping {} ({why}), demoting {}",
            several.len(),
            kept.pod,
            other.pod
        ));
        chosen.actions.push(Action::Demote {
            pod: other.pod.clone(),
            master: kept.address.clone(),
        });
    }
    chosen
}

/// Replicas following anyone else (an old master, the waiting placeholder) follow the master;
/// a master being demoted already does.
fn repoint_replicas(reachable: &[Answering<'_>], master: &RedisPod, decided: &[Action]) -> Vec<Action> {
    let mut actions = Vec::new();
    for (pod, replication) in reachable {
        let demoted = decided
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
    actions
}

/// Outside a failover (this is not reached during one), a replica kept out of a planned
/// failover is promotable again: a left-over priority 0 would shrink the set Sentinel can
/// fail over to, silently, forever.
fn restore_priorities(reachable: &[Answering<'_>], master: &RedisPod) -> Vec<Action> {
    reachable
        .iter()
        .filter(|(pod, replication)| {
            pod.pod != master.pod
                && replication
                    .priority
                    .is_some_and(|p| p != crate::config::REPLICA_PRIORITY)
        })
        .map(|(pod, _)| Action::RestorePriority { pod: pod.pod.clone() })
        .collect()
}

/// The master requires a replica's acknowledgement exactly while the spec wants several Redis.
fn require_replicas(survey: &Survey, reachable: &[Answering<'_>], master: &RedisPod) -> Option<Action> {
    let (_, replication) = reachable.iter().find(|(p, _)| p.pod == master.pod)?;
    let want = survey.desired_replicas > 1;
    // Turned on only once a replica is connected: until then it would refuse every write.
    (replication.role == Role::Master
        && replication.requires_replicas != want
        && (!want || replication.connected_replicas > 0))
        .then(|| Action::RequireReplicas {
            pod: master.pod.clone(),
            required: want,
        })
}

/// Sentinels monitoring another master (or none) monitor this one.
fn repoint_sentinels(survey: &Survey, master: &RedisPod) -> Vec<Action> {
    survey
        .sentinels
        .iter()
        .filter(|s| {
            s.view
                .as_ref()
                .is_some_and(|v| v.master.as_ref() != Some(&master.address))
        })
        .map(|s| Action::SentinelMonitor {
            sentinel: s.pod.clone(),
            master: master.address.clone(),
        })
        .collect()
}

/// Sentinels monitoring the right master with other timings or quorum than rendered get them
/// back.
fn restore_sentinel_settings(survey: &Survey, master: &RedisPod) -> Vec<Action> {
    let expected = (survey.timings, u32::try_from(survey.quorum).unwrap_or(u32::MAX));
    survey
        .sentinels
        .iter()
        .filter(|s| {
            s.view.as_ref().is_some_and(|view| {
                view.master.as_ref() == Some(&master.address) && view.settings.is_some_and(|found| found != expected)
            })
        })
        .map(|s| Action::SentinelSettings {
            sentinel: s.pod.clone(),
        })
        .collect()
}

/// A Sentinel that knows more replicas or Sentinels than exist keeps stale entries (scaled
/// down Pods) forever; fewer is only discovery in progress. One reset per pass, and none while
/// other Sentinels are being fixed (the caller's check), so a quorum always remains able to fail
/// over. A reset Sentinel knows no other until their hello messages reach it (seconds): while
/// one is rediscovering, no second reset, or a quorum could be out of reach at once.
fn reset_a_stale_sentinel(survey: &Survey) -> Option<Action> {
    let other_sentinels = survey.sentinels.len().saturating_sub(1);
    let rediscovering = survey
        .sentinels
        .iter()
        .filter_map(|s| s.view.as_ref())
        .any(|v| (v.known_sentinels as usize) < other_sentinels);
    if rediscovering {
        return None;
    }
    let replicas = survey.redis.len().saturating_sub(1);
    let stale = survey.sentinels.iter().find(|s| {
        s.view
            .as_ref()
            .is_some_and(|v| v.known_replicas as usize > replicas || v.known_sentinels as usize > other_sentinels)
    })?;
    Some(Action::SentinelReset {
        sentinel: stale.pod.clone(),
    })
}

/// What says a master is alive although none answers the operator, or None when nothing does.
/// Evidence is a replica whose link to a Redis the operator cannot reach is up, or down for less
/// than down-after (it may come back; Sentinel has not judged yet either), and an answering
/// Sentinel, not behind the newest configuration, that names such a Redis without flagging it
/// down. A replica never connected since its start (-1) and a link to the waiting placeholder
/// are no evidence: nothing else would ever end the wait.
fn live_master_evidence(survey: &Survey) -> Option<String> {
    let seen: Vec<&Endpoint> = survey
        .redis
        .iter()
        .filter(|p| p.replication.is_some())
        .map(|p| &p.address)
        .collect();
    let unseen = |address: &Endpoint| !seen.contains(&address);
    let down_after = i64::from(survey.timings.down_after_ms / 1000);
    for pod in &survey.redis {
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
    let newest = newest_epoch(survey);
    survey.sentinels.iter().find_map(|sentinel| {
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
fn sentinels_can_fail_over(survey: &Survey, named: &Endpoint) -> bool {
    let newest = newest_epoch(survey);
    let naming = survey
        .sentinels
        .iter()
        .filter_map(|s| s.view.as_ref())
        .filter(|v| !is_catching_up(v, newest) && v.master.as_ref() == Some(named))
        .count();
    naming >= survey.quorum.max(survey.sentinels.len() / 2 + 1)
}

/// The label changes that make `master` the only Pod labelled master. Labels follow every Pod,
/// answering or not: an isolated old master still passes its local readiness check, and must not
/// stay behind the master Service.
fn role_labels(survey: &Survey, master: &RedisPod) -> Vec<Action> {
    survey
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

#[cfg(test)]
mod tests;
