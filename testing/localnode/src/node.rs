//! The Node objects this agent stands for: registered Ready with the host's capacity, kept alive by
//! Leases in `kube-node-lease` (the node lifecycle controller's heartbeat), removed on exit.

use std::{net::Ipv4Addr, time::Duration};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{Error, status::now};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
/// A kubelet renews at a quarter of the lease duration.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Ready heartbeats on the Node itself, far rarer than Lease renewals, as a kubelet does.
pub const STATUS_EVERY: Duration = Duration::from_secs(60);

/// The names of `count` nodes: `name` alone for one, `name-1`… `name-N` for several.
pub fn node_names(name: &str, count: u32) -> Vec<String> {
    if count <= 1 {
        vec![name.to_owned()]
    } else {
        (1..=count).map(|i| format!("{name}-{i}")).collect()
    }
}

fn labels(name: &str) -> serde_json::Value {
    json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "beta.kubernetes.io/os": "linux",
        "node.capstan.dev/local": "true",
    })
}

fn host_capacity() -> (String, String) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "1048576".into());
    (cpus.to_string(), format!("{mem_kib}Ki"))
}

fn status(name: &str, address: Ipv4Addr) -> serde_json::Value {
    let (cpu, memory) = host_capacity();
    let capacity = json!({ "cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "10Gi" });
    let now = now();
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            { "type": "Ready", "status": "True", "reason": "KubeletReady",
              "message": "capstan-localnode is posting ready status",
              "lastHeartbeatTime": now, "lastTransitionTime": now },
            { "type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
              "lastHeartbeatTime": now, "lastTransitionTime": now },
            { "type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
              "lastHeartbeatTime": now, "lastTransitionTime": now },
            { "type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
              "lastHeartbeatTime": now, "lastTransitionTime": now },
        ],
        "addresses": [
            { "type": "InternalIP", "address": address.to_string() },
            { "type": "Hostname", "address": name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": 0 } },
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": kernel_version(), "osImage": "capstan-localnode", "containerRuntimeVersion": "capstan://0.1.0",
            "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
            "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
    })
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Creates (or takes over) the Node objects and marks them Ready.
pub async fn register(client: &Client, names: &[String], address: Ipv4Addr) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    for name in names {
        let node: Node = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": labels(name) },
            "spec": {},
        }))
        .map_err(|e| Error::Other(e.to_string()))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // A previous run's Node: take it over, dropping taints the node lifecycle
                // controller put there while nobody renewed its Lease.
                let patch = json!({ "metadata": { "labels": labels(name) }, "spec": { "taints": null, "unschedulable": null } });
                nodes
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        heartbeat(client, name, address).await?;
        renew_lease(client, name).await?;
    }
    Ok(())
}

/// Refreshes the Node's conditions (Ready) and addresses.
pub async fn heartbeat(client: &Client, name: &str, address: Ipv4Addr) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({ "status": status(name, address) });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

pub async fn renew_lease(client: &Client, name: &str) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let renew_time = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": name, "namespace": LEASE_NAMESPACE },
        "spec": { "holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew_time },
    });
    match leases.get_opt(name).await? {
        Some(_) => {
            leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&lease))
                .await?;
        }
        None => {
            let lease: Lease = serde_json::from_value(lease).map_err(|e| Error::Other(e.to_string()))?;
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

/// Deletes the Node objects and their Leases. The Pod garbage collector then removes Pods still
/// bound to them.
pub async fn deregister(client: &Client, names: &[String]) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    for name in names {
        for result in [
            nodes.delete(name, &DeleteParams::default()).await.map(drop),
            leases.delete(name, &DeleteParams::default()).await.map(drop),
        ] {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_keeps_its_name_several_are_numbered() {
        assert_eq!(node_names("capstan-local", 1), vec!["capstan-local"]);
        assert_eq!(node_names("n", 2), vec!["n-1", "n-2"]);
    }
}
