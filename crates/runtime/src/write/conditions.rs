//! `metav1.Condition` bookkeeping with Kubernetes semantics: `lastTransitionTime` moves only when a
//! condition's status changes, so an unchanged status never causes a write.
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// The condition every capstan kind carries, so `kubectl wait --for=condition=Ready` works on all.
pub const READY: &str = "Ready";

/// A condition as a controller wants it, before timestamps are settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Builds the conditions to store: one per desired type, in the given order, keeping
/// `lastTransitionTime` from `previous` when the status did not change, and stamping `now`
/// otherwise. Conditions of other types in `previous` (set by someone else) are kept.
pub fn merge_conditions(
    previous: &[Condition],
    desired: &[DesiredCondition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = desired
        .iter()
        .map(|d| {
            let status = if d.status { TRUE } else { FALSE };
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason.to_owned(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    merged.extend(
        previous
            .iter()
            .filter(|p| !desired.iter().any(|d| d.type_ == p.type_))
            .cloned(),
    );
    merged
}

/// Whether `conditions` holds `type_` with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid timestamp")
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let first = merge_conditions(
            &[],
            &[DesiredCondition::new(READY, false, "FriendMissing", "no pod")],
            Some(1),
            at(100),
        );
        assert_eq!(first[0].last_transition_time, Time(at(100)));
        let again = merge_conditions(
            &first,
            &[DesiredCondition::new(READY, false, "FriendMissing", "still no pod")],
            Some(2),
            at(200),
        );
        assert_eq!(again[0].last_transition_time, Time(at(100)));
        assert_eq!(again[0].message, "still no pod");
        assert_eq!(again[0].observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_when_status_flips() {
        let first = merge_conditions(
            &[],
            &[DesiredCondition::new(READY, false, "FriendMissing", "")],
            None,
            at(100),
        );
        let flipped = merge_conditions(
            &first,
            &[DesiredCondition::new(READY, true, "FriendFound", "")],
            None,
            at(300),
        );
        assert_eq!(flipped[0].status, TRUE);
        assert_eq!(flipped[0].last_transition_time, Time(at(300)));
        assert!(is_true(&flipped, READY));
    }

    #[test]
    fn foreign_conditions_are_kept() {
        let foreign = Condition {
            type_: "Custom".into(),
            status: TRUE.into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at(1)),
        };
        let merged = merge_conditions(
            std::slice::from_ref(&foreign),
            &[DesiredCondition::new(READY, true, "Ok", "")],
            None,
            at(5),
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1], foreign);
    }
}
