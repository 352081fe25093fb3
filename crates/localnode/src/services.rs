//! ClusterIP Services the way kube-proxy's nftables mode does them, in a table of our own: DNAT from
//! a Service address and port to one of its ready endpoints, chosen at random, and a reject for
//! Service addresses without a rule. The table is loaded on the host (for the host's own traffic)
//! and in every Pod's network namespace (output hook), so connection tracking undoes the DNAT
//! where the connection started and the host never forwards a packet. Also: the `kubernetes`
//! Service's endpoint, a relay on the bridge address to the loopback apiserver.

use std::{fmt::Write as _, net::Ipv4Addr};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::reflector::Store,
};
use tokio::net::{TcpListener, TcpStream};

use crate::{Error, host, network::Cidr};

/// The port of the relay to the apiserver on the bridge address.
pub const API_RELAY_PORT: u16 = 6443;

struct Rule {
    cluster_ip: String,
    protocol: String,
    port: i32,
    endpoints: Vec<(String, i32)>,
}

/// The whole table, replaced atomically by each load.
pub fn ruleset(services: &Store<Service>, endpoints: &Store<Endpoints>, service_cidr: &Cidr) -> String {
    let mut rules = Vec::new();
    for service in services.state() {
        let Some(spec) = &service.spec else { continue };
        let Some(cluster_ip) = spec.cluster_ip.clone().filter(|ip| ip.parse::<Ipv4Addr>().is_ok()) else {
            continue;
        };
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let eps = endpoints
            .state()
            .into_iter()
            .find(|e| e.metadata.namespace.as_deref() == Some(&namespace) && e.metadata.name.as_deref() == Some(&name));
        for port in spec.ports.iter().flatten() {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into()).to_lowercase();
            if protocol != "tcp" && protocol != "udp" {
                continue;
            }
            let mut targets = Vec::new();
            for subset in eps.iter().flat_map(|e| e.subsets.iter().flatten()) {
                let Some(ep_port) = subset.ports.iter().flatten().find(|p| p.name == port.name) else {
                    continue;
                };
                for address in subset.addresses.iter().flatten() {
                    targets.push((address.ip.clone(), ep_port.port));
                }
            }
            targets.sort();
            rules.push(Rule {
                cluster_ip: cluster_ip.clone(),
                protocol,
                port: port.port,
                endpoints: targets,
            });
        }
    }
    rules.sort_by(|a, b| (&a.cluster_ip, &a.protocol, a.port).cmp(&(&b.cluster_ip, &b.protocol, b.port)));

    let table = host::NFT_TABLE;
    let mut nat = String::new();
    let mut chains = String::new();
    for (i, rule) in rules.iter().enumerate() {
        if rule.endpoints.is_empty() {
            continue;
        }
        let _ = writeln!(
            nat,
            "    ip daddr {} {} dport {} jump svc_{i}",
            rule.cluster_ip, rule.protocol, rule.port
        );
        let arms: Vec<String> = (0..rule.endpoints.len())
            .map(|j| format!("{j} : jump ep_{i}_{j}"))
            .collect();
        let _ = writeln!(
            chains,
            "  chain svc_{i} {{\n    numgen random mod {} vmap {{ {} }}\n  }}",
            rule.endpoints.len(),
            arms.join(", ")
        );
        for (j, (ip, port)) in rule.endpoints.iter().enumerate() {
            let _ = writeln!(
                chains,
                "  chain ep_{i}_{j} {{\n    meta l4proto {} dnat to {ip}:{port}\n  }}",
                rule.protocol
            );
        }
    }
    format!(
        "table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n  chain services {{\n    type nat hook output priority -100; policy accept;\n{nat}  }}\n{chains}  chain reject_unserved {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {service_cidr} meta l4proto tcp reject with tcp reset\n    ip daddr {service_cidr} reject\n  }}\n}}\n"
    )
}

/// Loads the table on the host.
pub async fn apply_host(rules: &str) -> Result<(), Error> {
    host::run_with_input("nft", &["-f", "-"], Some(rules)).await.map(drop)
}

/// Loads the table in a Pod's network namespace.
pub async fn apply_in(netns: &str, rules: &str) -> Result<(), Error> {
    host::run_with_input("ip", &["netns", "exec", netns, "nft", "-f", "-"], Some(rules))
        .await
        .map(drop)
}

/// Keeps `default/kubernetes` Endpoints pointing at the relay. The apiserver's own reconciler
/// cannot write its loopback address there (Endpoints refuse 127.0.0.0/8), so it does not undo this.
pub async fn ensure_kubernetes_endpoints(
    client: &Client,
    endpoints: &Store<Endpoints>,
    relay: Ipv4Addr,
) -> Result<(), Error> {
    let desired = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": { "name": "kubernetes", "namespace": "default" },
        "subsets": [{
            "addresses": [{ "ip": relay.to_string() }],
            "ports": [{ "name": "https", "port": API_RELAY_PORT, "protocol": "TCP" }],
        }],
    });
    let current = endpoints.state().into_iter().find(|e| {
        e.metadata.namespace.as_deref() == Some("default") && e.metadata.name.as_deref() == Some("kubernetes")
    });
    let matches = current.as_ref().is_some_and(|e| {
        let subsets = serde_json::to_value(&e.subsets).unwrap_or_default();
        subsets == desired["subsets"]
    });
    if matches {
        return Ok(());
    }
    let api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    if api.get_opt("kubernetes").await?.is_some() {
        api.patch("kubernetes", &PatchParams::default(), &Patch::Merge(&desired))
            .await?;
    } else {
        let object: Endpoints = serde_json::from_value(desired).map_err(|e| Error::Other(e.to_string()))?;
        api.create(&PostParams::default(), &object).await?;
    }
    tracing::info!(%relay, port = API_RELAY_PORT, "default/kubernetes Endpoints point at the API relay");
    Ok(())
}

/// Relays TCP from `relay:API_RELAY_PORT` to the apiserver (TLS passes through untouched; the
/// serving certificate names 10.96.0.1 and kubernetes.default.svc).
pub async fn api_relay(listener: TcpListener, apiserver: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let apiserver = apiserver.clone();
        tokio::spawn(async move {
            match TcpStream::connect(&apiserver).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::warn!(%apiserver, error = %e, "the API relay cannot reach the apiserver"),
            }
        });
    }
}
