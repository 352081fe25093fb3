//! A Pod's `/etc/resolv.conf` from its `dnsPolicy` and `dnsConfig`, merged the kubelet's way.

use k8s_openapi::api::core::v1::PodDNSConfig;

/// The kubelet's limits on a resolv.conf.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// What the Pod's resolver needs besides its spec.
pub struct DnsContext<'a> {
    pub namespace: &'a str,
    pub cluster_domain: &'a str,
    /// The cluster DNS server (the bridge address).
    pub cluster_dns: &'a str,
    /// The host's resolv.conf, for `dnsPolicy: Default`.
    pub host_resolv_conf: &'a str,
}

/// The file's contents. `ClusterFirst` (the default, and `ClusterFirstWithHostNet`, as Pods here
/// never use the host's network) uses the cluster DNS; `Default` the host's resolver settings;
/// `None` only `dnsConfig`. `dnsConfig` nameservers and searches are appended, options override by
/// name.
pub fn resolv_conf(
    policy: Option<&str>,
    config: Option<&PodDNSConfig>,
    ctx: &DnsContext<'_>,
) -> Result<String, String> {
    let domain = ctx.cluster_domain;
    let ns = ctx.namespace;
    let (mut nameservers, mut searches, mut options): Parsed = match policy.unwrap_or("ClusterFirst") {
        "ClusterFirst" | "ClusterFirstWithHostNet" => (
            vec![ctx.cluster_dns.to_owned()],
            vec![format!("{ns}.svc.{domain}"), format!("svc.{domain}"), domain.to_owned()],
            vec![("ndots".to_owned(), Some("5".to_owned()))],
        ),
        "Default" => parse(ctx.host_resolv_conf),
        "None" => (Vec::new(), Vec::new(), Vec::new()),
        other => return Err(format!("unsupported dnsPolicy {other:?}")),
    };
    if let Some(config) = config {
        nameservers.extend(config.nameservers.iter().flatten().cloned());
        searches.extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.clone() else { continue };
            options.retain(|(n, _)| *n != name);
            options.push((name, option.value.clone()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    nameservers.retain(|n| seen.insert(n.clone()));
    nameservers.truncate(MAX_NAMESERVERS);
    let mut seen = std::collections::HashSet::new();
    searches.retain(|s| seen.insert(s.clone()));
    searches.truncate(MAX_SEARCHES);
    if nameservers.is_empty() && policy == Some("None") {
        return Err("dnsPolicy None needs dnsConfig.nameservers".to_owned());
    }
    let mut out = String::new();
    for n in &nameservers {
        if n.contains(char::is_whitespace) {
            return Err(format!("invalid nameserver {n:?}"));
        }
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        let rendered: Vec<String> = options
            .iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}:{v}"),
                None => n.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", rendered.join(" ")));
    }
    if out.contains(['\r', '\0']) || out.lines().any(|l| l.split_whitespace().count() == 0) {
        return Err("dnsConfig contains control characters".to_owned());
    }
    Ok(out)
}

type Parsed = (Vec<String>, Vec<String>, Vec<(String, Option<String>)>);

fn parse(conf: &str) -> Parsed {
    let (mut nameservers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in conf.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => nameservers.extend(words.next().map(str::to_owned)),
            Some("search" | "domain") => searches = words.map(str::to_owned).collect(),
            Some("options") => {
                for option in words {
                    let (name, value) = match option.split_once(':') {
                        Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                        None => (option.to_owned(), None),
                    };
                    options.push((name, value));
                }
            }
            _ => {}
        }
    }
    (nameservers, searches, options)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodDNSConfigOption;

    use super::*;

    const CTX: DnsContext<'static> = DnsContext {
        namespace: "ns1",
        cluster_domain: "cluster.local",
        cluster_dns: "10.244.0.1",
        host_resolv_conf: "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n",
    };

    #[test]
    fn cluster_first_merges_dns_config() -> Result<(), String> {
        let config = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.1".into()]),
            searches: Some(vec!["extra.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let conf = resolv_conf(None, Some(&config), &CTX)?;
        assert_eq!(
            conf,
            "nameserver 10.244.0.1\nnameserver 192.0.2.1\n\
             search ns1.svc.cluster.local svc.cluster.local cluster.local extra.example\n\
             options ndots:2 edns0\n"
        );
        Ok(())
    }

    #[test]
    fn default_and_none_policies() -> Result<(), String> {
        let conf = resolv_conf(Some("Default"), None, &CTX)?;
        assert_eq!(conf, "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n");
        assert!(resolv_conf(Some("None"), None, &CTX).is_err());
        let only = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.9".into()]),
            ..PodDNSConfig::default()
        };
        assert_eq!(resolv_conf(Some("None"), Some(&only), &CTX)?, "nameserver 192.0.2.9\n");
        assert!(resolv_conf(Some("Bogus"), None, &CTX).is_err());
        Ok(())
    }
}
