//! The PodDisruptionBudgets: one Pod down at a time per StatefulSet.
use k8s_openapi::{
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, OwnerReference},
        util::intstr::IntOrString,
    },
};

use super::meta;
use crate::names::{component_labels, component_selector};

/// A PodDisruptionBudget (`maxUnavailable: 1`) for one StatefulSet's Pods.
pub(crate) fn pod_disruption_budget(
    name: &str,
    namespace: &str,
    set_name: &str,
    component: &str,
    owner: &OwnerReference,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(set_name.to_owned(), namespace, component_labels(name, component), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(component_selector(name, component)),
                match_expressions: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}
