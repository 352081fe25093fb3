//! The Kubernetes client every manager builds the same way.
use kube::{Api, Client, Config, api::ListParams};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use crate::{Error, informer::Informable};

/// A client from in-cluster config or `KUBECONFIG` (like kubectl), identified by `user_agent`
/// so the apiserver's audit log can tell the manager's requests apart.
pub async fn from_environment(user_agent: &str) -> Result<Client, Error> {
    let mut config = Config::infer().await.map_err(|e| Error::Config(e.to_string()))?;
    skip_the_system_trust_store_when_unused(&mut config);
    let agent = http::HeaderValue::from_str(user_agent)
        .map_err(|e| Error::Config(format!("user agent {user_agent:?}: {e}")))?;
    config.headers.push((http::header::USER_AGENT, agent));
    with_timeouts(config)
}

/// How long any API request but a watch may wait for its response. A watch is long by design;
/// kube's watcher drops one idle past its server-side timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to the apiserver may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client whose requests time out: an apiserver that accepts connections and never answers
/// must not hang a reconcile, a Lease renewal or the shutdown.
pub fn with_timeouts(mut config: Config) -> Result<Client, Error> {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let names_a_ca = config.root_cert.is_some();
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|error| match error {
        // Only reachable when the config names no CA: say what to do instead of rustls' words.
        kube::Error::RustlsTls(tls) if !names_a_ca => Error::Config(format!(
            "the kubeconfig names no certificate-authority, so the system's CA certificates would \
             be used, and none could be loaded ({tls}); add `certificate-authority-data` to the \
             kubeconfig (in-cluster config always has the service account's CA)"
        )),
        other => Error::Kube(other),
    })?;
    Ok(builder.with_layer(&RequestTimeout(REQUEST_TIMEOUT)).build())
}

/// A tower layer failing every non-watch request that has no response within its duration.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeout(pub Duration);

impl<S> tower::Layer<S> for RequestTimeout {
    type Service = TimedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimedService { inner, timeout: self.0 }
    }
}

#[derive(Clone, Debug)]
pub struct TimedService<S> {
    inner: S,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for TimedService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // kube tags each request with its verb.
        let is_watch = request
            .extensions()
            .get::<&'static str>()
            .is_some_and(|verb| verb.starts_with("watch"));
        let timeout = self.timeout;
        let response = self.inner.call(request);
        Box::pin(async move {
            if is_watch {
                return response.await.map_err(Into::into);
            }
            match tokio::time::timeout(timeout, response).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(format!("no response from the apiserver within {timeout:?}").into()),
            }
        })
    }
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

/// kube 5 builds its rustls config from the CA the config names (kubeconfig
/// `certificate-authority[-data]`, or the service account's `ca.crt` in-cluster) and nothing else.
/// Only when the config names no CA does it build rustls-platform-verifier's verifier, which loads
/// the system trust store at once and fails where there is none (a `FROM scratch` image) — even
/// with `insecure-skip-tls-verify`, where that verifier is replaced right after. With verification
/// off, an empty root store stands in, so nothing is loaded; a config that needs the system store
/// (no CA, verification on) still uses it.
fn skip_the_system_trust_store_when_unused(config: &mut Config) {
    if config.accept_invalid_certs && config.root_cert.is_none() {
        config.root_cert = Some(Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(accept_invalid_certs: bool, root_cert: Option<Vec<Vec<u8>>>) -> Config {
        let mut config = Config::new("https://127.0.0.1:6443".parse().expect("URL"));
        config.accept_invalid_certs = accept_invalid_certs;
        config.root_cert = root_cert;
        config
    }

    #[test]
    fn an_unverified_connection_loads_no_system_roots() {
        let mut insecure = config(true, None);
        skip_the_system_trust_store_when_unused(&mut insecure);
        assert_eq!(insecure.root_cert, Some(Vec::new()));
    }

    #[test]
    fn a_named_ca_or_verification_without_one_is_left_alone() {
        let mut with_ca = config(false, Some(vec![vec![1, 2, 3]]));
        skip_the_system_trust_store_when_unused(&mut with_ca);
        assert_eq!(with_ca.root_cert, Some(vec![vec![1, 2, 3]]));
        let mut verified = config(false, None);
        skip_the_system_trust_store_when_unused(&mut verified);
        assert_eq!(
            verified.root_cert, None,
            "verification without a named CA needs the system store"
        );
    }
}
