//! The Kubernetes client every manager builds the same way.
use kube::{Api, Client, Config, api::ListParams};
use std::time::Duration;

use crate::{Error, informer::Informable};

/// A client from in-cluster config or `KUBECONFIG` (like kubectl), identified by `user_agent`
/// so the apiserver's audit log can tell the manager's requests apart.
pub async fn from_environment(user_agent: &str) -> Result<Client, Error> {
    let mut config = Config::infer().await.map_err(|e| Error::Config(e.to_string()))?;
    let agent = http::HeaderValue::from_str(user_agent)
        .map_err(|e| Error::Config(format!("user agent {user_agent:?}: {e}")))?;
    config.headers.push((http::header::USER_AGENT, agent));
    Client::try_from(config).map_err(Error::Kube)
}

/// Waits until the apiserver serves `K`: a manager started before its CRDs are installed says so
/// plainly and stays unready instead of failing its watches with 404s.
pub async fn wait_until_served<K: Informable>(client: Client, namespace: Option<String>) {
    let api = match namespace.as_deref() {
        Some(ns) => Api::<K>::namespaced(client, ns),
        None => Api::<K>::all(client),
    };
    let mut delay = Duration::from_millis(500);
    let mut warned = false;
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => {
                if warned {
                    tracing::info!(kind = %K::kind(&()), "now served; starting");
                }
                return;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                if !warned {
                    tracing::error!(
                        kind = %K::kind(&()),
                        resource = %format!("{}.{}", K::plural(&()), K::group(&())),
                        "the apiserver does not serve this kind: install the CRDs (the Helm chart's crds/); waiting"
                    );
                    warned = true;
                }
            }
            Err(error) => tracing::warn!(kind = %K::kind(&()), %error, "cannot list; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
