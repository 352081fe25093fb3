//! Which Redis and Sentinel processes a RedisHA has, from its Pods: each named by its stable FQDN
//! (as Sentinels and replicas announce it) and reached at its Pod IP (the operator may run where
//! Pod FQDNs do not resolve, like the local node's host). Pure.
use capstan_runtime::labels::{COMPONENT, INSTANCE, NAME};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, PodStatus},
};
use kube::ResourceExt;

use crate::{
    config::{Endpoint, REDIS_PORT, SENTINEL_PORT},
    healer::PodState,
    healer::redis::{RedisMember, SentinelMember},
    names::{APP, COMPONENT_REDIS, COMPONENT_SENTINEL, ROLE_LABEL, headless_service, pod_fqdn, sentinel_set},
};

/// The label the StatefulSet controller puts on each Pod: the revision it was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Keeps of a Pod what [`members`] and [`pod_states`] read (name, labels, deletion, IP, conditions)
/// and drops the rest before it is cached: the spec and container statuses are most of a Pod, and
/// the healer caches every Redis and Sentinel Pod.
pub fn trim_pod(pod: &mut Pod) {
    pod.spec = None;
    pod.metadata.annotations = None;
    pod.status = pod.status.take().map(|status| PodStatus {
        pod_ip: status.pod_ip,
        conditions: status.conditions,
        ..PodStatus::default()
    });
}

/// Whether every Redis Pod of RedisHA `name` at an ordinal of `desired` or more never ran (it never
/// got an IP: unschedulable, Pending), so a scale-down to `desired` removes no data.
pub fn removed_pods_never_ran(name: &str, namespace: &str, pods: &[Pod], desired: i32) -> bool {
    let prefix = format!("{name}-");
    pods.iter()
        .filter(|pod| pod.namespace().as_deref() == Some(namespace))
        .filter(|pod| pod.labels().get(INSTANCE).map(String::as_str) == Some(name))
        .filter(|pod| pod.labels().get(COMPONENT).map(String::as_str) == Some(COMPONENT_REDIS))
        .filter(|pod| {
            pod.name_any()
                .strip_prefix(&prefix)
                .and_then(|o| o.parse::<i32>().ok())
                .is_some_and(|ordinal| ordinal >= desired)
        })
        .all(|pod| pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_none())
}

/// Each Redis Pod's standing in a roll: up to date when created from the StatefulSet's
/// `status.updateRevision` (with `OnDelete`, a template change leaves old Pods until deleted),
/// ready by its `Ready` condition. Sorted by ordinal.
pub fn pod_states(set: &StatefulSet, pods: &[Pod]) -> Vec<PodState> {
    let name = set.name_any();
    let update_revision = set.status.as_ref().and_then(|s| s.update_revision.as_deref());
    let mut states: Vec<PodState> = pods
        .iter()
        .filter(|pod| pod.labels().get(COMPONENT).map(String::as_str) == Some(COMPONENT_REDIS))
        .filter_map(|pod| {
            let pod_name = pod.name_any();
            let ordinal = pod_name.strip_prefix(&format!("{name}-"))?.parse().ok()?;
            // A terminating Pod is on its way out, whatever its last probe said.
            let ready = pod.metadata.deletion_timestamp.is_none()
                && pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Some(PodState {
                up_to_date: update_revision.is_some()
                    && pod.labels().get(REVISION_LABEL).map(String::as_str) == update_revision,
                ready,
                pod: pod_name,
                ordinal,
            })
        })
        .collect();
    states.sort_by_key(|p| p.ordinal);
    states
}

/// The RedisHA's Redis members (sorted by ordinal) and Sentinel members, from Pods that carry its
/// labels and have an IP. Pods of other instances or components are ignored.
pub fn members(
    name: &str,
    namespace: &str,
    cluster_domain: &str,
    pods: &[Pod],
) -> (Vec<RedisMember>, Vec<SentinelMember>) {
    let mine = |pod: &&Pod, component: &str| {
        let labels = pod.labels();
        labels.get(NAME).map(String::as_str) == Some(APP)
            && labels.get(INSTANCE).map(String::as_str) == Some(name)
            && labels.get(COMPONENT).map(String::as_str) == Some(component)
    };
    let ip = |pod: &Pod| pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let mut redis: Vec<RedisMember> = pods
        .iter()
        .filter(|p| mine(p, COMPONENT_REDIS))
        .filter_map(|pod| {
            let pod_name = pod.name_any();
            let ordinal = pod_name.strip_prefix(&format!("{name}-"))?.parse().ok()?;
            Some(RedisMember {
                announced: Endpoint::new(
                    pod_fqdn(&pod_name, &headless_service(name), namespace, cluster_domain),
                    REDIS_PORT,
                ),
                connect: Endpoint::new(ip(pod)?, REDIS_PORT),
                role_label: pod.labels().get(ROLE_LABEL).cloned(),
                pod: pod_name,
                ordinal,
            })
        })
        .collect();
    redis.sort_by_key(|m| m.ordinal);
    let sentinel_prefix = format!("{}-", sentinel_set(name));
    let mut sentinels: Vec<(u32, SentinelMember)> = pods
        .iter()
        .filter(|p| mine(p, COMPONENT_SENTINEL))
        .filter_map(|pod| {
            let pod_name = pod.name_any();
            let ordinal: u32 = pod_name.strip_prefix(&sentinel_prefix)?.parse().ok()?;
            Some((
                ordinal,
                SentinelMember {
                    connect: Endpoint::new(ip(pod)?, SENTINEL_PORT),
                    pod: pod_name,
                },
            ))
        })
        .collect();
    sentinels.sort_by_key(|(ordinal, _)| *ordinal);
    (redis, sentinels.into_iter().map(|(_, m)| m).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, instance: &str, component: &str, ip: Option<&str>, role: Option<&str>) -> Pod {
        let role = role.map(|r| format!(", {ROLE_LABEL}: {r}")).unwrap_or_default();
        let status = ip.map(|ip| format!("status: {{podIP: {ip}}}")).unwrap_or_default();
        serde_yaml::from_str(&format!(
            "metadata:\n  name: {name}\n  labels: {{app.kubernetes.io/name: redis-ha, app.kubernetes.io/instance: {instance}, app.kubernetes.io/component: {component}{role}}}\n{status}\n"
        ))
        .expect("pod")
    }

    #[test]
    fn a_scale_down_removes_data_unless_every_removed_pod_never_ran() {
        let mut pods = vec![
            pod("cache-0", "cache", "redis", Some("10.0.0.1"), None),
            pod("cache-3", "cache", "redis", None, None),
            pod("cache-4", "cache", "redis", None, None),
            pod("other-4", "other", "redis", Some("10.0.0.9"), None),
            pod("cache-sentinel-4", "cache", "sentinel", Some("10.0.0.8"), None),
        ];
        for pod in &mut pods {
            pod.metadata.namespace = Some("apps".into());
        }
        assert!(removed_pods_never_ran("cache", "apps", &pods, 3), "3 and 4 are Pending");
        assert!(!removed_pods_never_ran("cache", "apps", &pods, 0), "cache-0 ran");
        pods[2] = pod("cache-4", "cache", "redis", Some("10.0.0.4"), None);
        pods[2].metadata.namespace = Some("apps".into());
        assert!(
            !removed_pods_never_ran("cache", "apps", &pods, 3),
            "cache-4 ran: it may hold data"
        );
        assert!(
            removed_pods_never_ran("cache", "elsewhere", &pods, 3),
            "nothing of it there"
        );
    }

    #[test]
    fn pod_states_compare_each_pods_revision_with_the_update_revision() {
        let set: StatefulSet =
            serde_yaml::from_str("metadata: {name: cache}\nstatus: {replicas: 2, updateRevision: cache-new}\n")
                .expect("set");
        let with = |name: &str, revision: &str, ready: &str| -> Pod {
            serde_yaml::from_str(&format!(
                "metadata:\n  name: {name}\n  labels: {{app.kubernetes.io/component: redis, controller-revision-hash: {revision}}}\nstatus:\n  conditions: [{{type: Ready, status: \"{ready}\"}}]\n"
            ))
            .expect("pod")
        };
        let states = pod_states(
            &set,
            &[
                with("cache-1", "cache-old", "True"),
                with("cache-0", "cache-new", "False"),
            ],
        );
        assert_eq!(
            states,
            [
                PodState {
                    pod: "cache-0".into(),
                    ordinal: 0,
                    up_to_date: true,
                    ready: false
                },
                PodState {
                    pod: "cache-1".into(),
                    ordinal: 1,
                    up_to_date: false,
                    ready: true
                },
            ]
        );
    }

    #[test]
    fn a_trimmed_pod_gives_the_same_members_and_states_without_its_spec() {
        let full: Pod = serde_yaml::from_str(
            "metadata:
  name: cache-0
  annotations: {note: a long annotation}
  labels: {app.kubernetes.io/name: redis-ha, app.kubernetes.io/instance: cache, app.kubernetes.io/component: redis, controller-revision-hash: cache-new, redis.capstan.dev/role: master}
spec:
  containers: [{name: redis, image: redis:7.0.15, args: [redis-server, /etc/redis/redis.conf]}]
status:
  podIP: 10.244.0.4
  hostIP: 127.0.0.1
  conditions: [{type: Ready, status: \"True\"}]
  containerStatuses: [{name: redis, image: redis:7.0.15, imageID: x, ready: true, restartCount: 0}]
",
        )
        .expect("pod");
        let mut trimmed = full.clone();
        trim_pod(&mut trimmed);
        assert!(trimmed.spec.is_none() && trimmed.metadata.annotations.is_none());
        let status = trimmed.status.as_ref().expect("status");
        assert!(status.container_statuses.is_none() && status.host_ip.is_none());
        assert_eq!(
            members("cache", "apps", "cluster.local", std::slice::from_ref(&trimmed)),
            members("cache", "apps", "cluster.local", std::slice::from_ref(&full))
        );
        let set: StatefulSet =
            serde_yaml::from_str("metadata: {name: cache}\nstatus: {replicas: 1, updateRevision: cache-new}\n")
                .expect("set");
        let states = pod_states(&set, std::slice::from_ref(&trimmed));
        assert_eq!(states, pod_states(&set, std::slice::from_ref(&full)));
        assert!(states[0].ready && states[0].up_to_date);
    }

    #[test]
    fn members_come_from_the_instances_pods_with_an_ip() {
        let pods = [
            pod("cache-1", "cache", "redis", Some("10.244.0.5"), Some("replica")),
            pod("cache-0", "cache", "redis", Some("10.244.0.4"), Some("master")),
            pod("cache-2", "cache", "redis", None, None),
            pod("cache-sentinel-0", "cache", "sentinel", Some("10.244.0.6"), None),
            pod("other-0", "other", "redis", Some("10.244.0.9"), None),
        ];
        let (redis, sentinels) = members("cache", "apps", "cluster.local", &pods);
        assert_eq!(
            redis,
            [
                RedisMember {
                    pod: "cache-0".into(),
                    ordinal: 0,
                    announced: Endpoint::new("cache-0.cache-headless.apps.svc.cluster.local", 6379),
                    connect: Endpoint::new("10.244.0.4", 6379),
                    role_label: Some("master".into()),
                },
                RedisMember {
                    pod: "cache-1".into(),
                    ordinal: 1,
                    announced: Endpoint::new("cache-1.cache-headless.apps.svc.cluster.local", 6379),
                    connect: Endpoint::new("10.244.0.5", 6379),
                    role_label: Some("replica".into()),
                },
            ]
        );
        assert_eq!(
            sentinels,
            [SentinelMember {
                pod: "cache-sentinel-0".into(),
                connect: Endpoint::new("10.244.0.6", 26379),
            }]
        );
    }
}
