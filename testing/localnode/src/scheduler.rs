//! Binds Pending Pods to this agent's nodes: nodeSelector, required node affinity and required pod
//! anti-affinity by hostname are honoured (our nodes have no taints, so every toleration fits);
//! among the nodes that fit, the one with the fewest Pods wins, which spreads replicas.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{NodeSelectorRequirement, Pod},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{Error, status::now};

const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Whether this agent should schedule the Pod at all.
pub fn wants(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduler_name.as_deref().is_none_or(|s| s == DEFAULT_SCHEDULER)
        && pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Pending")
}

/// The node for `pod`, or why none fits.
pub fn choose<'a, I>(pod: &Pod, nodes: &[(String, BTreeMap<String, String>)], pods: I) -> Result<String, String>
where
    I: IntoIterator<Item = &'a Pod> + Clone,
{
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut reasons = Vec::new();
    let mut fits = Vec::new();
    for (name, labels) in nodes {
        if let Some(selector) = &spec.node_selector
            && !selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        {
            reasons.push(format!("{name}: didn't match Pod's node selector"));
            continue;
        }
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
        if let Some(required) = required
            && !required.node_selector_terms.iter().any(|term| {
                term.match_expressions
                    .iter()
                    .flatten()
                    .all(|e| node_requirement(e, labels))
            })
        {
            reasons.push(format!("{name}: didn't match Pod's node affinity"));
            continue;
        }
        let anti = spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
        let on_node: Vec<&Pod> = pods
            .clone()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if let Some(terms) = anti
            && terms.iter().any(|term| {
                let namespaces = term.namespaces.clone().unwrap_or_else(|| vec![namespace.clone()]);
                on_node.iter().any(|p| {
                    namespaces.contains(&p.metadata.namespace.clone().unwrap_or_default())
                        && term
                            .label_selector
                            .as_ref()
                            .is_some_and(|s| selects(s, p.metadata.labels.as_ref()))
                })
            })
        {
            reasons.push(format!("{name}: didn't match pod anti-affinity rules"));
            continue;
        }
        fits.push((on_node.len(), name.clone()));
    }
    fits.sort();
    match fits.into_iter().next() {
        Some((_, name)) => Ok(name),
        None => Err(format!(
            "0/{} nodes are available: {}.",
            nodes.len(),
            reasons.join(", ")
        )),
    }
}

fn node_requirement(e: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&e.key);
    let values = e.values.clone().unwrap_or_default();
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if e.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

pub fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|e| label_requirement(e, labels))
}

fn label_requirement(e: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&e.key);
    let values = e.values.clone().unwrap_or_default();
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Binds through the `binding` subresource, as the real scheduler does (the apiserver then sets
/// PodScheduled).
pub async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), Error> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": name, "namespace": namespace, "uid": pod.metadata.uid },
        "target": { "apiVersion": "v1", "kind": "Node", "name": node },
    });
    api.create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// Records why a Pod stays Pending, as the scheduler's PodScheduled=False condition.
pub async fn mark_unschedulable(client: &Client, pod: &Pod, message: &str) -> Result<(), Error> {
    let already = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "PodScheduled" && c.message.as_deref() == Some(message))
        });
    if already {
        return Ok(());
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({ "status": { "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": now(),
    }]}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test Pod")
    }

    #[test]
    fn node_selector_and_anti_affinity_pick_or_refuse_nodes() {
        let nodes = vec![
            ("a".to_owned(), BTreeMap::from([("zone".to_owned(), "1".to_owned())])),
            ("b".to_owned(), BTreeMap::from([("zone".to_owned(), "2".to_owned())])),
        ];
        let selected = pod("metadata: {name: p, namespace: n}\nspec: {nodeSelector: {zone: '2'}, containers: []}");
        assert_eq!(choose(&selected, &nodes, &[] as &[Pod]), Ok("b".to_owned()));
        let anti = pod(
            "metadata: {name: p, namespace: n, labels: {app: x}}\nspec:\n  containers: []\n  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - topologyKey: kubernetes.io/hostname\n        labelSelector: {matchLabels: {app: x}}\n",
        );
        let running = |node: &str| {
            pod(&format!(
                "metadata: {{name: q-{node}, namespace: n, labels: {{app: x}}}}\nspec: {{nodeName: {node}, containers: []}}"
            ))
        };
        assert_eq!(choose(&anti, &nodes, &[running("a")]), Ok("b".to_owned()));
        assert!(choose(&anti, &nodes, &[running("a"), running("b")]).is_err());
    }
}
