//! Shared by the integration tests: one control plane and one local node per test binary, the
//! opening that skips or fails on missing prerequisites, polling with measured time, and tiny
//! protocol clients.
#![allow(dead_code)]

use std::{
    future::Future,
    time::{Duration, Instant},
};

use capstan_localnode::LocalNode;
use capstan_testenv::ControlPlane;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A test on the shared local node: the control plane's client, the test's namespace, the node.
pub struct NodeTest {
    pub client: Client,
    pub ns: String,
    pub node: &'static LocalNode,
}

/// The opening of a local-node test: `None` when the machine cannot run the local node (the test
/// is reported SKIPPED with the reason, or fails under `CI=true`); otherwise a fresh namespace
/// named after `prefix`, with the shared node running.
pub async fn on_local_node(test: &str, prefix: &str) -> Option<NodeTest> {
    let (client, ns) = namespace_for_own_node(test, prefix).await?;
    let node = node().await;
    Some(NodeTest { client, ns, node })
}

/// As [`on_local_node`], without starting the shared node: for a test that starts its own.
pub async fn namespace_for_own_node(test: &str, prefix: &str) -> Option<(Client, String)> {
    if !capstan_testenv::local_node_available(test) {
        return None;
    }
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, prefix).await.expect("namespace");
    Some((client, ns))
}

/// The test binary's shared local node, started on first use and stopped when the binary exits.
pub async fn node() -> &'static LocalNode {
    static LOGGING: std::sync::Once = std::sync::Once::new();
    LOGGING.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "capstan_localnode=info".into()),
            )
            .try_init();
    });
    tokio::task::spawn_blocking(ControlPlane::shared_local_node)
        .await
        .expect("start the local node")
}

/// Runs a command in a Pod's container, returning stdout and stderr together.
pub async fn exec_in(namespace: &str, pod: &str, container: &str, argv: &[&str]) -> Result<String, String> {
    let output = node()
        .await
        .exec(namespace, pod, container, argv)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// Polls `check` every 200 ms until it yields `Some`, failing after `timeout` with the last state.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    let mut last;
    loop {
        match check().await {
            Ok(value) => {
                eprintln!("{what}: after {:.2}s", started.elapsed().as_secs_f64());
                return value;
            }
            Err(state) => last = state,
        }
        if started.elapsed() > timeout {
            panic!("{what}: not within {timeout:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn apply_yaml(client: &Client, namespace: &str, yaml: &str) {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::to_value(<serde_yaml::Value as serde::Deserialize>::deserialize(doc).expect("yaml"))
            .expect("yaml as json");
        let obj: kube::api::DynamicObject = serde_json::from_value(value).expect("object");
        let gvk = kube::api::GroupVersionKind::try_from(obj.types.clone().expect("types")).expect("gvk");
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.expect("discovery");
        let api: Api<kube::api::DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let name = obj.metadata.name.clone().expect("name");
        api.patch(
            &name,
            &PatchParams::apply("capstan-localnode-test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply");
    }
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

/// Running, Ready Pods matching `selector` (not being deleted).
pub async fn ready_pods(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && is_ready(p))
        .collect()
}

pub fn describe(pods: &[Pod]) -> String {
    pods.iter()
        .map(|p| {
            format!(
                "{} {:?} ready={} ip={:?}",
                p.metadata.name.as_deref().unwrap_or_default(),
                p.status.as_ref().and_then(|s| s.phase.clone()),
                is_ready(p),
                pod_ip(p)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends memcached's `version` command and returns the answer line.
pub async fn memcached_version(address: &str) -> Result<String, String> {
    let io = async {
        let mut stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        stream.write_all(b"version\r\n").await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 128];
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(3), io)
        .await
        .map_err(|_| format!("{address}: timed out"))?
}

/// One Redis command over RESP; returns the reply's payload as text.
pub async fn redis(address: &str, args: &[&str]) -> Result<String, String> {
    let io = async {
        let mut stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request += &format!("${}\r\n{arg}\r\n", arg.len());
        }
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if let Some(payload) = complete(&reply) {
                return Ok(payload);
            }
        }
        Err(format!("connection closed: {:?}", String::from_utf8_lossy(&reply)))
    };
    tokio::time::timeout(Duration::from_secs(3), io)
        .await
        .map_err(|_| format!("{address}: timed out"))?
}

fn complete(reply: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(reply);
    let line_end = text.find("\r\n")?;
    let head = &text[..line_end];
    match head.chars().next()? {
        '+' | ':' => Some(head[1..].to_owned()),
        '-' => Some(head.to_owned()),
        '$' => {
            let len: i64 = head[1..].parse().ok()?;
            if len < 0 {
                return Some(String::new());
            }
            let body = &reply[line_end + 2..];
            (body.len() >= len as usize).then(|| String::from_utf8_lossy(&body[..len as usize]).into_owned())
        }
        _ => Some(text.into_owned()),
    }
}
