//! Whether a RedisHA has converged, as a client sees it from outside: its Pods, what each Redis
//! and Sentinel says, and where the `<name>-master` Service routes. One look per call, no
//! waiting: the failover tests and the bench poll with their own bounds.
use std::net::{IpAddr, SocketAddr};

use capstan_runtime::{conditions::is_true, labels};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::{Api, Client, ResourceExt, api::ListParams};

use crate::{
    FAILOVER_CAPABLE, RedisHA,
    config::{Endpoint, REDIS_PORT, SENTINEL_PORT},
    healer::Role,
    names::{
        COMPONENT_REDIS, COMPONENT_SENTINEL, ROLE_LABEL, ROLE_MASTER, ROLE_REPLICA, headless_service,
        master_service_name, pod_fqdn,
    },
    testing::redis_io::{Target, Timeouts, info_replication, sentinel_master, sentinel_master_address},
};

/// A converged RedisHA: one master, named by its status, the Sentinels and the master Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converged {
    pub master: String,
    pub redis_pods: usize,
    /// The highest Sentinel `config-epoch`: it grows by one per failover.
    pub epoch: u64,
}

/// Watches one RedisHA in one namespace converge.
#[derive(Clone)]
pub struct ConvergenceWatch {
    client: Client,
    namespace: String,
    name: String,
    password: Option<String>,
    cluster_domain: String,
}

impl ConvergenceWatch {
    /// `password` is the one in the RedisHA's auth Secret (None without `spec.auth`);
    /// `cluster_domain` is the manager's `--cluster-domain`.
    pub fn new(client: Client, namespace: &str, name: &str, password: Option<&str>, cluster_domain: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            password: password.map(str::to_owned),
            cluster_domain: cluster_domain.to_owned(),
        }
    }

    fn component_selector(&self, component: &str) -> String {
        format!("{}={},{}={component}", labels::INSTANCE, self.name, labels::COMPONENT)
    }

    async fn pods(&self, component: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(&self.component_selector(component)))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// The Redis Pods (empty when they cannot be listed).
    pub async fn redis_pods(&self) -> Vec<Pod> {
        self.pods(COMPONENT_REDIS).await
    }

    /// The Sentinel Pods' IPs.
    pub async fn sentinel_ips(&self) -> Vec<String> {
        self.pods(COMPONENT_SENTINEL).await.iter().filter_map(pod_ip).collect()
    }

    /// A Pod's stable name, as replicas and Sentinels announce it.
    pub fn fqdn(&self, pod: &str) -> String {
        pod_fqdn(
            pod,
            &headless_service(&self.name),
            &self.namespace,
            &self.cluster_domain,
        )
    }

    /// The `<name>-master` Service's ClusterIP and the Redis port: where clients write.
    pub async fn master_service(&self) -> Result<SocketAddr, String> {
        let name = master_service_name(&self.name);
        let service = Api::<Service>::namespaced(self.client.clone(), &self.namespace)
            .get(&name)
            .await
            .map_err(|e| format!("reading Service {name}: {e}"))?;
        let ip: IpAddr = service
            .spec
            .and_then(|s| s.cluster_ip)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| format!("Service {name} has no ClusterIP"))?;
        Ok(SocketAddr::new(ip, REDIS_PORT))
    }

    /// The Pod IPs the master Service routes to (its Endpoints).
    pub async fn master_endpoint_ips(&self) -> Vec<String> {
        Api::<Endpoints>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&master_service_name(&self.name))
            .await
            .ok()
            .flatten()
            .and_then(|e| e.subsets)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|s| s.addresses.unwrap_or_default())
            .map(|a| a.ip)
            .collect()
    }

    /// The Sentinels' highest `config-epoch` (None while one does not answer).
    pub async fn epoch(&self) -> Option<u64> {
        let mut highest = 0;
        for ip in self.sentinel_ips().await {
            let endpoint = Endpoint::new(ip, SENTINEL_PORT);
            let master = sentinel_master(
                Target::sentinel(&endpoint, self.password.as_deref(), Timeouts::default()),
                &self.name,
            )
            .await
            .ok()??;
            highest = highest.max(master.get("config-epoch")?.parse().ok()?);
        }
        Some(highest)
    }

    /// The RedisHA converged with `replicas` Redis Pods: `Ready` and (with replicas) `FailoverCapable`,
    /// so the next fault can be failed over, exactly one master (the one
    /// `status.master` names) with every replica linked to it, the role labels right, every
    /// Sentinel naming it, and the master Service routing to it alone. Otherwise, what is missing.
    pub async fn converged(&self, replicas: usize) -> Result<Converged, String> {
        let rha = Api::<RedisHA>::namespaced(self.client.clone(), &self.namespace)
            .get(&self.name)
            .await
            .map_err(|e| e.to_string())?;
        let status = rha.status.clone().unwrap_or_default();
        let master = status.master.clone().ok_or("no status.master")?;
        if !is_true(&status.conditions, "Ready") {
            return Err(format!("not Ready: {:?}", status.conditions));
        }
        if replicas > 1 && !is_true(&status.conditions, FAILOVER_CAPABLE) {
            return Err(format!("not FailoverCapable: {:?}", status.conditions));
        }
        let pods = self.redis_pods().await;
        if pods.len() != replicas || pods.iter().any(|p| p.metadata.deletion_timestamp.is_some()) {
            return Err(format!("{} Redis Pods, want {replicas}", pods.len()));
        }
        let mut masters = Vec::new();
        for pod in &pods {
            let ip = pod_ip(pod).ok_or_else(|| format!("{} has no IP", pod.name_any()))?;
            let endpoint = Endpoint::new(ip, REDIS_PORT);
            let target = Target::new(&endpoint, self.password.as_deref(), Timeouts::default());
            let replication = info_replication(target)
                .await
                .map_err(|e| format!("{}: {e}", pod.name_any()))?;
            match replication.role {
                Role::Master => masters.push(pod.name_any()),
                Role::Replica => {
                    let following = replication.master.map(|m| m.host).unwrap_or_default();
                    if following != self.fqdn(&master) || !replication.link_up {
                        return Err(format!(
                            "{} follows {following} (link up: {})",
                            pod.name_any(),
                            replication.link_up
                        ));
                    }
                }
            }
            let label = pod.labels().get(ROLE_LABEL).cloned().unwrap_or_default();
            let want = if pod.name_any() == master {
                ROLE_MASTER
            } else {
                ROLE_REPLICA
            };
            if label != want {
                return Err(format!("{} is labelled {label:?}", pod.name_any()));
            }
        }
        if masters != [master.clone()] {
            return Err(format!("masters {masters:?}, status.master {master}"));
        }
        for ip in self.sentinel_ips().await {
            let endpoint = Endpoint::new(ip.clone(), SENTINEL_PORT);
            let named = sentinel_master_address(
                Target::sentinel(&endpoint, self.password.as_deref(), Timeouts::default()),
                &self.name,
            )
            .await
            .map_err(|e| e.to_string())?
            .map(|m| m.host);
            if named.as_deref() != Some(self.fqdn(&master).as_str()) {
                return Err(format!("Sentinel {ip} names {named:?}"));
            }
        }
        let master_ip = pods
            .iter()
            .find(|p| p.name_any() == master)
            .and_then(pod_ip)
            .ok_or("master has no IP")?;
        let endpoints = self.master_endpoint_ips().await;
        if endpoints != [master_ip] {
            return Err(format!("the master Service routes to {endpoints:?}"));
        }
        let epoch = self.epoch().await.ok_or("a Sentinel does not answer SENTINEL MASTER")?;
        Ok(Converged {
            master,
            redis_pods: pods.len(),
            epoch,
        })
    }

    /// The new master, once `status.master` names a Pod other than `old` and the master Service
    /// routes to that Pod alone; None until then.
    pub async fn new_master_routed(&self, old: &str) -> Option<String> {
        let master = Api::<RedisHA>::namespaced(self.client.clone(), &self.namespace)
            .get(&self.name)
            .await
            .ok()?
            .status?
            .master?;
        if master == old {
            return None;
        }
        let pod = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .get(&master)
            .await
            .ok()?;
        (self.master_endpoint_ips().await == [pod_ip(&pod)?]).then_some(master)
    }
}

/// A Pod's IP, once it has one.
pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}
