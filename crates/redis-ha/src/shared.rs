//! What the reconcile and the healer task share: the cluster domain, each RedisHA's last healer
//! plan (for the status) and its password (read by the reconcile with one `get` of the Secret, so
//! the healer never reads Secrets itself), and the healer's wake-up when a Redis Pod changes.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use capstan_runtime::{RefusedWrite, lock};

use crate::healer::Plan;

/// `(namespace, name)` of a RedisHA.
pub type Key = (String, String);

#[derive(Clone, Default)]
pub struct Shared {
    pub cluster_domain: Arc<str>,
    plans: Arc<Mutex<HashMap<Key, Plan>>>,
    passwords: Arc<Mutex<HashMap<Key, Option<String>>>>,
    /// The password in force before the last change, while Pods may still run with it.
    previous_passwords: Arc<Mutex<HashMap<Key, Option<String>>>>,
    /// The password the Sentinels were last told, per RedisHA.
    sentinels_told: Arc<Mutex<HashMap<Key, Option<String>>>>,
    /// A write of the healer's that the apiserver refused in its last pass, per RedisHA.
    refusals: Arc<Mutex<HashMap<Key, RefusedWrite>>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Shared {
    pub fn new(cluster_domain: String) -> Self {
        Self {
            cluster_domain: cluster_domain.into(),
            ..Default::default()
        }
    }

    /// Records the healer's plan; true when it differs from the previous one.
    pub fn set_plan(&self, key: Key, plan: Plan) -> bool {
        lock(&self.plans).insert(key, plan.clone()).as_ref() != Some(&plan)
    }

    pub fn plan(&self, key: &Key) -> Option<Plan> {
        lock(&self.plans).get(key).cloned()
    }

    /// Records what the healer's last pass had refused (None: nothing); true when it changed.
    pub fn set_refusal(&self, key: Key, refusal: Option<RefusedWrite>) -> bool {
        let mut refusals = lock(&self.refusals);
        let previous = match refusal.clone() {
            Some(refusal) => refusals.insert(key, refusal),
            None => refusals.remove(&key),
        };
        previous != refusal
    }

    pub fn refusal(&self, key: &Key) -> Option<RefusedWrite> {
        lock(&self.refusals).get(key).cloned()
    }

    /// The password the Pods use (`None`: no auth), once the reconcile has read it.
    /// A change keeps the previous password, for Pods that still run with it (see
    /// [`Self::previous_password`]), and wakes the healer to rotate it live.
    pub fn set_password(&self, key: Key, password: Option<String>) {
        let previous = lock(&self.passwords).insert(key.clone(), password.clone());
        if let Some(previous) = previous
            && previous != password
        {
            lock(&self.previous_passwords).insert(key, previous);
            self.wake_healer();
        }
    }

    /// The password before the last change this manager saw (`Some(None)`: there was none).
    /// Forgotten on restart: a manager that starts after a change cannot reach Pods still on
    /// the old password.
    pub fn previous_password(&self, key: &Key) -> Option<Option<String>> {
        lock(&self.previous_passwords).get(key).cloned()
    }

    /// Whether the Sentinels still have to be told `password`.
    pub fn sentinels_need(&self, key: &Key, password: &Option<String>) -> bool {
        lock(&self.sentinels_told).get(key) != Some(password)
    }

    pub fn sentinels_told(&self, key: Key, password: Option<String>) {
        lock(&self.sentinels_told).insert(key, password);
    }

    /// `None`: not read yet (the healer waits); `Some(None)`: no auth.
    pub fn password(&self, key: &Key) -> Option<Option<String>> {
        lock(&self.passwords).get(key).cloned()
    }

    /// Drops what is kept for RedisHAs no longer in `live` (deleted ones).
    pub fn retain(&self, live: &std::collections::HashSet<Key>) {
        lock(&self.plans).retain(|key, _| live.contains(key));
        lock(&self.passwords).retain(|key, _| live.contains(key));
        lock(&self.previous_passwords).retain(|key, _| live.contains(key));
        lock(&self.sentinels_told).retain(|key, _| live.contains(key));
        lock(&self.refusals).retain(|key, _| live.contains(key));
    }

    /// Asks the healer for a pass now (a Redis Pod changed) instead of at its next tick.
    pub fn wake_healer(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Self::wake_healer`] was called (at most one wake-up is stored).
    pub async fn healer_woken(&self) {
        self.wake.notified().await;
    }

    pub fn forget(&self, key: &Key) {
        lock(&self.plans).remove(key);
        lock(&self.passwords).remove(key);
        lock(&self.previous_passwords).remove(key);
        lock(&self.sentinels_told).remove(key);
        lock(&self.refusals).remove(key);
    }
}
