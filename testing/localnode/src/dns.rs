//! Cluster DNS on the bridge address, answering from the API like CoreDNS's kubernetes plugin:
//! `<svc>.<ns>.svc.<domain>` (the ClusterIP, or a headless Service's endpoint addresses, which the
//! endpoints controller fills with not-ready Pods too when `publishNotReadyAddresses` is set) and
//! `<hostname>.<svc>.<ns>.svc.<domain>` (an endpoint with that hostname, as StatefulSets make).
//! Short names are the client's business, through the search path in the Pod's resolv.conf.

use std::{net::Ipv4Addr, time::Duration};

use hickory_server::{
    ServerFuture,
    authority::MessageResponseBuilder,
    proto::{
        op::{Header, MessageType, OpCode, ResponseCode},
        rr::{Name, RData, Record, RecordType, rdata::A},
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::reflector::Store;
use tokio::net::{TcpListener, UdpSocket};

use crate::Error;

/// Short, so names follow Pods as they come and go (CoreDNS's default is 5 s too).
const TTL: u32 = 5;

pub struct ClusterDns {
    pub domain: String,
    pub services: Store<Service>,
    pub endpoints: Store<Endpoints>,
}

/// What a name resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not a name of ours, or no such Service: NXDOMAIN.
    NoSuchName,
    /// The name exists (possibly with no address right now).
    Addresses(Vec<Ipv4Addr>),
}

impl ClusterDns {
    pub fn lookup(&self, name: &str) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let suffix = format!(".svc.{}", self.domain.trim_end_matches('.'));
        let Some(rest) = name.strip_suffix(&suffix) else {
            return Answer::NoSuchName;
        };
        let labels: Vec<&str> = rest.split('.').collect();
        let (hostname, service, namespace) = match labels.as_slice() {
            [service, namespace] => (None, *service, *namespace),
            [hostname, service, namespace] => (Some(*hostname), *service, *namespace),
            _ => return Answer::NoSuchName,
        };
        let Some(svc) = self.services.state().into_iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace) && s.metadata.name.as_deref() == Some(service)
        }) else {
            return Answer::NoSuchName;
        };
        let cluster_ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.clone());
        let headless = cluster_ip.as_deref().is_none_or(|ip| ip == "None" || ip.is_empty());
        if hostname.is_none() && !headless {
            return Answer::Addresses(cluster_ip.and_then(|ip| ip.parse().ok()).into_iter().collect());
        }
        let endpoints = self.endpoints.state().into_iter().find(|e| {
            e.metadata.namespace.as_deref() == Some(namespace) && e.metadata.name.as_deref() == Some(service)
        });
        let mut addresses: Vec<Ipv4Addr> = endpoints
            .iter()
            .flat_map(|e| e.subsets.iter().flatten())
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| hostname.is_none_or(|h| a.hostname.as_deref() == Some(h)))
            .filter_map(|a| a.ip.parse().ok())
            .collect();
        addresses.sort();
        addresses.dedup();
        if hostname.is_some() && addresses.is_empty() {
            return Answer::NoSuchName;
        }
        Answer::Addresses(addresses)
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response_handle: R) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        header.set_recursion_available(false);
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut records: Vec<Record> = Vec::new();
        match request.request_info() {
            Ok(info) if request.message_type() == MessageType::Query && request.op_code() == OpCode::Query => {
                let query = info.query;
                match self.lookup(&query.name().to_string()) {
                    Answer::NoSuchName => {
                        header.set_response_code(ResponseCode::NXDomain);
                    }
                    Answer::Addresses(ips) if matches!(query.query_type(), RecordType::A | RecordType::ANY) => {
                        let name = Name::from(query.name().clone());
                        records = ips
                            .into_iter()
                            .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip))))
                            .collect();
                    }
                    // The name exists but has no records of this type (AAAA above all): NOERROR,
                    // no data, so resolvers do not give up on the name.
                    Answer::Addresses(_) => {}
                }
            }
            _ => {
                header.set_response_code(ResponseCode::NotImp);
            }
        }
        let response = builder.build(header, records.iter(), [], [], []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "DNS response not sent");
                let mut header = Header::new();
                header.set_response_code(ResponseCode::ServFail);
                header.into()
            }
        }
    }
}

/// Serves UDP and TCP on `address:53` until the returned server is dropped.
pub async fn serve(dns: ClusterDns, address: Ipv4Addr) -> Result<ServerFuture<ClusterDns>, Error> {
    let udp = UdpSocket::bind((address, 53))
        .await
        .map_err(|e| Error::Other(format!("DNS on {address}:53/udp: {e}")))?;
    let tcp = TcpListener::bind((address, 53))
        .await
        .map_err(|e| Error::Other(format!("DNS on {address}:53/tcp: {e}")))?;
    let mut server = ServerFuture::new(dns);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5));
    Ok(server)
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher::Event};

    use super::*;

    fn object<K: serde::de::DeserializeOwned>(yaml: &str) -> K {
        serde_yaml::from_str(yaml).expect("test object")
    }

    #[test]
    fn services_headless_services_and_pod_hostnames_resolve() {
        let (services, mut services_writer) = reflector::store::<Service>();
        let (endpoints, mut endpoints_writer) = reflector::store::<Endpoints>();
        for svc in [
            "metadata: {name: web, namespace: ns}\nspec: {clusterIP: 10.96.0.10}",
            "metadata: {name: redis, namespace: ns}\nspec: {clusterIP: None}",
        ] {
            services_writer.apply_watcher_event(&Event::Apply(object(svc)));
        }
        endpoints_writer.apply_watcher_event(&Event::Apply(object(
            "metadata: {name: redis, namespace: ns}\nsubsets:\n- addresses:\n  - {ip: 10.244.0.3, hostname: redis-1}\n  - {ip: 10.244.0.2, hostname: redis-0}\n",
        )));
        let dns = ClusterDns {
            domain: "cluster.local".into(),
            services,
            endpoints,
        };
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert_eq!(
            dns.lookup("web.ns.svc.cluster.local."),
            Answer::Addresses(vec![ip("10.96.0.10")])
        );
        assert_eq!(
            dns.lookup("redis.ns.svc.cluster.local"),
            Answer::Addresses(vec![ip("10.244.0.2"), ip("10.244.0.3")])
        );
        assert_eq!(
            dns.lookup("redis-1.redis.ns.svc.cluster.local"),
            Answer::Addresses(vec![ip("10.244.0.3")])
        );
        assert_eq!(dns.lookup("redis-9.redis.ns.svc.cluster.local"), Answer::NoSuchName);
        assert_eq!(dns.lookup("web.other.svc.cluster.local"), Answer::NoSuchName);
        assert_eq!(dns.lookup("example.com"), Answer::NoSuchName);
    }
}
