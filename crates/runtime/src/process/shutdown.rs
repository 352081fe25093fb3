//! Graceful shutdown: the first SIGTERM or SIGINT drains (no new reconciles, running ones finish),
//! the second aborts.
use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    state: watch::Sender<Phase>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    Draining,
    Aborting,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            state: watch::channel(Phase::Running).0,
        }
    }

    /// Starts listening for SIGTERM/SIGINT.
    pub fn listen_for_signals(&self) {
        let state = self.state.clone();
        tokio::spawn(async move {
            for phase in [Phase::Draining, Phase::Aborting] {
                if let Err(error) = signal().await {
                    tracing::error!(%error, "cannot listen for signals; shutdown only by request");
                    return;
                }
                tracing::info!(?phase, "shutdown signal received");
                state.send_replace(phase);
            }
        });
    }

    /// Requests a graceful shutdown (as the first signal does).
    pub fn trigger(&self) {
        self.state.send_if_modified(|phase| {
            let modified = *phase == Phase::Running;
            *phase = Phase::Draining.max(*phase);
            modified
        });
    }

    /// Resolves once shutdown reaches `phase`.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.state.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    /// Whether shutdown has begun (draining or aborting).
    pub fn is_shutting_down(&self) -> bool {
        *self.state.borrow() >= Phase::Draining
    }

    pub async fn draining(&self) {
        self.reached(Phase::Draining).await;
    }

    pub async fn aborting(&self) {
        self.reached(Phase::Aborting).await;
    }
}

async fn signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            result = tokio::signal::ctrl_c() => result,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_releases_draining_but_not_aborting() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(1), shutdown.draining())
            .await
            .expect("draining resolves after trigger");
        let aborted = tokio::time::timeout(std::time::Duration::from_millis(50), shutdown.aborting()).await;
        assert!(aborted.is_err(), "a single trigger must not abort");
    }
}
