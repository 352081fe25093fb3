//! Startup, readiness and liveness probes and lifecycle hooks (exec, tcpSocket, httpGet), run from the host against the Pod's
//! address (the host reaches every Pod on the bridge), exec probes inside the container's sandbox.

use std::{net::Ipv4Addr, time::Duration};

use k8s_openapi::{
    api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Probe},
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
    let action = Action {
        exec: probe.exec.as_ref().and_then(|e| e.command.clone()),
        http_get: probe.http_get.as_ref(),
        tcp_socket: probe.tcp_socket.as_ref().map(|t| &t.port),
        sleep: None,
    };
    let timeout = Timing::of(probe).timeout;
    match tokio::time::timeout(timeout, action.run(container, pod_ip, process)).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {timeout:?}")),
    }
}

/// Runs a lifecycle hook (postStart, preStop) to completion; `Err` carries why it failed. The
/// caller bounds it in time (the grace period, for preStop).
pub async fn run_hook(
    handler: &LifecycleHandler,
    container: &Container,
    pod_ip: Ipv4Addr,
    process: &ProcessSpec,
) -> Result<(), String> {
    Action {
        exec: handler.exec.as_ref().and_then(|e| e.command.clone()),
        http_get: handler.http_get.as_ref(),
        tcp_socket: handler.tcp_socket.as_ref().map(|t| &t.port),
        sleep: handler
            .sleep
            .as_ref()
            .map(|s| Duration::from_secs(s.seconds.max(0) as u64)),
    }
    .run(container, pod_ip, process)
    .await
}

/// What probes and hooks share: one of exec, httpGet, tcpSocket (and sleep, for hooks).
struct Action<'a> {
    exec: Option<Vec<String>>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a IntOrString>,
    sleep: Option<Duration>,
}

impl Action<'_> {
    async fn run(&self, container: &Container, pod_ip: Ipv4Addr, process: &ProcessSpec) -> Result<(), String> {
        if let Some(argv) = &self.exec {
            if argv.is_empty() {
                return Err("exec action without a command".to_owned());
            }
            let output = process.exec(argv).await.map_err(|e| e.to_string())?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "command {argv:?} exited with {}: {}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout).trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        } else if let Some(port) = self.tcp_socket {
            let port = resolve_port(port, container)?;
            TcpStream::connect((pod_ip, port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {pod_ip}:{port}: {e}"))
        } else if let Some(http) = self.http_get {
            let port = resolve_port(&http.port, container)?;
            if http.scheme.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("HTTP")) {
                return Err("only HTTP is supported by capstan-localnode's httpGet (no HTTPS)".to_owned());
            }
            let path = http.path.clone().unwrap_or_else(|| "/".to_owned());
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            // Always the Pod's address: a `host` elsewhere would send traffic off the machine, so it
            // only names the Host header.
            let host_header = http.host.clone().unwrap_or_else(|| pod_ip.to_string());
            http_get(pod_ip, port, &path, &host_header, &headers).await
        } else if let Some(delay) = self.sleep {
            tokio::time::sleep(delay).await;
            Ok(())
        } else {
            Err("no handler (exec, tcpSocket or httpGet)".to_owned())
        }
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
async fn http_get(ip: Ipv4Addr, port: u16, path: &str, host: &str, headers: &[(String, String)]) -> Result<(), String> {
    let mut stream = TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("dial tcp {ip}:{port}: {e}"))?;
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let mut request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.20\r\nAccept: */*\r\n");
    for (name, value) in headers {
        if name.contains(['\r', '\n']) || value.contains(['\r', '\n']) {
            return Err(format!("invalid header {name:?}"));
        }
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    // The status line only; `read` may return it in pieces.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 512 {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
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
