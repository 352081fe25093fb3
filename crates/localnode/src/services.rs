//! ClusterIP Services the way kube-proxy's nftables mode does them, in a table of our own: DNAT from
//! a Service address and port to one of its ready endpoints, chosen at random, and a reject for
//! Service addresses without a rule. The table is loaded on the host (for the host's own traffic)
//! and in every Pod's network namespace (output hook), so connection tracking undoes the DNAT
//! where the connection started and the host never forwards a packet. Also: the `kubernetes`
//! Service's endpoint, a relay on the bridge address to the loopback apiserver.

use std::{collections::HashMap, fmt::Write as _, net::Ipv4Addr, time::Duration};

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

/// The whole table, replaced atomically by each load. Built in O(Services + Endpoints).
pub fn ruleset(services: &Store<Service>, endpoints: &Store<Endpoints>, service_cidr: &Cidr, marker: &str) -> String {
    let services = services.state();
    let endpoints = endpoints.state();
    let by_name: HashMap<(&str, &str), &Endpoints> = endpoints
        .iter()
        .filter_map(|e| {
            Some((
                (e.metadata.namespace.as_deref()?, e.metadata.name.as_deref()?),
                e.as_ref(),
            ))
        })
        .collect();
    let mut rules = Vec::new();
    let mut cluster_ips = std::collections::BTreeSet::new();
    for service in &services {
        let Some(spec) = &service.spec else { continue };
        let Some(cluster_ip) = spec.cluster_ip.clone().filter(|ip| ip.parse::<Ipv4Addr>().is_ok()) else {
            continue;
        };
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        cluster_ips.insert(cluster_ip.clone());
        let eps = by_name.get(&(namespace.as_str(), name.as_str()));
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
    // Every ClusterIP is rejected when unserved, also one outside the range routed to the bridge.
    let listed = if cluster_ips.is_empty() {
        String::new()
    } else {
        let set = cluster_ips.into_iter().collect::<Vec<_>>().join(", ");
        format!("    ip daddr {{ {set} }} meta l4proto tcp reject with tcp reset\n    ip daddr {{ {set} }} reject\n")
    };
    let marker = marker.replace('"', "");
    format!(
        "table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n  comment \"{marker}\"\n  chain services {{\n    type nat hook output priority -100; policy accept;\n{nat}  }}\n{chains}  chain reject_unserved {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {service_cidr} meta l4proto tcp reject with tcp reset\n    ip daddr {service_cidr} reject\n{listed}  }}\n}}\n"
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

/// The apiserver's Service range. v1.20 has no ServiceCIDR API, and a dry run does not allocate,
/// so a Service with a `clusterIP` outside any likely range is created for real: the allocator
/// refuses it with a message naming the range. Should one be accepted, it is deleted at once.
pub async fn learn_service_cidr(client: &Client) -> Result<Cidr, String> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let name = "capstan-localnode-service-range-probe";
    let params = PostParams {
        dry_run: false,
        field_manager: Some("capstan".into()),
    };
    for probe in ["1.1.1.1", "203.0.113.1", "100.64.0.1"] {
        let service: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name },
            "spec": { "clusterIP": probe, "ports": [{ "port": 80 }] },
        }))
        .map_err(|e| e.to_string())?;
        match api.create(&params, &service).await {
            Ok(_) => {
                let _ = api.delete(name, &Default::default()).await;
            }
            Err(kube::Error::Api(status)) => {
                if let Some(cidr) = range_in_message(&status.message) {
                    return Ok(cidr);
                }
                return Err(format!("unexpected answer to the probe Service: {}", status.message));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("every probe address was inside the Service range".to_owned())
}

/// `… The range of valid IPs is 10.96.0.0/12` → that range.
fn range_in_message(message: &str) -> Option<Cidr> {
    let (_, rest) = message.split_once("range of valid IPs is ")?;
    let range = rest.split(|c: char| c.is_whitespace() || c == '"' || c == ',').next()?;
    Cidr::parse(range).ok()
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
    let mut backoff = Duration::from_millis(10);
    loop {
        let mut inbound = match listener.accept().await {
            Ok((inbound, _)) => {
                backoff = Duration::from_millis(10);
                inbound
            }
            Err(e) => {
                // E.g. out of file descriptors: wait instead of spinning on the error.
                tracing::warn!(error = %e, ?backoff, "the API relay cannot accept; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_range_is_read_from_the_apiservers_refusal() -> Result<(), Error> {
        let message = "Service \"x\" is invalid: spec.clusterIP: Invalid value: \"1.1.1.1\": provided IP is not in \
                       the valid range. The range of valid IPs is 10.0.0.0/24";
        assert_eq!(range_in_message(message), Some(Cidr::parse("10.0.0.0/24")?));
        assert_eq!(range_in_message("something else"), None);
        Ok(())
    }
}
