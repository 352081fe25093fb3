//! Types for API versions k8s-openapi no longer has but clusters capstan supports still serve
//! instead of the current one: pick them with [`Watches::serves`](crate::Watches::serves).
use k8s_openapi::{
    NamespaceResourceScope,
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Serialize};

/// A policy/v1beta1 PodDisruptionBudget (served up to Kubernetes 1.24; policy/v1 from 1.21).
/// Its spec has the same fields as policy/v1's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodDisruptionBudgetV1Beta1 {
    #[serde(rename = "apiVersion", default = "PodDisruptionBudgetV1Beta1::api_version_value")]
    pub api_version: String,
    #[serde(default = "PodDisruptionBudgetV1Beta1::kind_value")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodDisruptionBudgetSpec>,
    /// Read, never written: the status as the server reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl PodDisruptionBudgetV1Beta1 {
    fn api_version_value() -> String {
        <Self as k8s_openapi::Resource>::API_VERSION.to_owned()
    }

    fn kind_value() -> String {
        <Self as k8s_openapi::Resource>::KIND.to_owned()
    }
}

impl From<PodDisruptionBudget> for PodDisruptionBudgetV1Beta1 {
    fn from(pdb: PodDisruptionBudget) -> Self {
        Self {
            api_version: Self::api_version_value(),
            kind: Self::kind_value(),
            metadata: pdb.metadata,
            spec: pdb.spec,
            status: None,
        }
    }
}

impl k8s_openapi::Resource for PodDisruptionBudgetV1Beta1 {
    const API_VERSION: &'static str = "policy/v1beta1";
    const GROUP: &'static str = "policy";
    const KIND: &'static str = "PodDisruptionBudget";
    const VERSION: &'static str = "v1beta1";
    const URL_PATH_SEGMENT: &'static str = "poddisruptionbudgets";
    type Scope = NamespaceResourceScope;
}

impl k8s_openapi::Metadata for PodDisruptionBudgetV1Beta1 {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::Resource;

    #[test]
    fn a_v1_budget_becomes_the_same_budget_as_v1beta1() {
        let v1 = PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("cache".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                ..Default::default()
            }),
            status: None,
        };
        let beta = PodDisruptionBudgetV1Beta1::from(v1);
        let json = serde_json::to_value(&beta).expect("serializes");
        assert_eq!(json["apiVersion"], "policy/v1beta1");
        assert_eq!(json["kind"], "PodDisruptionBudget");
        assert_eq!(json["spec"]["maxUnavailable"], 1);
        assert!(json.get("status").is_none(), "status is never sent");
        assert_eq!(
            PodDisruptionBudgetV1Beta1::url_path(&(), Some("ns")),
            "/apis/policy/v1beta1/namespaces/ns/poddisruptionbudgets"
        );
        let back: PodDisruptionBudgetV1Beta1 = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, beta);
    }
}
