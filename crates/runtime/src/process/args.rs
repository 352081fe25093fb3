//! Command-line arguments every manager binary shares; flatten [`RuntimeArgs`] into its own.
use std::{net::SocketAddr, time::Duration};

use crate::{
    process::lease::{self, LeaseConfig},
    process::telemetry::LogFormat,
};

#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Watch and manage objects in this namespace only (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address serving Prometheus metrics on /metrics; port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Address serving /healthz and /readyz; port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,

    /// Log output format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Reconciles one controller runs at once (different objects only).
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,

    /// How long one reconcile may run before it is abandoned and retried with backoff.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub reconcile_deadline: Duration,

    /// How long shutdown waits for running reconciles: below the default 30 s termination grace
    /// period, leaving time to release the Lease.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// The cluster's DNS domain, for the Pod FQDNs controllers render (`<pod>.<svc>.<ns>.svc.<domain>`).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
}

/// Leader election, with controller-runtime's flag names and defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderElectionArgs {
    /// Elect a leader among replicas; only the leader reconciles (followers keep caches warm).
    #[arg(long)]
    pub leader_elect: bool,

    /// Namespace of the Lease (default: the Pod's namespace in-cluster, else `default`).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(long, default_value = "capstan-manager")]
    pub leader_election_id: String,

    /// How long followers wait after the last renewal they saw before taking over.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_elect_lease_duration: Duration,

    /// How long the leader keeps trying to renew before it stops reconciling.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_elect_renew_deadline: Duration,

    /// How often candidates try to acquire and the leader renews.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_elect_retry_period: Duration,
}

impl Default for LeaderElectionArgs {
    fn default() -> Self {
        Self {
            leader_elect: false,
            leader_election_namespace: None,
            leader_election_id: "capstan-manager".to_owned(),
            leader_elect_lease_duration: Duration::from_secs(15),
            leader_elect_renew_deadline: Duration::from_secs(10),
            leader_elect_retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaderElectionArgs {
    /// The Lease settings, or `None` when leader election is off.
    pub fn lease_config(&self) -> Option<LeaseConfig> {
        self.leader_elect.then(|| LeaseConfig {
            name: self.leader_election_id.clone(),
            namespace: self.leader_election_namespace.clone().unwrap_or_else(pod_namespace),
            identity: lease::default_identity(),
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        })
    }
}

fn pod_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|ns| ns.trim().to_owned())
        .ok()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

impl Default for RuntimeArgs {
    fn default() -> Self {
        Self {
            namespace: None,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            health_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            log_format: LogFormat::Text,
            concurrency: 16,
            reconcile_deadline: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(20),
            cluster_domain: "cluster.local".to_owned(),
            leader_election: LeaderElectionArgs::default(),
        }
    }
}
