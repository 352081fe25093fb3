//! Which API group versions the cluster serves, read once when the manager starts, so a
//! controller can own the version of a kind the cluster has (policy/v1 PodDisruptionBudgets on
//! current clusters, policy/v1beta1 before 1.21) instead of assuming one.
use std::collections::BTreeSet;

use kube::Client;

use crate::Error;

/// The group versions (`policy/v1`, `apps/v1`, and `v1` for the core group) a cluster serves.
#[derive(Debug, Clone, Default)]
pub struct ServedApis {
    group_versions: BTreeSet<String>,
}

impl ServedApis {
    /// One request for the API groups (and one for the core versions).
    pub async fn discover(client: &Client) -> Result<Self, Error> {
        let mut group_versions: BTreeSet<String> =
            client.list_core_api_versions().await?.versions.into_iter().collect();
        for group in client.list_api_groups().await?.groups {
            group_versions.extend(group.versions.into_iter().map(|v| v.group_version));
        }
        Ok(Self { group_versions })
    }

    /// Whether `api_version` (`group/version`, or `version` for the core group) is served.
    pub fn serves(&self, api_version: &str) -> bool {
        self.group_versions.contains(api_version)
    }
}
