//! Assembles informers, controllers, the admin server and shutdown into one running manager.
use futures::future::{self, BoxFuture};
use kube::Client;
use std::net::SocketAddr;
use tokio::sync::watch;

use crate::{
    Error, RuntimeArgs, admin, client,
    controller::{self, ControllerDef, ErrorBackoff, Reconciler, RunSettings},
    informer::Informers,
    lease::LeaderElector,
    metrics::Metrics,
    readiness::Readiness,
    shutdown::Shutdown,
};

pub struct Manager {
    client: Client,
    args: RuntimeArgs,
    informers: Informers,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: Shutdown,
    leader: watch::Sender<bool>,
    controllers: Vec<Box<dyn FnOnce(RunSettings) -> BoxFuture<'static, ()> + Send>>,
    served_checks: Vec<BoxFuture<'static, ()>>,
    names: Vec<&'static str>,
}

/// Where a running manager's admin endpoints ended up (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub metrics: SocketAddr,
    pub health: SocketAddr,
}

impl Manager {
    pub fn new(client: Client, args: RuntimeArgs) -> Result<Self, Error> {
        let readiness = Readiness::new();
        let leader_elect = args.leader_election.leader_elect;
        Ok(Self {
            informers: Informers::new(client.clone(), args.namespace.clone(), readiness.clone()),
            client,
            args,
            readiness,
            metrics: Metrics::new()?,
            shutdown: Shutdown::new(),
            // Without leader election this process is the only writer from the start.
            leader: watch::channel(!leader_elect).0,
            controllers: Vec::new(),
            served_checks: Vec::new(),
            names: Vec::new(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Adds a controller; `build` subscribes to the informers it needs.
    pub fn add<R: Reconciler>(&mut self, build: impl FnOnce(&mut Informers) -> ControllerDef<R>) {
        let def = build(&mut self.informers);
        self.names.push(R::NAME);
        self.served_checks.push(Box::pin(client::wait_until_served::<R::Object>(
            self.client.clone(),
            self.args.namespace.clone(),
        )));
        self.controllers
            .push(Box::new(move |settings| controller::run(def, settings)));
    }

    /// Runs until shutdown: admin server, informers and controllers. The returned future
    /// resolves after every controller has drained, or at once on a second signal.
    pub async fn run(self, on_bound: impl FnOnce(BoundAddrs)) -> Result<(), Error> {
        let Manager {
            client,
            args,
            informers,
            readiness,
            metrics,
            shutdown,
            leader,
            controllers,
            served_checks,
            names,
        } = self;
        let (metrics_addr, health_addr) = admin::serve(
            args.metrics_addr,
            args.health_addr,
            metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
        )
        .await?;
        on_bound(BoundAddrs {
            metrics: metrics_addr,
            health: health_addr,
        });
        tracing::info!(controllers = ?names, namespace = ?args.namespace, "starting manager");
        let crds_gate = readiness.gate("custom resource definitions");
        tokio::select! {
            _ = future::join_all(served_checks) => crds_gate.ready(),
            () = shutdown.draining() => return Ok(()),
        }

        let settings = RunSettings {
            client,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            leader: leader.subscribe(),
            concurrency: args.concurrency.max(1),
            backoff: ErrorBackoff::default(),
            instance: std::env::var("POD_NAME")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok()),
        };
        let started = informers.start();
        let informer_tasks: Vec<_> = started.drivers.into_iter().map(tokio::spawn).collect();
        tokio::select! {
            () = started.synced => tracing::info!("caches synced"),
            () = shutdown.draining() => {
                informer_tasks.iter().for_each(|t| t.abort());
                return Ok(());
            }
        }
        // Campaign only with warm caches: a new leader reconciles at once.
        let (stop_elector, elector_stopped) = tokio::sync::oneshot::channel::<()>();
        let elector = match args.leader_election.lease_config() {
            Some(config) => {
                tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "leader election on");
                metrics.set_leader(&config.name, false);
                let elector = LeaderElector::new(settings.client.clone(), config)?;
                let stopped = async move {
                    let _ = elector_stopped.await;
                };
                Some(tokio::spawn(elector.run(leader.clone(), metrics.clone(), stopped)))
            }
            None => None,
        };
        let controllers = future::join_all(controllers.into_iter().map(|run| tokio::spawn(run(settings.clone()))));

        let drain_readiness = {
            let shutdown = shutdown.clone();
            let readiness = readiness.clone();
            async move {
                shutdown.draining().await;
                readiness.begin_shutdown();
                tracing::info!("draining: no new reconciles, waiting for running ones");
            }
        };
        tokio::select! {
            _ = async { tokio::join!(controllers, drain_readiness) } => {}
            () = shutdown.aborting() => tracing::warn!("aborting without waiting for running reconciles"),
        }
        for task in informer_tasks {
            task.abort();
        }
        // Only now that no reconcile runs may a successor start writing.
        leader.send_replace(false);
        let _ = stop_elector.send(());
        if let Some(elector) = elector {
            match elector.await {
                Ok(mut elector) => {
                    if let Err(error) = elector.release().await {
                        tracing::warn!(%error, "could not release the lease; a successor waits for it to expire");
                    }
                }
                Err(error) => tracing::warn!(%error, "leader election task failed"),
            }
        }
        tracing::info!("manager stopped");
        Ok(())
    }
}
