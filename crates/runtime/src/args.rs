//! Command-line arguments every manager binary shares; flatten [`RuntimeArgs`] into its own.
use std::net::SocketAddr;

use crate::telemetry::LogFormat;

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
}

impl Default for RuntimeArgs {
    fn default() -> Self {
        Self {
            namespace: None,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            health_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            log_format: LogFormat::Text,
            concurrency: 16,
        }
    }
}
