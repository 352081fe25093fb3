//! ClusterIP Services the way kube-proxy's nftables mode does them, in one table on the host: DNAT
//! from a Service address and port to one of its ready endpoints, chosen at random, and a reject for
//! Service addresses without a rule. Also: the `kubernetes` Service's endpoint, a relay on the bridge
//! address to the loopback apiserver.
//!
//! Why the host and not each Pod: Pods route the Service range to the bridge address, so a Pod's
//! connection to a ClusterIP enters the host on the bridge, where the `prerouting` hook translates
//! it. The rules thus exist once, and a change costs one `nft` process however many Pods run (a
//! copy per Pod namespace costs one per Pod per change, and namespaces cannot share a table). The
//! price, each paid in the table itself or once per bridge or Pod, never per change:
//! - the host forwards the translated packet back onto the bridge: forwarding is switched on for the
//!   bridge only (`net.ipv4.conf.capst0.forwarding`, see `network::setup_bridge`), and the `forward`
//!   hook drops whatever would enter or leave the bridge through another interface;
//! - Pod-originated Service traffic is masqueraded to the bridge address, so the endpoint's reply
//!   comes back through the host's connection tracking even without bridge netfilter (it would
//!   otherwise go straight to the client Pod, untranslated), and a Pod reaching itself (hairpin)
//!   gets its own reply from the bridge address rather than from itself;
//! - with bridge netfilter on (the `br_netfilter` module), the translated packet is bridged instead
//!   of routed, back out of the port it came in by when a Pod reaches itself: bridge ports are in
//!   hairpin mode (`network::PodNetwork::create`);
//! - without bridge netfilter the host answers each routed-back packet with an ICMP redirect (seen
//!   in `/proc/net/snmp` `OutRedirects`); a Pod accepting it would send that ClusterIP straight to
//!   the endpoint, which does not own it: redirects to the bridge are dropped.
//!
//! Nothing addressed to a Service leaves the machine: unserved addresses of the range and known
//! ClusterIPs are rejected in the host's `output` (its own traffic) and `forward` (Pods' traffic)
//! hooks, and Pods have no route but the Pod CIDR and the Service range.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::Ipv4Addr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

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
pub fn ruleset(
    services: &Store<Service>,
    endpoints: &Store<Endpoints>,
    pod_cidr: &Cidr,
    service_cidr: &Cidr,
    marker: &str,
) -> String {
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
    let bridge = host::BRIDGE;
    let gateway = pod_cidr.gateway();
    let mut dispatch = String::new();
    let mut chains = String::new();
    for (i, rule) in rules.iter().enumerate() {
        if rule.endpoints.is_empty() {
            continue;
        }
        let _ = writeln!(
            dispatch,
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
        "table ip {table}
delete table ip {table}
table ip {table} {{
  comment \"{marker}\"
  chain services {{
{dispatch}  }}
{chains}  chain host_nat {{
    type nat hook output priority -100; policy accept;
    jump services
  }}
  chain pod_nat {{
    type nat hook prerouting priority -100; policy accept;
    iifname \"{bridge}\" jump services
  }}
  chain pod_masquerade {{
    type nat hook postrouting priority 100; policy accept;
    oifname \"{bridge}\" ip saddr {pod_cidr} ip saddr != {gateway} ct status dnat masquerade
  }}
  chain reject_unserved {{
    ip daddr {service_cidr} meta l4proto tcp reject with tcp reset
    ip daddr {service_cidr} reject
{listed}  }}
  chain host_filter {{
    type filter hook output priority 0; policy accept;
    oifname \"{bridge}\" icmp type redirect drop
    jump reject_unserved
  }}
  chain pod_filter {{
    type filter hook forward priority 0; policy accept;
    jump reject_unserved
    iifname \"{bridge}\" oifname != \"{bridge}\" drop
    oifname \"{bridge}\" iifname != \"{bridge}\" drop
  }}
}}
"
    )
}

/// How many times the Services table changed, process-wide (see [`crate::ServicesActivity`]).
static TABLE_CHANGES: AtomicU64 = AtomicU64::new(0);

pub fn table_changes() -> u64 {
    TABLE_CHANGES.load(Ordering::Relaxed)
}

/// The table as last loaded on the host.
#[derive(Debug, Default)]
pub struct Table {
    loaded: String,
}

impl Table {
    /// Loads `rules` unless they are loaded already: one `nft` process per change, however many
    /// Pods run. Returns whether they were new. After a failure the next call tries again.
    pub async fn update(&mut self, rules: String) -> Result<bool, Error> {
        if self.loaded == rules {
            return Ok(false);
        }
        TABLE_CHANGES.fetch_add(1, Ordering::Relaxed);
        host::run_with_input("nft", &["-f", "-"], Some(&rules)).await?;
        self.loaded = rules;
        Ok(true)
    }
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
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn store<K>(objects: Vec<serde_json::Value>) -> Result<Store<K>, serde_json::Error>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned,
    {
        let (store, mut writer) = reflector::store::<K>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(serde_json::from_value(object)?));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Ok(store)
    }

    fn service(name: &str, ip: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": name, "namespace": "ns" },
            "spec": { "clusterIP": ip, "ports": [{ "name": "p", "port": 80, "protocol": "TCP" }] },
        })
    }

    #[test]
    fn the_table_translates_pods_service_traffic_on_the_host_once() -> Result<(), Box<dyn std::error::Error>> {
        let services = store::<Service>(vec![service("served", "10.96.0.10"), service("unserved", "10.96.0.11")])?;
        let endpoints = store::<Endpoints>(vec![serde_json::json!({
            "metadata": { "name": "served", "namespace": "ns" },
            "subsets": [{
                "addresses": [{ "ip": "10.244.0.7" }, { "ip": "10.244.0.5" }],
                "ports": [{ "name": "p", "port": 8080 }],
            }],
        })])?;
        let rules = ruleset(
            &services,
            &endpoints,
            &Cidr::parse("10.244.0.0/16")?,
            &Cidr::parse("10.96.0.0/12")?,
            "capstan-localnode:/run/x",
        );
        // One dispatch chain, entered by the host's own traffic and by Pods' traffic from the bridge.
        assert_eq!(rules.matches("jump svc_").count(), 1, "{rules}");
        assert!(rules.contains("ip daddr 10.96.0.10 tcp dport 80 jump svc_0"), "{rules}");
        assert!(rules.contains("dnat to 10.244.0.5:8080") && rules.contains("dnat to 10.244.0.7:8080"));
        assert!(
            rules.contains(
                "type nat hook prerouting priority -100; policy accept;\n    iifname \"capst0\" jump services"
            )
        );
        assert!(rules.contains("type nat hook output priority -100; policy accept;\n    jump services"));
        assert!(rules.contains("ip saddr 10.244.0.0/16 ip saddr != 10.244.0.1 ct status dnat masquerade"));
        assert!(rules.contains("ip daddr { 10.96.0.10, 10.96.0.11 } reject"), "{rules}");
        assert!(rules.contains("iifname \"capst0\" oifname != \"capst0\" drop"));
        // Where nft can parse it (root), the table is valid as a whole; nothing is loaded (`-c`).
        if nix::unistd::geteuid().is_root()
            && let Ok(mut check) = std::process::Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        {
            use std::io::Write as _;
            let stdin = check.stdin.take();
            stdin.ok_or("no stdin")?.write_all(rules.as_bytes())?;
            let output = check.wait_with_output()?;
            assert!(
                output.status.success(),
                "{}\n{rules}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    #[test]
    fn the_service_range_is_read_from_the_apiservers_refusal() -> Result<(), Error> {
        let message = "Service \"x\" is invalid: spec.clusterIP: Invalid value: \"1.1.1.1\": provided IP is not in \
                       the valid range. The range of valid IPs is 10.0.0.0/24";
        assert_eq!(range_in_message(message), Some(Cidr::parse("10.0.0.0/24")?));
        assert_eq!(range_in_message("something else"), None);
        Ok(())
    }
}
