//! Readiness: true once every informer has listed its kind, false again once shutdown begins.
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use crate::lock;

#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    pending: Mutex<Vec<(u64, String)>>,
    next_id: std::sync::atomic::AtomicU64,
    shutting_down: AtomicBool,
}

/// One condition for readiness; released by [`Gate::ready`].
pub struct Gate {
    id: u64,
    inner: Arc<Inner>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers something readiness must wait for.
    pub fn gate(&self, what: impl Into<String>) -> Gate {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.pending).push((id, what.into()));
        Gate {
            id,
            inner: self.inner.clone(),
        }
    }

    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// `Ok(())` when ready, else what is still awaited.
    pub fn check(&self) -> Result<(), String> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err("shutting down".to_owned());
        }
        let pending = lock(&self.inner.pending);
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "waiting for: {}",
                pending
                    .iter()
                    .map(|(_, what)| what.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

impl Gate {
    pub fn ready(&self) {
        lock(&self.inner.pending).retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_gate_is_released_and_not_after_shutdown() {
        let readiness = Readiness::new();
        assert!(readiness.check().is_ok(), "nothing to wait for");
        let pods = readiness.gate("pods");
        let foos = readiness.gate("foos");
        assert_eq!(readiness.check(), Err("waiting for: pods, foos".to_owned()));
        pods.ready();
        pods.ready();
        assert_eq!(readiness.check(), Err("waiting for: foos".to_owned()));
        foos.ready();
        assert_eq!(readiness.check(), Ok(()));
        readiness.begin_shutdown();
        assert_eq!(readiness.check(), Err("shutting down".to_owned()));
    }
}
