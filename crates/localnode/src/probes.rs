//! Readiness and liveness probes (exec, tcpSocket, httpGet), run from the host against the Pod's
//! address (the host reaches every Pod on the bridge), exec probes inside the container's sandbox.

use std::{net::Ipv4Addr, time::Duration};

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::container::ProcessSpec;

/// Timing of a probe, with the kubelet's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: u64| Duration::from_secs(v.map_or(default, |v| v.max(0) as u64));
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.map_or(1, |v| v.max(1) as u32),
            failure_threshold: probe.failure_threshold.map_or(3, |v| v.max(1) as u32),
        }
    }
}

/// Runs one probe; `Err` carries why it failed.
pub async fn check(
    probe: &Probe,
    container: &Container,
    pod_ip: Ipv4Addr,
    process: &ProcessSpec,
) -> Result<(), String> {
    let timeout = Timing::of(probe).timeout;
    let attempt = async {
        if let Some(exec) = &probe.exec {
            let argv = exec.command.clone().unwrap_or_default();
            if argv.is_empty() {
                return Err("exec probe without a command".to_owned());
            }
            let output = process.exec(&argv).await.map_err(|e| e.to_string())?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "exec probe failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout).trim()
                ))
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = resolve_port(&tcp.port, container)?;
            TcpStream::connect((pod_ip, port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {pod_ip}:{port}: {e}"))
        } else if let Some(http) = &probe.http_get {
            let port = resolve_port(&http.port, container)?;
            let path = http.path.clone().unwrap_or_else(|| "/".to_owned());
            http_get(pod_ip, port, &path).await
        } else {
            Err("probe has no handler (exec, tcpSocket or httpGet)".to_owned())
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {timeout:?}")),
    }
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("container has no port named {name}")),
    }
}

/// A minimal HTTP/1.0 GET: success is a status from 200 to 399, as for the kubelet.
async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("dial tcp {ip}:{port}: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.20\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {line:?}"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}
