//! The opening a controller's test shares: the controller's CRDs installed in the shared control
//! plane, a fresh namespace, and a manager running only that controller, watching only that
//! namespace (so tests sharing one control plane never see each other's objects).
use capstan_runtime::ControllerEntry;
use kube::Client;

use crate::{ControlPlane, RunningManager, spawn_manager};

pub struct ControllerTest {
    /// The test's own client (the control plane's admin).
    pub client: Client,
    /// The test's namespace: the prefix and a random suffix.
    pub ns: String,
    pub manager: RunningManager,
}

impl ControllerTest {
    /// `controller` running in a fresh namespace named after `prefix`; the manager shares the
    /// test's client.
    pub async fn start(controller: ControllerEntry, prefix: &str) -> Self {
        let (client, ns) = namespace_with_crds(&[controller], prefix).await;
        let manager = spawn_manager(client.clone(), &ns, controller.add)
            .await
            .expect("manager starts");
        Self { client, ns, manager }
    }

    /// As [`start`](Self::start), with the manager on its own client whose requests carry the user
    /// agent `user_agent(namespace)`, so the audit log tells them from the test's.
    pub async fn start_with_user_agent(
        controller: ControllerEntry,
        prefix: &str,
        user_agent: impl FnOnce(&str) -> String,
    ) -> Self {
        let (client, ns) = namespace_with_crds(&[controller], prefix).await;
        let mut config = ControlPlane::shared().kube_config();
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_str(&user_agent(&ns)).expect("user agent"),
        ));
        let manager_client = Client::try_from(config).expect("manager client");
        let manager = spawn_manager(manager_client, &ns, controller.add)
            .await
            .expect("manager starts");
        Self { client, ns, manager }
    }
}

/// The CRDs of `controllers` installed and a fresh namespace named after `prefix`, with no manager:
/// for tests that apply objects themselves or run the manager as a process. Returns the test's
/// client and the namespace.
pub async fn namespace_with_crds(controllers: &[ControllerEntry], prefix: &str) -> (Client, String) {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let crds: Vec<_> = controllers.iter().flat_map(|c| (c.crds)()).collect();
    let names: Vec<_> = controllers.iter().map(|c| c.name).collect();
    cp.apply_crds(&client, &crds)
        .await
        .unwrap_or_else(|e| panic!("install the CRDs of {names:?}: {e}"));
    let ns = cp.namespace(&client, prefix).await.expect("test namespace");
    (client, ns)
}
