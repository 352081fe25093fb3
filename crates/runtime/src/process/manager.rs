//! Assembles informers, controllers, background tasks, the admin server, leader election and
//! shutdown into one running manager.
use futures::{
    StreamExt,
    future::{self, BoxFuture},
    stream::FuturesUnordered,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use std::{net::SocketAddr, time::Duration};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    Error, RuntimeArgs,
    controller::{self, ControllerDef, ErrorBackoff, Reconciler, RunSettings},
    events::EventPublisher,
    informer::Informers,
    process::admin,
    process::client,
    process::leadership::Leadership,
    process::lease::LeaderElector,
    process::metrics::Metrics,
    process::readiness::Readiness,
    process::shutdown::Shutdown,
    served::ServedApis,
    tasks::{self, BackgroundTask, TaskContext},
    watches::Watches,
};

/// One line of a manager binary's controller table: its `--controllers` name, its CRDs, and how
/// to add it. Flags, `crds` output and bench scenarios all derive from the table.
#[derive(Clone, Copy)]
pub struct ControllerEntry {
    pub name: &'static str,
    pub crds: fn() -> Vec<CustomResourceDefinition>,
    pub add: fn(&mut Manager),
}

type StartController = Box<dyn FnOnce(RunSettings) -> BoxFuture<'static, ()> + Send>;

struct PendingController {
    name: &'static str,
    start: StartController,
    tasks: Vec<BackgroundTask>,
}

pub struct Manager {
    client: Client,
    args: RuntimeArgs,
    informers: Informers,
    served: ServedApis,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: Shutdown,
    leader: watch::Sender<bool>,
    controllers: Vec<PendingController>,
    served_checks: Vec<BoxFuture<'static, ()>>,
}

/// Where a running manager's admin endpoints ended up (ports may have been 0).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct BoundAddrs {
    pub metrics: SocketAddr,
    pub health: SocketAddr,
}

impl Manager {
    /// A manager for `client`'s cluster; reads which API versions it serves (for
    /// [`Watches::serves`]), so the apiserver must answer.
    pub async fn new(client: Client, args: RuntimeArgs) -> Result<Self, Error> {
        let served = ServedApis::discover(&client).await?;
        let readiness = Readiness::new();
        let leader_elect = args.leader_election.leader_elect;
        Ok(Self {
            informers: Informers::new(client.clone(), args.namespace.clone(), readiness.clone()),
            served,
            client,
            args,
            readiness,
            metrics: Metrics::new()?,
            shutdown: Shutdown::new(),
            // Without leader election this process is the only writer from the start.
            leader: watch::channel(!leader_elect).0,
            controllers: Vec::new(),
            served_checks: Vec::new(),
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

    /// Adds a controller: `declare` says what it watches (on a [`Watches`]) and returns its
    /// reconciler.
    pub fn add<R: Reconciler>(&mut self, declare: impl FnOnce(&mut Watches<'_, R::Object>) -> R) {
        let mut watches = Watches::new(&mut self.informers, &self.args, &self.served);
        let reconciler = declare(&mut watches);
        let def = ControllerDef {
            watched: watches.into_parts(),
            reconciler,
        };
        self.served_checks.push(Box::pin(client::wait_until_served::<R::Object>(
            self.client.clone(),
            self.args.namespace.clone(),
        )));
        self.controllers.push(PendingController {
            name: R::NAME,
            tasks: def.tasks(),
            start: Box::new(move |settings| controller::run(def, settings)),
        });
    }

    /// Runs until shutdown: admin server, informers, controllers and background tasks. Resolves
    /// after every controller has drained (at most `--drain-timeout`), or at once on a second
    /// signal. A controller or watch that stops while the manager runs is an error: the process
    /// should exit non-zero so that it is restarted, rather than lead with a dead controller.
    pub async fn run(self, on_bound: impl FnOnce(BoundAddrs)) -> Result<(), Error> {
        let Manager {
            client,
            args,
            informers,
            served: _,
            readiness,
            metrics,
            shutdown,
            leader,
            controllers,
            served_checks,
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
        let names: Vec<_> = controllers.iter().map(|c| c.name).collect();
        tracing::info!(controllers = ?names, namespace = ?args.namespace, "starting manager");
        let crds_gate = readiness.gate("custom resource definitions");
        tokio::select! {
            _ = future::join_all(served_checks) => crds_gate.ready(),
            () = shutdown.draining() => return Ok(()),
        }

        let leadership = Leadership::new(leader.subscribe());
        let instance = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok());
        let settings = RunSettings {
            client,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            leadership: leadership.clone(),
            concurrency: args.concurrency.max(1),
            backoff: ErrorBackoff::default(),
            reconcile_deadline: args.reconcile_deadline,
            instance: instance.clone(),
        };
        let started = informers.start();
        let mut must_run: Vec<(String, JoinHandle<()>)> = started
            .drivers
            .into_iter()
            .map(|(kind, driver)| (format!("watch of {kind}"), tokio::spawn(driver)))
            .collect();
        tokio::select! {
            () = started.synced => tracing::info!("caches synced"),
            () = shutdown.draining() => {
                must_run.iter().for_each(|(_, t)| t.abort());
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
        let mut task_handles = Vec::new();
        let mut controller_handles = Vec::new();
        for controller in controllers {
            let context = TaskContext {
                client: settings.client.clone(),
                leadership: leadership.clone(),
                events: EventPublisher::new(settings.client.clone(), controller.name, instance.clone()),
            };
            for task in controller.tasks {
                task_handles.push(tokio::spawn(tasks::supervise(
                    task,
                    context.clone(),
                    shutdown.clone(),
                    metrics.clone(),
                )));
            }
            let handle = tokio::spawn((controller.start)(settings.clone()));
            controller_handles.push(handle.abort_handle());
            must_run.push((format!("controller {}", controller.name), handle));
        }
        let abort_handles: Vec<_> = must_run.iter().map(|(_, h)| h.abort_handle()).collect();
        let mut running: FuturesUnordered<_> = must_run
            .into_iter()
            .map(|(what, handle)| async move { (what, handle.await) })
            .collect();

        let stopped_early = tokio::select! {
            biased;
            () = shutdown.draining() => None,
            Some((what, joined)) = running.next() => {
                // A controller ends by itself once draining begins; only an end before is early.
                (!shutdown.is_shutting_down()).then(|| match joined {
                    Err(error) if error.is_panic() => format!("{what} (panicked)"),
                    _ => what,
                })
            }
        };
        if let Some(what) = &stopped_early {
            tracing::error!(%what, "stopped while the manager was running; shutting down to be restarted");
            shutdown.trigger();
        }
        readiness.begin_shutdown();
        tracing::info!("draining: no new reconciles, waiting for running ones");
        let controllers_done = future::join_all(controller_handles.iter().map(|h| {
            let h = h.clone();
            async move {
                while !h.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
        tokio::select! {
            _ = controllers_done => {}
            () = tokio::time::sleep(args.drain_timeout) => tracing::warn!(
                timeout = ?args.drain_timeout, "running reconciles did not finish within the drain timeout; abandoning them"
            ),
            () = shutdown.aborting() => tracing::warn!("aborting without waiting for running reconciles"),
        }
        abort_handles.iter().for_each(|h| h.abort());
        task_handles.iter().for_each(|h| h.abort());
        // Only now that no reconcile runs may a successor start writing.
        leader.send_replace(false);
        let _ = stop_elector.send(());
        if let Some(elector) = elector {
            release_lease(elector).await;
        }
        tracing::info!("manager stopped");
        match stopped_early {
            Some(what) => Err(Error::Stopped(what)),
            None => Ok(()),
        }
    }
}

/// How long releasing the Lease may take: a hung apiserver must not hold the exit past the
/// termination grace period (a successor then waits for the lease to expire instead).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

async fn release_lease(elector: JoinHandle<LeaderElector>) {
    let released = tokio::time::timeout(RELEASE_TIMEOUT, async move {
        match elector.await {
            Ok(mut elector) => elector.release().await,
            Err(error) => Err(Error::LeaderElection(format!("leader election task failed: {error}"))),
        }
    })
    .await;
    match released {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not release the lease; a successor waits for it to expire"),
        Err(_) => tracing::warn!(
            timeout = ?RELEASE_TIMEOUT,
            "releasing the lease timed out; a successor waits for it to expire"
        ),
    }
}
