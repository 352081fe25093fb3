//! The status a RedisHA should have, from what the reconcile and the healer found. Pure.
use capstan_runtime::{
    RefusedWrite,
    conditions::{DesiredCondition, READY, merge_conditions},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    build::AuthError,
    crd::{DEGRADED, FAILOVER_IN_PROGRESS, RedisHA, RedisHAStatus, SentinelEndpoint},
    healer::{Plan, Wait},
    names::sentinel_service_name,
    reconcile::validate::SpecError,
};

/// Whether the Sentinels could replace a lost master now: one Redis cannot, and Sentinels that
/// have not yet learnt every replica and peer (for seconds after creation or a scale-up) would not.
pub const FAILOVER_CAPABLE: &str = "FailoverCapable";

/// What stops the RedisHA from being acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Blocked<'a> {
    InvalidSpec(&'a SpecError),
    /// `spec.auth` names a Secret that does not exist.
    SecretMissing(&'a str),
    Auth(&'a AuthError),
    /// A child of that kind and name exists and this RedisHA does not control it.
    ForeignChild {
        kind: &'a str,
        name: &'a str,
    },
    /// The apiserver refused a child as built (422), with its message.
    Rejected(&'a str),
}

/// What was observed of the running set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health<'a> {
    /// Ready Pods of the Redis StatefulSet.
    pub redis_ready: i32,
    /// Ready Pods of the Sentinel StatefulSet.
    pub sentinels_ready: i32,
    /// The healer's decision this pass; None when it did not run (e.g. not leader).
    pub plan: Option<&'a Plan>,
    /// A write of the healer's the apiserver keeps refusing (a roll's Pod deletion, a label).
    pub refused: Option<&'a RefusedWrite>,
    /// The Redis count kept above `spec.replicas`: no master is known, and a Pod the
    /// scale-down removes may hold data.
    pub scale_down_held: Option<i32>,
}

fn failover_condition(rha: &RedisHA, plan: Option<&Plan>) -> DesiredCondition {
    if rha.spec.replicas <= 1 {
        return DesiredCondition::new(
            FAILOVER_CAPABLE,
            false,
            "SingleInstance",
            "one Redis: no replica to fail over to, and writes need no replica",
        );
    }
    match plan {
        None => DesiredCondition::new(
            FAILOVER_CAPABLE,
            false,
            "NotObserved",
            "the operator has not asked the Sentinels yet",
        ),
        Some(Plan {
            failover_blocker: Some(why),
            ..
        }) => DesiredCondition::new(FAILOVER_CAPABLE, false, "SentinelsNotReady", why.clone()),
        Some(_) => DesiredCondition::new(
            FAILOVER_CAPABLE,
            true,
            "Replicated",
            format!(
                "{} Redis, {} Sentinels, quorum {}",
                rha.spec.replicas,
                rha.spec.sentinel.replicas,
                rha.spec.sentinel.effective_quorum()
            ),
        ),
    }
}

/// Builds the status: `Ready`, `Degraded`, `FailoverInProgress` and `FailoverCapable`, keeping
/// `lastTransitionTime` of unchanged conditions, and `lastFailoverTime` when the master changed.
pub(crate) fn build_status(rha: &RedisHA, outcome: Result<Health<'_>, Blocked<'_>>, now: Timestamp) -> RedisHAStatus {
    let previous = rha.status.clone().unwrap_or_default();
    let name = rha.metadata.name.clone().unwrap_or_default();
    let generation = rha.metadata.generation;
    let mut status = RedisHAStatus {
        master: previous.master.clone(),
        ready_replicas: 0,
        sentinels_ready: 0,
        sentinel: Some(SentinelEndpoint {
            service: sentinel_service_name(&name),
            master_name: name.clone(),
        }),
        observed_generation: generation,
        last_failover_time: previous.last_failover_time.clone(),
        conditions: Vec::new(),
    };
    let desired = match outcome {
        Err(blocked) => {
            let (reason, message) = match blocked {
                Blocked::InvalidSpec(error) => ("InvalidSpec", error.to_string()),
                Blocked::SecretMissing(secret) => (
                    "SecretMissing",
                    format!("Secret {secret} (spec.auth.secretName) does not exist"),
                ),
                Blocked::Auth(error) => ("InvalidSecret", error.to_string()),
                Blocked::ForeignChild { kind, name } => (
                    "ResourceExists",
                    format!("{kind} {name} exists and is not controlled by this RedisHA; it is left untouched"),
                ),
                Blocked::Rejected(message) => ("Rejected", format!("the apiserver refused a child: {message}")),
            };
            vec![
                DesiredCondition::new(READY, false, reason, message.clone()),
                DesiredCondition::new(DEGRADED, true, reason, message),
                DesiredCondition::new(FAILOVER_IN_PROGRESS, false, "NotObserved", ""),
                failover_condition(rha, None),
            ]
        }
        Ok(health) => {
            status.ready_replicas = health.redis_ready;
            status.sentinels_ready = health.sentinels_ready;
            let failing_over = match health.plan.and_then(|p| p.wait.as_ref()) {
                Some(Wait::FailoverInProgress { sentinel }) => {
                    Some(format!("Sentinel {sentinel} reports a failover in progress"))
                }
                Some(Wait::SentinelsToFailOver { named }) => {
                    Some(format!("the master the Sentinels name ({named}) does not answer"))
                }
                _ => None,
            };
            if let Some(master) = health.plan.and_then(|p| p.master.as_ref()) {
                if previous.master.as_ref().is_some_and(|m| m != master) {
                    status.last_failover_time = Some(Time(now));
                }
                status.master = Some(master.clone());
            }
            let no_master = match health.plan {
                Some(plan) => match &plan.wait {
                    Some(Wait::NothingReachable) => Some("no Redis answers".to_owned()),
                    Some(Wait::NoCandidate) => Some("no master, and every replica is syncing".to_owned()),
                    _ => None,
                },
                None => None,
            };
            let want = rha.spec.replicas;
            let want_sentinels = rha.spec.sentinel.replicas;
            let all_ready = health.redis_ready >= want && health.sentinels_ready >= want_sentinels;
            let counts = format!(
                "{}/{want} Redis and {}/{want_sentinels} Sentinels ready",
                health.redis_ready, health.sentinels_ready
            );
            let ready = all_ready && failing_over.is_none() && no_master.is_none() && status.master.is_some();
            vec![
                if ready {
                    DesiredCondition::new(
                        READY,
                        true,
                        "Ready",
                        format!("master {}; {counts}", status.master.clone().unwrap_or_default()),
                    )
                } else {
                    DesiredCondition::new(READY, false, "NotReady", counts.clone())
                },
                match (&no_master, health.refused, health.plan.and_then(|p| p.wait.as_ref())) {
                    (Some(why), _, _) => DesiredCondition::new(DEGRADED, true, "NoMaster", why.clone()),
                    (None, Some(refused), _) => {
                        DesiredCondition::new(DEGRADED, true, refused.reason, refused.message())
                    }
                    // Clients may well be served; the operator cannot tell, and will not heal.
                    (None, None, Some(Wait::MasterNotVisible { evidence })) => DesiredCondition::new(
                        DEGRADED,
                        true,
                        "MasterNotVisible",
                        format!("no master answers the operator, which waits: {evidence}"),
                    ),
                    (None, None, _) if health.scale_down_held.is_some() => DesiredCondition::new(
                        DEGRADED,
                        true,
                        "ScaleDownHeld",
                        format!(
                            "{} Redis kept, {} wanted: no master is known yet, and a Pod the scale-down removes may hold the newest data",
                            health.scale_down_held.unwrap_or_default(),
                            rha.spec.replicas
                        ),
                    ),
                    (None, None, _) => DesiredCondition::new(DEGRADED, false, "AsExpected", ""),
                },
                match failing_over {
                    Some(why) => DesiredCondition::new(FAILOVER_IN_PROGRESS, true, "SentinelFailover", why),
                    None => DesiredCondition::new(FAILOVER_IN_PROGRESS, false, "Settled", ""),
                },
                failover_condition(rha, health.plan),
            ]
        }
    };
    let previous_conditions = previous.conditions;
    status.conditions = merge_conditions(&previous_conditions, &desired, generation, now);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;
    use capstan_runtime::conditions::{find_condition, is_true};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn rha(spec: &str) -> RedisHA {
        let mut rha: RedisHA = serde_yaml::from_str(&format!(
            "apiVersion: cache.capstan.dev/v1alpha1\nkind: RedisHA\nmetadata: {{name: cache, namespace: apps, generation: 4}}\nspec: {spec}\n"
        ))
        .expect("valid");
        rha.status = Some(RedisHAStatus {
            master: Some("cache-0".into()),
            ..Default::default()
        });
        rha
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000).expect("time")
    }

    /// The healer's plan when it waits, with no master.
    fn waiting(wait: Wait) -> Plan {
        Plan {
            master: None,
            actions: vec![],
            wait: Some(wait),
            warnings: vec![],
            failover_blocker: None,
        }
    }

    fn plan(master: &str) -> Plan {
        Plan {
            master: Some(master.into()),
            actions: vec![],
            wait: None,
            warnings: vec![],
            failover_blocker: None,
        }
    }

    #[test]
    fn all_ready_with_a_master_is_ready_and_names_the_sentinel_service() {
        let plan = plan("cache-0");
        let status = build_status(
            &rha("{}"),
            Ok(Health {
                redis_ready: 3,
                sentinels_ready: 3,
                plan: Some(&plan),
                refused: None,
                scale_down_held: None,
            }),
            now(),
        );
        assert!(is_true(&status.conditions, READY));
        assert!(!is_true(&status.conditions, DEGRADED));
        assert!(!is_true(&status.conditions, FAILOVER_IN_PROGRESS));
        assert!(is_true(&status.conditions, FAILOVER_CAPABLE));
        assert_eq!(status.master.as_deref(), Some("cache-0"));
        assert_eq!(status.last_failover_time, None);
        assert_eq!(
            status.sentinel,
            Some(SentinelEndpoint {
                service: "cache-sentinel".into(),
                master_name: "cache".into()
            })
        );
        assert_eq!(status.observed_generation, Some(4));
    }

    #[test]
    fn a_new_master_stamps_the_failover_time() {
        let plan = plan("cache-2");
        let status = build_status(
            &rha("{}"),
            Ok(Health {
                redis_ready: 3,
                sentinels_ready: 3,
                plan: Some(&plan),
                refused: None,
                scale_down_held: None,
            }),
            now(),
        );
        assert_eq!(status.master.as_deref(), Some("cache-2"));
        assert_eq!(status.last_failover_time, Some(Time(now())));
    }

    #[test]
    fn a_failover_in_progress_shows_and_is_not_ready() {
        let plan = waiting(Wait::SentinelsToFailOver {
            named: Endpoint::new("cache-0.x", 6379),
        });
        let status = build_status(
            &rha("{}"),
            Ok(Health {
                redis_ready: 2,
                sentinels_ready: 3,
                plan: Some(&plan),
                refused: None,
                scale_down_held: None,
            }),
            now(),
        );
        assert!(is_true(&status.conditions, FAILOVER_IN_PROGRESS));
        assert!(!is_true(&status.conditions, READY));
        assert_eq!(status.master.as_deref(), Some("cache-0"), "the last known master stays");
    }

    #[test]
    fn a_master_the_operator_cannot_see_is_degraded_with_what_it_saw() {
        let plan = waiting(Wait::MasterNotVisible {
            evidence: "cache-1 replicates from cache-0.x:6379, which the operator cannot reach".into(),
        });
        let status = build_status(
            &rha("{}"),
            Ok(Health {
                redis_ready: 3,
                sentinels_ready: 3,
                plan: Some(&plan),
                refused: None,
                scale_down_held: None,
            }),
            now(),
        );
        let degraded = find(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "MasterNotVisible")
        );
        assert!(degraded.message.contains("cache-1 replicates from cache-0.x:6379"));
        assert!(!is_true(&status.conditions, FAILOVER_IN_PROGRESS), "nobody fails over");
        assert_eq!(status.master.as_deref(), Some("cache-0"), "the last known master stays");
    }

    #[test]
    fn a_write_the_apiserver_keeps_refusing_is_degraded_naming_verb_and_resource() {
        let refused = RefusedWrite {
            reason: "DeletePodsRefused",
            verb: "delete",
            resource: "pods",
            name: "cache-2".into(),
            code: 403,
            server_message: "pods \"cache-2\" is forbidden".into(),
        };
        let plan = plan("cache-0");
        let status = build_status(
            &rha("{}"),
            Ok(Health {
                redis_ready: 3,
                sentinels_ready: 3,
                plan: Some(&plan),
                refused: Some(&refused),
                scale_down_held: None,
            }),
            now(),
        );
        let degraded = find(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "DeletePodsRefused")
        );
        assert!(
            degraded.message.contains("refused to delete pods/cache-2 (403)"),
            "{}",
            degraded.message
        );
        assert!(
            is_true(&status.conditions, READY),
            "the set still serves; its roll is stalled"
        );
    }

    #[test]
    fn a_child_the_apiserver_rejects_takes_an_older_ready_down() {
        let mut ready = rha("{}");
        let plan = plan("cache-0");
        let health = Health {
            redis_ready: 3,
            sentinels_ready: 3,
            plan: Some(&plan),
            refused: None,
            scale_down_held: None,
        };
        ready.status = Some(build_status(&ready, Ok(health), now()));
        assert!(is_true(&ready.status.as_ref().expect("status").conditions, READY));
        let status = build_status(
            &ready,
            Err(Blocked::Rejected(
                "StatefulSet.apps \"cache\" is invalid: spec.template...",
            )),
            now(),
        );
        assert!(!is_true(&status.conditions, READY));
        let degraded = find(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "Rejected")
        );
        assert!(degraded.message.contains("is invalid"), "{}", degraded.message);
    }

    #[test]
    fn a_held_scale_down_says_why() {
        let plan = waiting(Wait::NothingReachable);
        let health = |plan| Health {
            redis_ready: 3,
            sentinels_ready: 3,
            plan,
            refused: None,
            scale_down_held: Some(5),
        };
        let status = build_status(&rha("{replicas: 3}"), Ok(health(None)), now());
        let degraded = find(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ScaleDownHeld")
        );
        assert!(
            degraded.message.starts_with("5 Redis kept, 3 wanted"),
            "{}",
            degraded.message
        );
        let status = build_status(&rha("{replicas: 3}"), Ok(health(Some(&plan))), now());
        assert_eq!(find(&status, DEGRADED).reason, "NoMaster", "no master says more");
    }

    #[test]
    fn a_missing_secret_is_degraded_with_its_reason() {
        let status = build_status(&rha("{}"), Err(Blocked::SecretMissing("cache-auth")), now());
        let degraded = find(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "SecretMissing")
        );
        assert!(degraded.message.contains("cache-auth"));
        assert!(!is_true(&status.conditions, READY));
    }

    #[test]
    fn sentinels_still_learning_the_set_are_not_failover_capable_yet() {
        let learning = Plan {
            failover_blocker: Some("Sentinel cache-sentinel-1 knows 1 of 2 replicas".into()),
            ..plan("cache-0")
        };
        let health = |plan| Health {
            redis_ready: 3,
            sentinels_ready: 3,
            plan,
            refused: None,
            scale_down_held: None,
        };
        let status = build_status(&rha("{}"), Ok(health(Some(&learning))), now());
        let capable = find(&status, FAILOVER_CAPABLE);
        assert_eq!(
            (
                capable.status.as_str(),
                capable.reason.as_str(),
                capable.message.as_str()
            ),
            (
                "False",
                "SentinelsNotReady",
                "Sentinel cache-sentinel-1 knows 1 of 2 replicas"
            )
        );
        assert!(is_true(&status.conditions, READY), "it serves meanwhile");
        let unobserved = build_status(&rha("{}"), Ok(health(None)), now());
        assert_eq!(find(&unobserved, FAILOVER_CAPABLE).reason, "NotObserved");
    }

    fn find<'a>(status: &'a RedisHAStatus, type_: &str) -> &'a Condition {
        find_condition(&status.conditions, type_).expect("condition present")
    }

    #[test]
    fn a_single_instance_says_it_cannot_fail_over() {
        let plan = plan("cache-0");
        let status = build_status(
            &rha("{replicas: 1}"),
            Ok(Health {
                redis_ready: 1,
                sentinels_ready: 3,
                plan: Some(&plan),
                refused: None,
                scale_down_held: None,
            }),
            now(),
        );
        let capable = find(&status, FAILOVER_CAPABLE);
        assert_eq!(
            (capable.status.as_str(), capable.reason.as_str()),
            ("False", "SingleInstance")
        );
        assert!(is_true(&status.conditions, READY));
    }
}
