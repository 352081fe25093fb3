//! Whether this manager may act now. Kubernetes writes go through [`Context`](crate::Context),
//! which checks it; side effects outside Kubernetes (a Redis command, a call to a cloud API) use
//! [`Leadership::while_leader`] so that a follower never sends one and a leader that loses the
//! Lease stops in the middle.
use std::future::Future;
use tokio::sync::watch;

use crate::Error;

/// A read-only view of this manager's leadership, cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    leader: watch::Receiver<bool>,
}

impl Leadership {
    pub fn new(leader: watch::Receiver<bool>) -> Self {
        Self { leader }
    }

    /// Leadership that never changes: `true` for a manager without leader election.
    pub fn fixed(is_leader: bool) -> Self {
        let (tx, rx) = watch::channel(is_leader);
        // The sender may go: a closed channel keeps its last value.
        drop(tx);
        Self { leader: rx }
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// `Err(NotLeader)` unless this manager leads now.
    pub fn check(&self) -> Result<(), Error> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Runs `action` only if this manager leads, and drops it (cancelling whatever it was doing)
    /// the moment leadership is lost. A follower never starts it.
    pub async fn while_leader<F: Future>(&self, action: F) -> Result<F::Output, Error> {
        self.check()?;
        tokio::select! {
            biased;
            () = self.lost() => Err(Error::NotLeader),
            output = action => Ok(output),
        }
    }

    /// Resolves once this manager leads.
    pub async fn acquired(&self) {
        let mut rx = self.leader.clone();
        // A closed channel keeps its last value; if that is "follower", wait forever.
        if rx.wait_for(|leader| *leader).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once this manager does not lead (at once for a follower).
    pub async fn lost(&self) {
        let mut rx = self.leader.clone();
        if rx.wait_for(|leader| !*leader).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub(crate) fn receiver(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    #[tokio::test]
    async fn a_follower_never_starts_the_action() {
        let leadership = Leadership::fixed(false);
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let result = leadership
            .while_leader(async move { flag.store(true, Ordering::SeqCst) })
            .await;
        assert!(matches!(result, Err(Error::NotLeader)));
        assert!(!started.load(Ordering::SeqCst), "the action must not even start");
    }

    #[tokio::test]
    async fn losing_leadership_cancels_a_running_action() {
        let (tx, rx) = watch::channel(true);
        let leadership = Leadership::new(rx);
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let running = tokio::spawn({
            let leadership = leadership.clone();
            async move {
                leadership
                    .while_leader(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        flag.store(true, Ordering::SeqCst);
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(false);
        let result = tokio::time::timeout(Duration::from_secs(1), running)
            .await
            .expect("cancelled promptly")
            .expect("task");
        assert!(matches!(result, Err(Error::NotLeader)));
        assert!(!finished.load(Ordering::SeqCst));
        assert_eq!(
            leadership.while_leader(async { 1 }).await.ok(),
            None,
            "still a follower"
        );
        tx.send_replace(true);
        assert_eq!(leadership.while_leader(async { 1 }).await.ok(), Some(1));
    }
}
