//! What tests need from the API beyond plain CRUD: namespaces that are really usable, CRDs that are
//! really served, and ServiceAccount tokens.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, Pod, Secret, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::wait::{await_condition, conditions},
};

use crate::{Error, random};

const FIELD_MANAGER: &str = "capstan-testenv";
const POLL: Duration = Duration::from_millis(100);
const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Creates `<prefix>-<random>`, retrying on the (unlikely) name collision.
pub(crate) async fn create_namespace(client: &Client, prefix: &str) -> Result<String, Error> {
    let prefix = namespace_prefix(prefix);
    let api: Api<Namespace> = Api::all(client.clone());
    let mut attempts = 0;
    loop {
        let name = format!("{prefix}-{}", random::suffix(8));
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match api.create(&PostParams::default(), &namespace).await {
            Ok(_) => return Ok(name),
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Lowercase alphanumerics and dashes, short enough that the suffix still fits in 63 characters.
fn namespace_prefix(prefix: &str) -> String {
    let cleaned: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "test".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Waits until Pods can be created in `namespace`. On v1.20 the ServiceAccount admission plugin
/// refuses every Pod until the controller-manager has made the `default` ServiceAccount and its
/// token Secret, and until the apiserver's own cache has seen that Secret; a dry-run Pod create
/// goes through that very admission, so it is the final word.
///
/// `abort` is polled each round so a dead controller-manager fails fast with its log instead of
/// after the whole timeout.
pub(crate) async fn wait_pods_admitted(
    client: &Client,
    namespace: &str,
    timeout: Duration,
    mut abort: impl FnMut() -> Option<Error>,
) -> Result<(), Error> {
    let started = Instant::now();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let probe: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "generateName": "capstan-testenv-admission-probe-" },
        "spec": { "containers": [{ "name": "probe", "image": "capstan-testenv/probe" }] },
    }))
    .map_err(|e| Error::Invalid(format!("admission probe Pod: {e}")))?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    loop {
        if let Some(error) = abort() {
            return Err(error);
        }
        let last = match accounts.get_opt("default").await? {
            None => "ServiceAccount default does not exist yet".to_owned(),
            Some(account) => {
                let mut token_secret = false;
                for reference in account.secrets.iter().flatten() {
                    let Some(name) = reference.name.as_deref() else {
                        continue;
                    };
                    if let Some(secret) = secrets.get_opt(name).await? {
                        token_secret |= secret.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN_TYPE)
                            && secret.data.is_some_and(|d| d.contains_key("token"));
                    }
                }
                if !token_secret {
                    "ServiceAccount default has no token Secret yet".to_owned()
                } else {
                    match pods.create(&dry_run, &probe).await {
                        Ok(_) => return Ok(()),
                        Err(e) => format!("a dry-run Pod was refused: {e}"),
                    }
                }
            }
        };
        if started.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("namespace {namespace} to accept Pods (ServiceAccount default and its token Secret)"),
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Server-side applies the CRDs, then waits until each one is Established (served).
pub(crate) async fn apply_crds(
    client: &Client,
    crds: &[CustomResourceDefinition],
    timeout: Duration,
) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::with_capacity(crds.len());
    for crd in crds {
        let name = crd
            .metadata
            .name
            .clone()
            .ok_or_else(|| Error::Invalid("a CustomResourceDefinition has no name".into()))?;
        let mut crd = crd.clone();
        // A copy read back from a server carries fields an apply must not send.
        crd.metadata.managed_fields = None;
        crd.metadata.resource_version = None;
        crd.metadata.uid = None;
        crd.status = None;
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        names.push(name);
    }
    let started = Instant::now();
    for name in names {
        let remaining = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(
            remaining,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::Timeout {
                    what: format!("CRD {name} to be Established"),
                    waited: started.elapsed(),
                    last: e.to_string(),
                });
            }
            Err(_) => {
                let last = api
                    .get_opt(&name)
                    .await?
                    .and_then(|crd| crd.status)
                    .map(|status| format!("{:?}", status.conditions))
                    .unwrap_or_else(|| "no status".into());
                return Err(Error::Timeout {
                    what: format!("CRD {name} to be Established"),
                    waited: started.elapsed(),
                    last,
                });
            }
        }
    }
    Ok(())
}

/// A token for `service_account` from the TokenRequest API, valid for an hour.
pub(crate) async fn service_account_token(
    client: &Client,
    namespace: &str,
    service_account: &str,
) -> Result<String, Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(service_account, &PostParams::default(), &request)
        .await?;
    answer.status.and_then(|s| s.token).ok_or_else(|| {
        Error::Invalid(format!(
            "the TokenRequest for {namespace}/{service_account} came back without a token"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_prefixes_become_dns_labels() {
        assert_eq!(namespace_prefix("My_Test::case"), "my-test--case");
        assert_eq!(namespace_prefix("--"), "test");
        assert_eq!(namespace_prefix(&"x".repeat(80)).len(), 50);
    }
}
