use super::*;
use crate::config::{SentinelTimings, WAITING_MASTER_HOST};
use crate::healer::survey::SentinelPod;

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

fn survey(redis: Vec<RedisPod>, sentinels: Vec<SentinelPod>) -> Survey {
    Survey {
        redis,
        sentinels,
        quorum: 2,
        timings: SentinelTimings::default(),
        desired_replicas: 3,
    }
}

fn healthy() -> Survey {
    survey(
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
    let mut surveyed = healthy();
    fn view(o: &mut Survey, i: usize) -> &mut SentinelView {
        o.sentinels[i].view.as_mut().expect("answers")
    }
    view(&mut surveyed, 1).known_replicas = 1;
    assert_eq!(
        decide(&surveyed).failover_blocker.as_deref(),
        Some("Sentinel cache-sentinel-1 knows 1 of 2 replicas")
    );
    view(&mut surveyed, 1).known_replicas = 2;
    view(&mut surveyed, 2).known_sentinels = 0;
    assert_eq!(
        failover_blocker(&surveyed).as_deref(),
        Some("Sentinel cache-sentinel-2 knows 0 of 2 other Sentinels")
    );
    view(&mut surveyed, 2).known_sentinels = 2;
    view(&mut surveyed, 0).tilt = true;
    assert!(
        failover_blocker(&surveyed).is_some_and(|why| why.starts_with("Sentinel cache-sentinel-0 is in TILT mode"))
    );
    view(&mut surveyed, 0).tilt = false;
    // What does not answer is not waited for: a Sentinel cannot know a replica that is down.
    surveyed.redis[2] = unreachable(2, "replica");
    surveyed.sentinels[0].view = None;
    view(&mut surveyed, 1).known_replicas = 1;
    view(&mut surveyed, 2).known_replicas = 1;
    view(&mut surveyed, 2).known_sentinels = 1;
    assert_eq!(failover_blocker(&surveyed), None);
    for sentinel in &mut surveyed.sentinels {
        sentinel.view = None;
    }
    assert_eq!(failover_blocker(&surveyed).as_deref(), Some("no Sentinel answers"));
}

#[test]
fn one_master_labels_roles_and_repoints_a_stray_replica() {
    let mut surveyed = healthy();
    surveyed.redis[0].role_label = None;
    surveyed.redis[1].role_label = Some("master".into());
    // cache-2 still follows cache-1 (an old master), and cache-1 answers as replica.
    surveyed.redis[2] = replica(2, 1, 90);
    let plan = decide(&surveyed);
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
    let mut surveyed = survey(
        vec![unreachable(0, "master"), master(1, 200), replica(2, 1, 200)],
        (0..3).map(|i| sentinel(i, Some(1))).collect(),
    );
    surveyed.redis[1].role_label = Some("replica".into());
    let plan = decide(&surveyed);
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
    let mut surveyed = healthy();
    surveyed.sentinels[2] = sentinel(2, Some(1));
    let plan = decide(&surveyed);
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
    let surveyed = survey(
        vec![master(0, 100), replica(1, 0, 100), master(2, 500)],
        (0..3).map(|i| sentinel(i, Some(0))).collect(),
    );
    let plan = decide(&surveyed);
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
    let surveyed = survey(
        vec![master(0, 100), replica(1, 0, 100), master(2, 500)],
        vec![sentinel(0, Some(1)), sentinel(1, None), sentinel(2, None)],
    );
    let plan = decide(&surveyed);
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
    let surveyed = survey(
        vec![master(0, 900), master(1, 800), replica(2, 0, 800)],
        vec![sentinel(0, Some(1)), sentinel(1, None), sentinel(2, None)],
    );
    let plan = decide(&surveyed);
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
    let surveyed = survey(
        vec![empty, replica(1, 0, 700), replica(2, 0, 650)],
        (0..3).map(|i| sentinel(i, None)).collect(),
    );
    let plan = decide(&surveyed);
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
    let surveyed = survey(
        vec![unreachable(0, "master"), syncing, cut_off(2, 0, 10, 60)],
        (0..3).map(|i| sentinel(i, None)).collect(),
    );
    assert_eq!(decide(&surveyed).master.as_deref(), Some("cache-2"));
    let only_syncing = survey(
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
    let mut surveyed = survey(
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
    let plan = decide(&surveyed);
    assert_eq!(plan.actions, [], "no promotion, no label moved");
    assert!(
        matches!(&plan.wait, Some(Wait::MasterNotVisible { evidence }) if evidence.contains("cache-1 replicates from cache-0")),
        "{:?}",
        plan.wait
    );
    // After a failover one Sentinel's newest view is enough to name the master, but one
    // Sentinel cannot fail over: still no promotion while the replicas are linked.
    if let Some(view) = surveyed.sentinels[2].view.as_mut() {
        view.config_epoch = 3;
    }
    assert!(matches!(decide(&surveyed).wait, Some(Wait::MasterNotVisible { .. })));
    // Links down for less than down-after are no verdict either.
    surveyed.redis[1] = cut_off(1, 0, 700, 2);
    surveyed.redis[2] = cut_off(2, 0, 700, 2);
    let plan = decide(&surveyed);
    assert!(
        matches!(&plan.wait, Some(Wait::MasterNotVisible { evidence }) if evidence.contains("only 2 s ago")),
        "{:?}",
        plan.wait
    );
    // Down for longer, but the Sentinel that answers still sees the master.
    surveyed.redis[1] = cut_off(1, 0, 700, 30);
    surveyed.redis[2] = cut_off(2, 0, 650, 30);
    let plan = decide(&surveyed);
    assert!(
        matches!(&plan.wait, Some(Wait::MasterNotVisible { evidence }) if evidence.contains("Sentinel cache-sentinel-2 sees")),
        "{:?}",
        plan.wait
    );
    // Everyone who answers has lost it: the operator heals.
    if let Some(view) = surveyed.sentinels[2].view.as_mut() {
        view.master_down = true;
    }
    let plan = decide(&surveyed);
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
    let surveyed = survey(
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
    let plan = decide(&surveyed);
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
    let surveyed = survey(
        vec![unreachable(0, "replica"), cut_off(1, 0, 800, 20), replica(2, 1, 800)],
        vec![newest, behind],
    );
    let plan = decide(&surveyed);
    assert_eq!(plan.wait, None, "{:?}", plan.wait);
    assert_eq!(plan.actions[0], Action::Promote { pod: "cache-1".into() });
}

#[test]
fn no_master_while_the_quorum_names_a_dead_one_leaves_it_to_sentinel() {
    let surveyed = survey(
        vec![unreachable(0, "master"), replica(1, 0, 100), replica(2, 0, 100)],
        (0..3).map(|i| sentinel(i, Some(0))).collect(),
    );
    let plan = decide(&surveyed);
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
    let surveyed = survey(
        vec![waiting(0), waiting(1), waiting(2)],
        (0..3).map(|i| sentinel(i, Some(1))).collect(),
    );
    let plan = decide(&surveyed);
    assert_eq!(plan.master.as_deref(), Some("cache-1"));
    assert_eq!(plan.actions[0], Action::Promote { pod: "cache-1".into() });
}

#[test]
fn while_a_failover_is_in_progress_only_labels_follow_the_promoted_replica() {
    // cache-1 promoted, cache-2 not yet re-pointed, the old master cache-0 still a master.
    let mut surveyed = survey(
        vec![master(0, 100), master(1, 100), replica(2, 0, 100)],
        (0..3).map(|i| sentinel(i, Some(if i == 1 { 1 } else { 0 }))).collect(),
    );
    surveyed.redis[1].role_label = Some("replica".into());
    if let Some(view) = surveyed.sentinels[1].view.as_mut() {
        view.failover_in_progress = true;
    }
    let plan = decide(&surveyed);
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
        let mut surveyed = survey(
            vec![unreachable(0, "master"), replica(1, 0, 100), replica(2, 0, 100)],
            (0..3).map(|i| sentinel(i, Some(named))).collect(),
        );
        if let Some(view) = surveyed.sentinels[0].view.as_mut() {
            view.failover_in_progress = true;
        }
        let plan = decide(&surveyed);
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
    let mut surveyed = healthy();
    for s in &mut surveyed.sentinels {
        if let Some(view) = s.view.as_mut() {
            view.known_replicas = 4; // two scaled-down Pods it still remembers
        }
    }
    assert_eq!(
        decide(&surveyed).actions,
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
    let mut surveyed = healthy();
    if let Some(r) = surveyed.redis[2].replication.as_mut() {
        r.priority = Some(0);
    }
    assert_eq!(
        decide(&surveyed).actions,
        [Action::RestorePriority { pod: "cache-2".into() }]
    );
    if let Some(view) = surveyed.sentinels[0].view.as_mut() {
        view.failover_in_progress = true;
    }
    assert!(
        !decide(&surveyed)
            .actions
            .iter()
            .any(|a| matches!(a, Action::RestorePriority { .. })),
        "Sentinel may still be choosing among the replicas"
    );
}

#[test]
fn the_master_requires_a_replica_exactly_while_the_spec_wants_several() {
    let mut surveyed = healthy();
    surveyed.desired_replicas = 1;
    assert_eq!(
        decide(&surveyed).actions,
        [Action::RequireReplicas {
            pod: "cache-0".into(),
            required: false
        }],
        "scaled to one: nobody left to acknowledge"
    );
    let mut scaled_up = survey(vec![master(0, 100)], vec![sentinel(0, Some(0))]);
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
    let mut surveyed = healthy();
    if let Some(view) = surveyed.sentinels[1].view.as_mut() {
        view.settings = Some((
            SentinelTimings {
                down_after_ms: 100,
                ..SentinelTimings::default()
            },
            2,
        ));
    }
    if let Some(view) = surveyed.sentinels[2].view.as_mut() {
        view.settings = Some((SentinelTimings::default(), 1));
    }
    assert_eq!(
        decide(&surveyed).actions,
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
    let surveyed = survey(vec![unreachable(0, "master")], vec![sentinel(0, Some(0))]);
    assert_eq!(decide(&surveyed).wait, Some(Wait::NothingReachable));
}
#[test]
fn right_after_a_failover_the_leaders_newer_epoch_outvotes_sentinels_still_catching_up() {
    // cache-1 was just promoted at epoch 1 by sentinel-0; the other two still name cache-0 at
    // epoch 0 (hello messages reach them within seconds), and cache-0 (writes paused by its
    // preStop) still answers as master.
    let mut surveyed = survey(
        vec![master(0, 100), master(1, 100), replica(2, 1, 100)],
        vec![sentinel(0, Some(1)), sentinel(1, Some(0)), sentinel(2, Some(0))],
    );
    surveyed.redis[1].role_label = Some("replica".into());
    if let Some(view) = surveyed.sentinels[0].view.as_mut() {
        view.config_epoch = 1;
    }
    assert_eq!(quorum_master(&surveyed), Some(addr(1)));
    let plan = decide(&surveyed);
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
    let mut surveyed = healthy();
    for s in &mut surveyed.sentinels {
        if let Some(view) = s.view.as_mut() {
            view.known_replicas = 4;
        }
    }
    // sentinel-0 was just reset: it knows no other Sentinel yet.
    if let Some(view) = surveyed.sentinels[0].view.as_mut() {
        view.known_replicas = 2;
        view.known_sentinels = 0;
    }
    assert_eq!(decide(&surveyed).actions, []);
    if let Some(view) = surveyed.sentinels[0].view.as_mut() {
        view.known_sentinels = 2;
    }
    assert_eq!(
        decide(&surveyed).actions,
        [Action::SentinelReset {
            sentinel: "cache-sentinel-1".into()
        }]
    );
}
