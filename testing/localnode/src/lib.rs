//! A local node for the local control plane: Pods bound to it run as real host processes, each Pod
//! in its own network, mount and UTS namespaces with an overlay of the host's `/` as its root, with
//! cluster DNS, ClusterIP Services (nftables) and the `kubernetes` Service reaching the apiserver.
//! Test and development infrastructure only; see the crate's README for the image table and limits.
//!
//! ```no_run
//! # async fn demo() -> Result<(), capstan_localnode::Error> {
//! use capstan_localnode::{LocalNode, LocalNodeConfig};
//! let node = LocalNode::start(LocalNodeConfig::new("/tmp/kubeconfig")).await?;
//! // … Pods bound to `capstan-local` now run …
//! node.stop().await
//! # }
//! ```

mod agent;
mod container;
mod context;
mod dns;
mod error;
mod host;
mod logs;
mod network;
mod node;
mod pod;
mod pod_data;
mod prerequisites;
mod probes;
mod registry;
mod resolv;
mod sandbox;
mod scheduler;
mod security;
mod services;
mod status;
mod supervision;
mod volumes;

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::sync::{oneshot, watch};

pub use error::Error;
pub use prerequisites::{PACKAGES, check_prerequisites};

use crate::{context::Settings, network::Cidr, registry::Registry};

/// Locks `mutex`, recovering the data if a panicking thread poisoned it: every critical section in
/// the local node (and the test environment built on it) leaves its data consistent. Controllers
/// use `capstan_runtime::lock`, the same rule in the crate they depend on.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The prefix of every host object the node creates (interfaces, network namespaces, nftables table).
pub const HOST_PREFIX: &str = host::PREFIX;

/// How to run the local node.
#[derive(Debug, Clone)]
pub struct LocalNodeConfig {
    /// The Node name (`capstan-local`); with several nodes, `<name>-1` … `<name>-N`.
    pub node_name: String,
    pub nodes: u32,
    /// Pod addresses; the first host address belongs to the bridge (gateway, DNS, API relay).
    pub pod_cidr: String,
    /// The apiserver's `--service-cluster-ip-range`, routed to the bridge and rejected when unserved.
    pub service_cidr: String,
    pub cluster_domain: String,
    /// Pod roots, volumes and logs; removed on stop (and when a later run finds it left over).
    pub state_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The first restart back-off of a crashing container, doubled per restart up to 5 minutes.
    /// The kubelet starts at 10 s; tests may want 1 s.
    pub backoff_initial: Duration,
    /// The longest a container gets between SIGTERM and SIGKILL when the node stops (a deleted Pod
    /// gets its full grace period).
    pub stop_grace_cap: Duration,
    /// Extra image table entries: an image whose name (last path component, no tag) starts with the
    /// prefix runs this host binary, copied into the Pod's root at `/usr/local/bin/<file name>`.
    pub images: Vec<(String, PathBuf)>,
    /// Run `privileged` containers (every capability, no `no_new_privs`) and hostPath volumes.
    /// Off by default: either one gives a Pod the developer's machine.
    pub allow_privileged: bool,
    /// Start against an apiserver that is not on loopback. Off by default: the node runs whatever
    /// a cluster's Pods say, as root, on this machine, and would register itself in that cluster.
    pub dangerously_allow_remote_apiserver: bool,
    /// The size of the tmpfs holding Pod roots' upper layers, emptyDirs, claims and logs, so a
    /// Pod filling it cannot fill the host's `/run`.
    pub state_size_mib: u64,
    /// A container's log is rotated (one previous file kept) when it grows past this.
    pub log_max_bytes: u64,
}

impl LocalNodeConfig {
    /// The defaults, with this kubeconfig.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> LocalNodeConfig {
        LocalNodeConfig {
            node_name: "capstan-local".into(),
            nodes: 1,
            pod_cidr: "10.244.0.0/16".into(),
            service_cidr: "10.96.0.0/12".into(),
            cluster_domain: "cluster.local".into(),
            state_dir: PathBuf::from("/run/capstan-localnode"),
            kubeconfig: kubeconfig.into(),
            backoff_initial: Duration::from_secs(10),
            stop_grace_cap: Duration::from_secs(5),
            images: Vec::new(),
            allow_privileged: false,
            dangerously_allow_remote_apiserver: false,
            state_size_mib: 2048,
            log_max_bytes: 10 * 1024 * 1024,
        }
    }

    fn settings(&self) -> Result<Settings, Error> {
        if self.nodes == 0 {
            return Err(Error::Config("nodes must be at least 1".into()));
        }
        if self.node_name.is_empty() {
            return Err(Error::Config("node_name must not be empty".into()));
        }
        Ok(Settings {
            node_names: node::node_names(&self.node_name, self.nodes),
            pod_cidr: Cidr::parse(&self.pod_cidr)?,
            service_cidr: Cidr::parse(&self.service_cidr)?,
            cluster_domain: self.cluster_domain.trim_matches('.').to_owned(),
            state_dir: self.state_dir.clone(),
            kubeconfig: self.kubeconfig.clone(),
            backoff_initial: self.backoff_initial.max(Duration::from_millis(100)),
            stop_grace_cap: self.stop_grace_cap,
            images: self.images.clone(),
            allow_privileged: self.allow_privileged,
            allow_remote_apiserver: self.dangerously_allow_remote_apiserver,
            state_size_mib: self.state_size_mib.max(64),
            log_max_bytes: self.log_max_bytes.max(4096),
        })
    }
}

/// A running local node. The agent runs on a thread of its own (its own tokio runtime), so the
/// handle works from any runtime, and every process it starts dies with that thread. Dropping the
/// handle stops the node like [`LocalNode::stop`], blocking.
pub struct LocalNode {
    registry: Arc<Registry>,
    state_dir: PathBuf,
    node_names: Vec<String>,
    /// The Pods' DNS server: the bridge's gateway address, port 53.
    dns_server: std::net::SocketAddr,
    shutdown: watch::Sender<bool>,
    outcome: Arc<Mutex<Option<Result<(), Error>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LocalNode {
    /// Checks prerequisites, removes leftovers of a crashed run, brings the node up and returns
    /// once its Nodes are registered Ready and DNS, Services and the API relay serve.
    pub async fn start(config: LocalNodeConfig) -> Result<LocalNode, Error> {
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(Error::NotRoot(uid.as_raw()));
        }
        check_prerequisites().map_err(Error::Prerequisites)?;
        let settings = config.settings()?;
        // One agent per state directory (and, as names on the host are fixed, per host): held by the
        // agent thread until everything it made is removed.
        let state_dir_lock = host::lock_state_dir(&settings.state_dir)?;
        let registry = Arc::new(Registry::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let outcome = Arc::new(Mutex::new(None));
        let agent_outcome = outcome.clone();
        let agent_registry = registry.clone();
        let agent_settings = settings.clone();
        let thread = std::thread::Builder::new()
            .name("capstan-localnode".into())
            .spawn(move || {
                let _state_dir_lock = state_dir_lock;
                let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(agent::run(agent_settings, agent_registry, shutdown_rx, ready_tx)),
                    Err(e) => Err(Error::Other(format!("a tokio runtime: {e}"))),
                };
                *lock(&agent_outcome) = Some(result);
            })
            .map_err(|e| Error::Other(format!("cannot start the agent thread: {e}")))?;
        let node = LocalNode {
            registry,
            state_dir: settings.state_dir.clone(),
            node_names: settings.node_names.clone(),
            dns_server: std::net::SocketAddr::from((settings.pod_cidr.gateway(), 53)),
            shutdown,
            outcome,
            thread: Mutex::new(Some(thread)),
        };
        match ready_rx.await {
            Ok(Ok(())) => Ok(node),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                node.stop_blocking();
                Err(node
                    .take_outcome()
                    .err()
                    .unwrap_or_else(|| Error::Stopped("the agent thread ended during start-up".into())))
            }
        }
    }

    /// Stops every Pod's processes (SIGTERM, then SIGKILL after the capped grace period), removes
    /// the Node objects and everything created on the host.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.take_outcome()
    }

    /// Like [`LocalNode::stop`], blocking, through a shared reference: for a node kept in a
    /// `static` and stopped from an exit hook. Does nothing the second time.
    pub fn stop_blocking(&self) {
        let _ = self.shutdown.send(true);
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn take_outcome(&self) -> Result<(), Error> {
        lock(&self.outcome).take().unwrap_or(Ok(()))
    }

    /// The names of the Node objects this agent registered.
    pub fn node_names(&self) -> &[String] {
        &self.node_names
    }

    /// The file holding a container's stdout and stderr (all its restarts, appended), kept until
    /// the node stops, also after the Pod is gone.
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
        let path = registry::log_path(&self.state_dir, namespace, pod, container);
        path.exists().then_some(path)
    }

    /// Where the Pods' DNS answers (the bridge's gateway, reachable from the host): a test
    /// resolves Pod FQDNs there the way a Pod does, e.g. the hostnames Sentinel announces.
    pub fn dns_server(&self) -> std::net::SocketAddr {
        self.dns_server
    }

    /// The Pod's network namespace (for `ip netns exec <name> …`).
    pub fn pod_netns(&self, namespace: &str, pod: &str) -> Option<String> {
        self.registry.get(namespace, pod)?.network.map(|n| n.netns)
    }

    /// The pid of a running container's main process.
    pub fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> Option<u32> {
        self.registry.get(namespace, pod)?.containers.get(container)?.pid
    }

    /// Takes the Pod off the network: its link loses carrier, it keeps its address.
    pub async fn cut_network(&self, namespace: &str, pod: &str) -> Result<(), Error> {
        self.network(namespace, pod)?.cut().await
    }

    /// Undoes [`LocalNode::cut_network`].
    pub async fn restore_network(&self, namespace: &str, pod: &str) -> Result<(), Error> {
        self.network(namespace, pod)?.restore().await
    }

    fn network(&self, namespace: &str, pod: &str) -> Result<network::PodNetwork, Error> {
        self.registry
            .get(namespace, pod)
            .and_then(|e| e.network)
            .ok_or_else(|| Error::NoSuchPod {
                namespace: namespace.into(),
                pod: pod.into(),
            })
    }

    /// Sends `signal` (e.g. `libc::SIGKILL` = 9) to a container's main process; the node then
    /// treats the exit like any other (restart policy, back-off, status).
    pub async fn kill_container(&self, namespace: &str, pod: &str, container: &str, signal: i32) -> Result<(), Error> {
        let pid = self
            .container_pid(namespace, pod, container)
            .ok_or_else(|| Error::NoSuchContainer {
                namespace: namespace.into(),
                pod: pod.into(),
                container: container.into(),
            })?;
        let signal =
            nix::sys::signal::Signal::try_from(signal).map_err(|e| Error::Other(format!("signal {signal}: {e}")))?;
        let pid = i32::try_from(pid).map_err(|e| Error::Other(e.to_string()))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|e| Error::Other(format!("kill {pid}: {e}")))
    }

    /// Runs a command in a container's sandbox as the container's user, with its environment (like
    /// `kubectl exec`), and returns its output. Programs resolve on the host's PATH.
    pub async fn exec(&self, namespace: &str, pod: &str, container: &str, argv: &[&str]) -> Result<Output, Error> {
        let entry = self.registry.get(namespace, pod).ok_or_else(|| Error::NoSuchPod {
            namespace: namespace.into(),
            pod: pod.into(),
        })?;
        let process = entry
            .containers
            .get(container)
            .map(|c| c.process.beside(c.pid))
            .ok_or_else(|| Error::NoSuchContainer {
                namespace: namespace.into(),
                pod: pod.into(),
                container: container.into(),
            })?;
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        process.exec(&argv).await.map_err(|e| Error::Command {
            command: argv.join(" "),
            message: e.to_string(),
        })
    }

    /// The state directory (Pod roots, volumes, logs).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.stop_blocking();
    }
}

/// What Services cost in `nft` processes, counted since this process started (all local nodes it
/// ran together): the table is loaded once per change on the host, never into Pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicesActivity {
    /// Times the Services table changed and was loaded.
    pub table_changes: u64,
    /// `nft` processes started, for any purpose (loads, start-up and shutdown clean-up).
    pub nft_processes: u64,
}

/// The current [`ServicesActivity`] counters.
pub fn services_activity() -> ServicesActivity {
    ServicesActivity {
        table_changes: services::table_changes(),
        nft_processes: host::nft_processes(),
    }
}

/// What is left on the host by any run of the local node: our interfaces, network namespaces and
/// nftables table. Empty after a clean stop.
pub fn host_leftovers() -> Vec<String> {
    let mut left: Vec<String> = host::our_links()
        .into_iter()
        .map(|l| format!("interface {l}"))
        .collect();
    left.extend(host::our_netns().into_iter().map(|n| format!("network namespace {n}")));
    if host::run_sync("nft", &["list", "table", "ip", host::NFT_TABLE]).is_ok() {
        left.push(format!("nftables table ip {}", host::NFT_TABLE));
    }
    left
}
