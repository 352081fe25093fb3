//! What the agent and every Pod worker share: the validated settings and the runtime context.
//! Workers depend on this, never on the agent itself.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::Client;
use tokio::sync::watch;

use crate::{
    host,
    network::{Cidr, IpAllocator},
    registry::Registry,
};

/// Everything the agent runs with, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_names: Vec<String>,
    pub pod_cidr: Cidr,
    pub service_cidr: Cidr,
    pub cluster_domain: String,
    pub state_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub backoff_initial: Duration,
    pub stop_grace_cap: Duration,
    pub images: Vec<(String, PathBuf)>,
    pub allow_privileged: bool,
    pub allow_remote_apiserver: bool,
    pub state_size_mib: u64,
    pub log_max_bytes: u64,
}

impl Settings {
    pub fn marker(&self) -> host::Marker {
        host::Marker::new(&self.state_dir)
    }
}

/// What every Pod worker shares.
pub struct Ctx {
    pub client: Client,
    pub settings: Settings,
    pub allocator: IpAllocator,
    pub registry: Arc<Registry>,
    /// The `kubernetes` Service's address, for containers' KUBERNETES_SERVICE_HOST.
    pub kubernetes_ip: Mutex<Option<String>>,
    pub shutdown: watch::Receiver<bool>,
}
