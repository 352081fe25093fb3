//! The agent: brings up the host side (bridge, nftables, DNS, API relay, Node objects), then
//! schedules Pods, runs a worker per Pod bound to its nodes and keeps Services' rules current,
//! until shutdown, when it stops every Pod and removes everything it made.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::{
    Api, Client,
    api::DeleteParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::{
    net::TcpListener,
    sync::{Notify, oneshot, watch},
    task::JoinHandle,
};

use crate::{
    Error,
    context::{Ctx, Settings},
    dns, host,
    network::{self, IpAllocator},
    node, pod,
    registry::Registry,
    scheduler, services,
};

struct PodWorker {
    updates: watch::Sender<Option<Pod>>,
    task: JoinHandle<()>,
}

/// Runs the agent; `ready` is answered once the node is up (or failed to come up).
pub async fn run(
    settings: Settings,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<Result<(), Error>>,
) -> Result<(), Error> {
    let state_dir = settings.state_dir.clone();
    // The apiserver is checked before anything on the host is touched.
    let connected = client(&settings.kubeconfig, settings.allow_remote_apiserver).await;
    let (client, apiserver) = match connected {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(Error::Other(e.to_string())));
            return Err(e);
        }
    };
    let stale = {
        let dir = state_dir.clone();
        tokio::task::spawn_blocking(move || host::remove_all(&dir))
            .await
            .unwrap_or_default()
    };
    if !stale.is_empty() {
        tracing::warn!(?stale, "some leftovers of an earlier run could not be removed");
    }
    let started = start(settings, registry, shutdown.clone(), client, apiserver).await;
    let (ctx, background) = match started {
        Ok(up) => {
            let _ = ready.send(Ok(()));
            up
        }
        Err(e) => {
            let dir = state_dir.clone();
            let _ = tokio::task::spawn_blocking(move || host::remove_all(&dir)).await;
            let _ = ready.send(Err(Error::Other(e.to_string())));
            return Err(e);
        }
    };
    let result = main_loop(ctx.clone(), &mut shutdown).await;
    for task in background {
        task.abort();
    }
    if let Err(e) = node::deregister(&ctx.client, &ctx.settings.node_names).await {
        tracing::warn!(error = %e, "cannot remove the Node objects");
    }
    let problems = tokio::task::spawn_blocking(move || host::remove_all(&state_dir))
        .await
        .unwrap_or_default();
    if !problems.is_empty() {
        tracing::warn!(?problems, "cleanup left something behind");
    }
    tracing::info!("local node stopped");
    result
}

/// Whether an apiserver host is this machine's loopback.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn client(kubeconfig: &std::path::Path, allow_remote: bool) -> Result<(Client, String), Error> {
    let err = |message: String| Error::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        message,
    };
    let raw = Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    let host = config.cluster_url.host().unwrap_or_default().to_owned();
    let port = config.cluster_url.port_u16().unwrap_or(443);
    if !is_loopback(&host) {
        if !allow_remote {
            return Err(Error::RemoteApiserver {
                server: config.cluster_url.to_string(),
                kubeconfig: kubeconfig.to_path_buf(),
            });
        }
        tracing::warn!(server = %config.cluster_url, "running against an apiserver that is not on loopback");
    }
    let client = Client::try_from(config)?;
    Ok((client, format!("{host}:{port}")))
}

async fn start(
    mut settings: Settings,
    registry: Arc<Registry>,
    shutdown: watch::Receiver<bool>,
    client: Client,
    apiserver: String,
) -> Result<(Arc<Ctx>, Vec<JoinHandle<()>>), Error> {
    let marker = settings.marker();
    host::check_no_foreign_bridge(&marker)?;
    match services::learn_service_cidr(&client).await {
        Ok(cidr) => {
            tracing::info!(configured = %settings.service_cidr, apiserver = %cidr, "using the apiserver's Service range");
            settings.service_cidr = cidr;
        }
        Err(e) => {
            tracing::warn!(error = %e, range = %settings.service_cidr, "cannot learn the Service range; using the configured one")
        }
    }
    host::mount_state_dir(&settings.state_dir, settings.state_size_mib).await?;
    network::setup_bridge(&settings.pod_cidr, &settings.service_cidr, &marker).await?;
    let gateway = settings.pod_cidr.gateway();

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        allocator: IpAllocator::new(settings.pod_cidr),
        settings,
        registry,
        kubernetes_ip: Mutex::new(None),
        shutdown,
    });
    let mut background = Vec::new();

    // Services and Endpoints: one reflector each, feeding DNS and the nftables rules.
    let services_changed = Arc::new(Notify::new());
    let (services, services_writer) = reflector::store::<Service>();
    let (endpoints, endpoints_writer) = reflector::store::<Endpoints>();
    for task in [
        spawn_reflector(
            Api::<Service>::all(client.clone()),
            services_writer,
            services_changed.clone(),
        ),
        spawn_reflector(
            Api::<Endpoints>::all(client.clone()),
            endpoints_writer,
            services_changed.clone(),
        ),
    ] {
        background.push(task);
    }
    let wait_ready = async {
        services
            .wait_until_ready()
            .await
            .map_err(|e| Error::Other(e.to_string()))?;
        endpoints
            .wait_until_ready()
            .await
            .map_err(|e| Error::Other(e.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(30), wait_ready)
        .await
        .map_err(|_| Error::Other("Services and Endpoints were not listed within 30s".into()))??;
    let mut table = services::Table::default();
    table
        .update(services::ruleset(
            &services,
            &endpoints,
            &ctx.settings.pod_cidr,
            &ctx.settings.service_cidr,
            &marker.text,
        ))
        .await?;

    let dns = dns::serve(
        dns::ClusterDns {
            domain: ctx.settings.cluster_domain.clone(),
            services: services.clone(),
            endpoints: endpoints.clone(),
        },
        gateway,
    )
    .await?;
    background.push(tokio::spawn(async move {
        let mut dns = dns;
        if let Err(e) = dns.block_until_done().await {
            tracing::warn!(error = %e, "the DNS server stopped");
        }
    }));
    let relay = TcpListener::bind((gateway, services::API_RELAY_PORT))
        .await
        .map_err(|e| Error::Other(format!("the API relay on {gateway}:{}: {e}", services::API_RELAY_PORT)))?;
    background.push(tokio::spawn(services::api_relay(relay, apiserver)));
    services::ensure_kubernetes_endpoints(&client, &endpoints, gateway).await?;
    background.push(tokio::spawn(sync_services(
        ctx.clone(),
        table,
        services,
        endpoints,
        services_changed,
        gateway,
    )));

    node::register(&client, &ctx.settings.node_names, gateway).await?;
    background.push(tokio::spawn(heartbeats(ctx.clone(), gateway)));
    tracing::info!(nodes = ?ctx.settings.node_names, bridge = host::BRIDGE, %gateway, "local node up");
    Ok((ctx, background))
}

fn spawn_reflector<K>(api: Api<K>, writer: reflector::store::Writer<K>, changed: Arc<Notify>) -> JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "watch error; retrying");
            }
            changed.notify_one();
        }
    })
}

/// Reloads the Services table on the host when it changes (Pods have no copy: see `services`), and
/// keeps the `kubernetes` Endpoints pointing at the relay.
async fn sync_services(
    ctx: Arc<Ctx>,
    mut table: services::Table,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    changed: Arc<Notify>,
    gateway: Ipv4Addr,
) {
    loop {
        changed.notified().await;
        // Let a burst of watch events settle into one reload.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let kubernetes_ip = services
            .state()
            .into_iter()
            .find(|s| {
                s.metadata.namespace.as_deref() == Some("default") && s.metadata.name.as_deref() == Some("kubernetes")
            })
            .and_then(|s| s.spec.as_ref().and_then(|s| s.cluster_ip.clone()));
        *crate::lock(&ctx.kubernetes_ip) = kubernetes_ip;
        let rules = services::ruleset(
            &services,
            &endpoints,
            &ctx.settings.pod_cidr,
            &ctx.settings.service_cidr,
            &ctx.settings.marker().text,
        );
        if let Err(e) = table.update(rules).await {
            tracing::warn!(error = %e, "cannot load the Services table on the host");
        }
        if let Err(e) = services::ensure_kubernetes_endpoints(&ctx.client, &endpoints, gateway).await {
            tracing::warn!(error = %e, "cannot point default/kubernetes at the API relay");
        }
    }
}

async fn heartbeats(ctx: Arc<Ctx>, gateway: Ipv4Addr) {
    let mut since_status = Duration::ZERO;
    loop {
        tokio::time::sleep(node::RENEW_EVERY).await;
        since_status += node::RENEW_EVERY;
        for name in &ctx.settings.node_names {
            if let Err(e) = node::renew_lease(&ctx.client, name).await {
                tracing::warn!(node = %name, error = %e, "cannot renew the node Lease");
            }
            if since_status >= node::STATUS_EVERY
                && let Err(e) = node::heartbeat(&ctx.client, name, gateway).await
            {
                tracing::warn!(node = %name, error = %e, "cannot update the Node status");
            }
        }
        if since_status >= node::STATUS_EVERY {
            since_status = Duration::ZERO;
        }
    }
}

struct Pods {
    ctx: Arc<Ctx>,
    /// Every Pod in the cluster, for scheduling decisions.
    all: HashMap<String, Pod>,
    workers: HashMap<String, PodWorker>,
    /// Pods whose worker has ended: never started again.
    done: HashSet<String>,
    node_labels: Vec<(String, BTreeMap<String, String>)>,
}

async fn main_loop(ctx: Arc<Ctx>, shutdown: &mut watch::Receiver<bool>) -> Result<(), Error> {
    let node_labels = ctx
        .settings
        .node_names
        .iter()
        .map(|n| {
            (
                n.clone(),
                BTreeMap::from([
                    ("kubernetes.io/hostname".to_owned(), n.clone()),
                    ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                    ("node.capstan.dev/local".to_owned(), "true".to_owned()),
                ]),
            )
        })
        .collect();
    let mut pods = Pods {
        ctx: ctx.clone(),
        all: HashMap::new(),
        workers: HashMap::new(),
        done: HashSet::new(),
        node_labels,
    };
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut retry = tokio::time::interval(Duration::from_secs(5));
    let mut initial = true;
    let mut seen = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            _ = retry.tick() => pods.retry_scheduling().await,
            event = stream.try_next() => match event {
                Ok(Some(watcher::Event::Init)) => seen.clear(),
                Ok(Some(watcher::Event::InitApply(pod))) => {
                    seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                    pods.apply(pod, initial).await;
                }
                Ok(Some(watcher::Event::InitDone)) => {
                    let gone: Vec<String> = pods.all.keys().filter(|uid| !seen.contains(*uid)).cloned().collect();
                    for uid in gone {
                        pods.delete(&uid);
                    }
                    initial = false;
                }
                Ok(Some(watcher::Event::Apply(pod))) => pods.apply(pod, false).await,
                Ok(Some(watcher::Event::Delete(pod))) => pods.delete(&pod.metadata.uid.clone().unwrap_or_default()),
                Ok(None) => return Err(Error::Stopped("the Pod watch ended".into())),
                Err(e) => tracing::debug!(error = %e, "Pod watch error; retrying"),
            },
        }
    }
    // Workers see the shutdown themselves; wait for them to stop their processes.
    let workers: Vec<JoinHandle<()>> = pods.workers.into_values().map(|w| w.task).collect();
    let deadline = ctx.settings.stop_grace_cap + Duration::from_secs(10);
    if tokio::time::timeout(deadline, futures::future::join_all(workers))
        .await
        .is_err()
    {
        tracing::warn!("some Pods did not stop in time; their processes are killed with the sweep");
    }
    Ok(())
}

impl Pods {
    fn ours(&self, pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|n| self.ctx.settings.node_names.contains(n))
    }

    async fn apply(&mut self, pod: Pod, initial: bool) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.all.insert(uid.clone(), pod.clone());
        if scheduler::wants(&pod) {
            self.schedule(&pod).await;
            return;
        }
        if !self.ours(&pod) {
            return;
        }
        if let Some(worker) = self.workers.get(&uid) {
            let _ = worker.updates.send(Some(pod));
            return;
        }
        if self.done.contains(&uid) {
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        let ran_before = pod.status.as_ref().is_some_and(|s| s.host_ip.is_some());
        if pod.metadata.deletion_timestamp.is_some() || (initial && ran_before) {
            // Never ran here, or ran under an earlier agent whose processes are gone: remove it
            // so its controller replaces it.
            self.force_delete(&pod).await;
            self.done.insert(uid);
            return;
        }
        if phase == "Succeeded" || phase == "Failed" {
            return;
        }
        let (updates, receiver) = watch::channel(Some(pod.clone()));
        let task = tokio::spawn(pod::run(self.ctx.clone(), pod, receiver));
        self.workers.insert(uid, PodWorker { updates, task });
    }

    fn delete(&mut self, uid: &str) {
        self.all.remove(uid);
        // A deleted Pod's uid never comes back: forget it.
        self.done.remove(uid);
        if let Some(worker) = self.workers.get(uid) {
            let _ = worker.updates.send(None);
        }
        self.reap();
    }

    fn reap(&mut self) {
        let finished: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.task.is_finished())
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in finished {
            self.workers.remove(&uid);
            // Remembered only while the Pod object exists (a terminal Pod is kept by the API).
            if self.all.contains_key(&uid) {
                self.done.insert(uid);
            }
        }
    }

    async fn force_delete(&self, pod: &Pod) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!(pod = %format!("{namespace}/{name}"), "removed a Pod this agent does not run"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "cannot remove a Pod"),
        }
    }

    async fn schedule(&mut self, pod: &Pod) {
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        match scheduler::choose(pod, &self.node_labels, self.all.values()) {
            Ok(node) => match scheduler::bind(&self.ctx.client, pod, &node).await {
                Ok(()) => {
                    tracing::info!(pod = %key, %node, "bound");
                    // Counted at once, so the next Pod of a burst sees it when spreading.
                    let mut bound = pod.clone();
                    if let Some(spec) = bound.spec.as_mut() {
                        spec.node_name = Some(node);
                    }
                    self.all.insert(pod.metadata.uid.clone().unwrap_or_default(), bound);
                }
                Err(e) => tracing::debug!(pod = %key, error = %e, "binding failed; will retry"),
            },
            Err(message) => {
                tracing::info!(pod = %key, %message, "unschedulable");
                if let Err(e) = scheduler::mark_unschedulable(&self.ctx.client, pod, &message).await {
                    tracing::debug!(pod = %key, error = %e, "cannot record the unschedulable condition");
                }
            }
        }
    }

    async fn retry_scheduling(&mut self) {
        self.reap();
        let pending: Vec<Pod> = self.all.values().filter(|p| scheduler::wants(p)).cloned().collect();
        for pod in pending {
            self.schedule(&pod).await;
        }
    }
}
