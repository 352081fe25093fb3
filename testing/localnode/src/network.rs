//! The Pod network: one host bridge holding the first address of the Pod CIDR, and per Pod a
//! network namespace with one end of a veth pair. Pods share one L2 segment and have no default
//! route: the only other route is the Service CIDR towards the bridge address, where the host's
//! nftables table translates it (see `services`) and forwards it back onto the bridge only, so no
//! traffic leaves the machine.

use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf, sync::Mutex};

use crate::{Error, host};

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, Error> {
        let invalid = || Error::Config(format!("{s:?} is not an IPv4 CIDR like 10.244.0.0/16"));
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if !(8..=30).contains(&prefix) {
            return Err(Error::Config(format!("{s}: the prefix must be between /8 and /30")));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// The n-th address of the range (0 is the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    pub fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    /// The bridge (gateway, DNS, API relay) address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Hands out Pod addresses round-robin, so a replacement Pod gets a new address rather than its
/// predecessor's (as on a real cluster, and as tests that follow a Pod's IP expect).
pub struct IpAllocator {
    cidr: Cidr,
    state: Mutex<(u32, BTreeSet<u32>)>,
}

impl IpAllocator {
    pub fn new(cidr: Cidr) -> IpAllocator {
        IpAllocator {
            cidr,
            state: Mutex::new((1, BTreeSet::new())),
        }
    }

    pub fn allocate(&self) -> Result<Ipv4Addr, Error> {
        let mut state = crate::lock(&self.state);
        let (next, used) = &mut *state;
        // Skip the network address, the gateway and the broadcast address.
        let usable = self.cidr.size() - 3;
        for _ in 0..usable {
            *next = if *next + 1 >= self.cidr.size() - 1 {
                2
            } else {
                *next + 1
            };
            if used.insert(*next) {
                return Ok(self.cidr.nth(*next));
            }
        }
        Err(Error::Other(format!("the Pod CIDR {} is exhausted", self.cidr)))
    }

    pub fn release(&self, ip: Ipv4Addr) {
        let offset = u32::from(ip).wrapping_sub(u32::from(self.cidr.network));
        crate::lock(&self.state).1.remove(&offset);
    }
}

/// Creates the bridge with the gateway address and routes the Service CIDR onto it, so the host's
/// own traffic to a Service address never follows a default route off the machine. Forwarding is
/// switched on for packets entering by the bridge only (not `net.ipv4.ip_forward`): the host sends a
/// Pod's translated Service connection back onto the bridge, and the Services table's `forward`
/// chain drops anything that would leave it by another interface.
pub async fn setup_bridge(pod_cidr: &Cidr, service_cidr: &Cidr, marker: &host::Marker) -> Result<(), Error> {
    let gateway = format!("{}/{}", pod_cidr.gateway(), pod_cidr.prefix);
    host::run("ip", &["link", "add", host::BRIDGE, "type", "bridge"]).await?;
    host::mark_link(host::BRIDGE, marker).await?;
    host::run("ip", &["addr", "add", &gateway, "dev", host::BRIDGE]).await?;
    host::run("ip", &["link", "set", host::BRIDGE, "up"]).await?;
    let service = service_cidr.to_string();
    let src = pod_cidr.gateway().to_string();
    host::run("ip", &["route", "add", &service, "dev", host::BRIDGE, "src", &src]).await?;
    let forwarding = PathBuf::from(format!("/proc/sys/net/ipv4/conf/{}/forwarding", host::BRIDGE));
    std::fs::write(&forwarding, b"1").map_err(Error::io("writing", forwarding))?;
    Ok(())
}

/// Names of one Pod's host objects.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub netns: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
    marker: host::Marker,
}

impl PodNetwork {
    pub fn new(id: &str, ip: Ipv4Addr, marker: host::Marker) -> PodNetwork {
        PodNetwork {
            netns: format!("{}{id}", host::NETNS_PREFIX),
            host_veth: format!("{}{id}", host::VETH_PREFIX),
            ip,
            marker,
        }
    }

    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }

    pub async fn create(&self, pod_cidr: &Cidr, service_cidr: &Cidr) -> Result<(), Error> {
        let ns = self.netns.as_str();
        self.marker.record_netns(ns)?;
        host::run("ip", &["netns", "add", ns]).await?;
        host::run(
            "ip",
            &[
                "link",
                "add",
                &self.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ],
        )
        .await?;
        host::mark_link(&self.host_veth, &self.marker).await?;
        host::run("ip", &["link", "set", &self.host_veth, "master", host::BRIDGE, "up"]).await?;
        // With bridge netfilter, a Pod's connection to a Service whose endpoint is the Pod itself
        // is translated on the bridge and must go back out of the port it came in by.
        let hairpin = PathBuf::from(format!("/sys/class/net/{}/brport/hairpin_mode", self.host_veth));
        std::fs::write(&hairpin, b"1").map_err(Error::io("writing", hairpin))?;
        let address = format!("{}/{}", self.ip, pod_cidr.prefix);
        host::run("ip", &["-n", ns, "addr", "add", &address, "dev", "eth0"]).await?;
        host::run("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;
        host::run("ip", &["-n", ns, "link", "set", "eth0", "up"]).await?;
        let gateway = pod_cidr.gateway().to_string();
        let service = service_cidr.to_string();
        host::run(
            "ip",
            &["-n", ns, "route", "add", &service, "via", &gateway, "dev", "eth0"],
        )
        .await?;
        Ok(())
    }

    /// Kills whatever still runs in the namespace, then removes the veth pair and the namespace.
    pub async fn delete(&self) {
        let netns = self.netns.clone();
        let _ = tokio::task::spawn_blocking(move || host::kill_netns_processes(&netns)).await;
        if let Err(e) = host::run("ip", &["link", "delete", &self.host_veth]).await {
            tracing::debug!(error = %e, "veth already gone");
        }
        if let Err(e) = host::run("ip", &["netns", "delete", &self.netns]).await {
            tracing::warn!(error = %e, netns = %self.netns, "cannot delete a Pod network namespace");
        } else {
            self.marker.forget_netns(&self.netns);
        }
    }

    /// A cut Pod keeps its address, but its link has no carrier: nothing goes in or out.
    pub async fn cut(&self) -> Result<(), Error> {
        host::run("ip", &["link", "set", &self.host_veth, "down"])
            .await
            .map(drop)
    }

    pub async fn restore(&self) -> Result<(), Error> {
        host::run("ip", &["link", "set", &self.host_veth, "up"]).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_masks() -> Result<(), Error> {
        let cidr = Cidr::parse("10.244.3.7/16")?;
        assert_eq!(cidr.network, Ipv4Addr::new(10, 244, 0, 0));
        assert_eq!(cidr.gateway(), Ipv4Addr::new(10, 244, 0, 1));
        assert!(Cidr::parse("10.244.0.0").is_err());
        Ok(())
    }

    #[test]
    fn allocator_does_not_reuse_a_released_address_at_once() -> Result<(), Error> {
        let allocator = IpAllocator::new(Cidr::parse("10.0.0.0/29")?);
        let first = allocator.allocate()?;
        assert_eq!(first, Ipv4Addr::new(10, 0, 0, 2));
        allocator.release(first);
        assert_eq!(allocator.allocate()?, Ipv4Addr::new(10, 0, 0, 3));
        let mut all = vec![];
        while let Ok(ip) = allocator.allocate() {
            all.push(ip);
        }
        // .2 .. .6 are usable in a /29 (.7 is broadcast), .3 was taken already.
        assert_eq!(all.len(), 4);
        Ok(())
    }
}
