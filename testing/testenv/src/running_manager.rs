//! Running a manager inside a test, scoped to the test's namespace, so tests sharing one control
//! plane never see each other's objects.
use kube::Client;
use std::{net::SocketAddr, time::Duration};
use tokio::{sync::oneshot, task::JoinHandle};

use capstan_runtime::{BoundAddrs, Error, Manager, RuntimeArgs, Shutdown};

use crate::http_get;

pub struct RunningManager {
    pub addrs: BoundAddrs,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), Error>>,
}

/// Starts a manager watching only `namespace`, with the controllers `add` registers, and admin
/// endpoints on free loopback ports.
pub async fn spawn_manager(
    client: Client,
    namespace: &str,
    add: impl FnOnce(&mut Manager),
) -> Result<RunningManager, Error> {
    spawn_manager_with(client, test_args(namespace), add).await
}

/// [`RuntimeArgs`] for a manager watching only `namespace`, admin endpoints on free loopback ports.
pub fn test_args(namespace: &str) -> RuntimeArgs {
    RuntimeArgs {
        namespace: Some(namespace.to_owned()),
        metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        health_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..RuntimeArgs::default()
    }
}

/// Starts a manager with `args` and the controllers `add` registers.
pub async fn spawn_manager_with(
    client: Client,
    args: RuntimeArgs,
    add: impl FnOnce(&mut Manager),
) -> Result<RunningManager, Error> {
    let mut manager = Manager::new(client, args).await?;
    add(&mut manager);
    let shutdown = manager.shutdown();
    let (bound_tx, bound_rx) = oneshot::channel();
    let task = tokio::spawn(manager.run(move |addrs| {
        let _ = bound_tx.send(addrs);
    }));
    let addrs = match bound_rx.await {
        Ok(addrs) => addrs,
        // The manager ended before binding: its own error says why.
        Err(_) => {
            return Err(task
                .await
                .map_err(|e| Error::Config(e.to_string()))?
                .err()
                .unwrap_or(Error::Config("manager stopped before binding".into())));
        }
    };
    Ok(RunningManager { addrs, shutdown, task })
}

impl RunningManager {
    /// Whether the manager has stopped (on its own, unless [`stop`](Self::stop) was called).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits (bounded) for a manager that stops on its own, and returns how it ended.
    pub async fn join(self, timeout: Duration) -> Option<Result<(), Error>> {
        match tokio::time::timeout(timeout, self.task).await {
            Ok(Ok(result)) => Some(result),
            _ => None,
        }
    }

    /// The value of the `/metrics` series starting with `series`, summed; 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let Ok((_, body)) = http_get(self.addrs.metrics, "/metrics").await else {
            return f64::NAN;
        };
        body.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    }

    /// Drains and waits (bounded) for the manager to stop.
    pub async fn stop(self) -> Result<(), Error> {
        self.shutdown.trigger();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(joined) => joined.map_err(|e| Error::Config(e.to_string()))?,
            Err(_) => Err(Error::Config("manager did not stop within 30 s of shutdown".into())),
        }
    }
}
