//! When each RedisHA is due for its next pass.
use std::collections::{HashMap, HashSet};

use tokio::time::Instant;

use super::{FAST_PASS_INTERVAL, MAX_FAST_PASSES, PASS_INTERVAL};
use crate::shared::Key;

/// When each RedisHA is due for its next pass, and which are being healed now. Pure: the task
/// feeds it the time.
#[derive(Debug, Default)]
pub(super) struct HealSchedule {
    due: HashMap<Key, Instant>,
    fast_passes: HashMap<Key, u32>,
    in_flight: HashSet<Key>,
}

impl HealSchedule {
    /// New RedisHAs are due at once; deleted ones are forgotten.
    pub(super) fn sync<'a>(&mut self, live: impl Iterator<Item = &'a Key>, now: Instant) {
        let live: HashSet<&Key> = live.collect();
        self.due.retain(|key, _| live.contains(key));
        self.fast_passes.retain(|key, _| live.contains(key));
        for key in live {
            self.due.entry(key.clone()).or_insert(now);
        }
    }

    /// A Pod changed: every RedisHA is due now (its pass tells whether the change was its).
    pub(super) fn wake_all(&mut self, now: Instant) {
        for due in self.due.values_mut() {
            *due = (*due).min(now);
        }
    }

    /// The RedisHAs due by `now` and not being healed, as many as fit beside those in flight;
    /// they count as in flight from here.
    pub(super) fn take_due(&mut self, now: Instant, limit: usize) -> Vec<Key> {
        let room = limit.saturating_sub(self.in_flight.len());
        let mut due: Vec<(&Key, &Instant)> = self
            .due
            .iter()
            .filter(|(key, at)| **at <= now && !self.in_flight.contains(*key))
            .collect();
        due.sort_by_key(|(_, at)| **at);
        let taken: Vec<Key> = due.into_iter().take(room).map(|(key, _)| key.clone()).collect();
        self.in_flight.extend(taken.iter().cloned());
        taken
    }

    /// A pass ended: next due after the fast interval while in motion (bounded), else the normal one.
    pub(super) fn finished(&mut self, key: &Key, in_motion: bool, now: Instant) {
        self.in_flight.remove(key);
        let fast = self.fast_passes.entry(key.clone()).or_default();
        *fast = if in_motion { fast.saturating_add(1) } else { 0 };
        let interval = if in_motion && *fast <= MAX_FAST_PASSES {
            FAST_PASS_INTERVAL
        } else {
            PASS_INTERVAL
        };
        if let Some(due) = self.due.get_mut(key) {
            *due = now + interval;
        }
    }

    /// The earliest time a RedisHA not in flight is due; None while `limit` are in flight
    /// (the next to end makes room), so a full schedule never spins on a time already past.
    pub(super) fn next_due(&self, limit: usize) -> Option<Instant> {
        if self.in_flight.len() >= limit {
            return None;
        }
        self.due
            .iter()
            .filter(|(key, _)| !self.in_flight.contains(*key))
            .map(|(_, at)| *at)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ("apps".to_owned(), name.to_owned())
    }

    #[test]
    fn a_slow_redis_ha_delays_no_other_and_concurrency_is_bounded() {
        let start = Instant::now();
        let mut schedule = HealSchedule::default();
        let keys: Vec<Key> = ["a", "b", "c"].into_iter().map(key).collect();
        schedule.sync(keys.iter(), start);
        assert_eq!(schedule.take_due(start, 2).len(), 2, "at most two at once");
        let rest = schedule.take_due(start, 2);
        assert!(rest.is_empty(), "no room while two are in flight: {rest:?}");
        assert_eq!(schedule.next_due(2), None, "full: wait for one to end, do not spin");
        // One pass ends (in motion): that RedisHA is due again after the fast interval, and the
        // third gets the free place although the other is still in flight (slow).
        let mut first = keys.clone();
        first.retain(|k| schedule.in_flight.contains(k));
        let (slow, quick) = (first[0].clone(), first[1].clone());
        schedule.finished(&quick, true, start);
        let third = schedule.take_due(start, 2);
        assert_eq!(third.len(), 1);
        assert!(!third.contains(&slow) && !third.contains(&quick));
        schedule.finished(&third[0], false, start);
        let later = start + FAST_PASS_INTERVAL;
        assert_eq!(
            schedule.next_due(2),
            Some(later),
            "the quick one, fast; the slow one is in flight"
        );
        assert_eq!(schedule.take_due(later, 2), std::slice::from_ref(&quick));
        assert!(!schedule.take_due(later, 8).contains(&slow), "never twice at once");
        // A Pod change makes all due now, a deleted RedisHA is forgotten.
        schedule.wake_all(later);
        schedule.sync(keys[..2].iter(), later);
        assert!(!schedule.due.contains_key(&keys[2]));
    }

    #[test]
    fn a_state_that_never_settles_falls_back_to_the_normal_interval() {
        let start = Instant::now();
        let mut schedule = HealSchedule::default();
        let k = key("a");
        schedule.sync([k.clone()].iter(), start);
        for _ in 0..=MAX_FAST_PASSES {
            schedule.take_due(start, 1);
            schedule.finished(&k, true, start);
        }
        assert_eq!(schedule.next_due(1), Some(start + PASS_INTERVAL));
        schedule.take_due(start + PASS_INTERVAL, 1);
        schedule.finished(&k, false, start);
        schedule.take_due(start, 1);
        schedule.finished(&k, true, start);
        assert_eq!(
            schedule.next_due(1),
            Some(start + FAST_PASS_INTERVAL),
            "settling resets the count"
        );
    }
}
