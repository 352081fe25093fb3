use capstan_runtime::{
    Action, Context, ReconcileError, Reconciler,
    apply::{ApplyOutcome, is_controlled_by},
    labels,
};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
};
use std::sync::Arc;

use crate::{
    Memcached,
    build::{APP, Observed, SpecError, build_deployment, build_status},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecError),
    #[error("Deployment {0} exists and is not controlled by this Memcached; delete or rename it")]
    ResourceExists(String),
    #[error("reading Deployment: {0}")]
    Read(#[source] kube::Error),
    #[error("applying Deployment: {0}")]
    Apply(#[source] capstan_runtime::Error),
    #[error("writing status: {0}")]
    Status(#[source] capstan_runtime::Error),
}

impl ReconcileError for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::ResourceExists(_) => "resource_exists",
            Error::Read(_) => "read",
            Error::Apply(e) | Error::Status(e) => e.metric_label(),
        }
    }

    fn event_reason(&self) -> Option<&'static str> {
        Some(match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::ResourceExists(_) => "ResourceExists",
            Error::Read(_) | Error::Apply(_) | Error::Status(_) => "ReconcileFailed",
        })
    }
}

pub struct MemcachedReconciler {
    deployments: Store<Deployment>,
    pods: Store<PartialObjectMeta<Pod>>,
}

impl MemcachedReconciler {
    pub fn new(deployments: Store<Deployment>, pods: Store<PartialObjectMeta<Pod>>) -> Self {
        Self { deployments, pods }
    }

    /// The live Pods of a Memcached, by name: those carrying its selector labels.
    fn nodes(&self, namespace: &str, instance: &str) -> Vec<String> {
        let selector = labels::selector_labels(APP, instance);
        let mut names: Vec<String> = self
            .pods
            .state()
            .iter()
            .filter(|pod| pod.namespace().as_deref() == Some(namespace) && pod.metadata.deletion_timestamp.is_none())
            .filter(|pod| selector.iter().all(|(k, v)| pod.labels().get(k) == Some(v)))
            .map(|pod| pod.name_any())
            .collect();
        names.sort();
        names
    }

    /// The Deployment of this name, from the cache of capstan's Deployments or, when absent
    /// there (not created yet, or someone else's), from the apiserver.
    async fn find_deployment(
        &self,
        ctx: &Context,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Deployment>>, Error> {
        if let Some(cached) = self.deployments.get(&ObjectRef::new(name).within(namespace)) {
            return Ok(Some(cached));
        }
        let api = Api::<Deployment>::namespaced(ctx.client().clone(), namespace);
        Ok(api.get_opt(name).await.map_err(Error::Read)?.map(Arc::new))
    }

    async fn write_status(
        &self,
        mc: &Memcached,
        ctx: &Context,
        observed: Observed<'_>,
        nodes: Vec<String>,
    ) -> Result<(), Error> {
        let status = build_status(mc, observed, nodes, Timestamp::now());
        ctx.apply_status(mc, mc.status.as_ref(), &status)
            .await
            .map_err(Error::Status)?;
        Ok(())
    }
}

impl Reconciler for MemcachedReconciler {
    type Object = Memcached;
    type Error = Error;
    const NAME: &'static str = "memcached";

    async fn reconcile(&self, mc: Arc<Memcached>, ctx: &Context) -> Result<Action, Error> {
        let name = mc.name_any();
        let namespace = mc.namespace().unwrap_or_default();
        let desired = match build_deployment(&mc) {
            Ok(desired) => desired,
            Err(invalid) => {
                self.write_status(&mc, ctx, Observed::Invalid(&invalid), Vec::new())
                    .await?;
                return Err(invalid.into());
            }
        };
        let uid = mc.meta().uid.clone().unwrap_or_default();
        let current = self.find_deployment(ctx, &namespace, &name).await?;
        if let Some(existing) = &current
            && !is_controlled_by(existing.as_ref(), &uid)
        {
            self.write_status(&mc, ctx, Observed::Conflict, Vec::new()).await?;
            return Err(Error::ResourceExists(name));
        }

        let outcome = ctx.apply(&desired, current.as_deref()).await.map_err(Error::Apply)?;
        if outcome == ApplyOutcome::Applied {
            let size = mc.spec.size;
            let previous = current.as_ref().and_then(|d| d.spec.replicas);
            let regarding = mc.object_ref(&());
            match previous {
                None => {
                    ctx.events()
                        .normal(
                            &regarding,
                            "Created",
                            "CreateDeployment",
                            format!("created Deployment {name} with {size} replicas"),
                        )
                        .await
                }
                Some(from) if from != size => {
                    ctx.events()
                        .normal(
                            &regarding,
                            "Scaled",
                            "ScaleDeployment",
                            format!("scaled Deployment {name} from {from} to {size} replicas"),
                        )
                        .await
                }
                Some(_) => {
                    ctx.events()
                        .normal(
                            &regarding,
                            "Updated",
                            "UpdateDeployment",
                            format!("updated Deployment {name}"),
                        )
                        .await
                }
            }
        }
        if outcome == ApplyOutcome::Applied && current.is_none() {
            // The new Deployment's watch event reconciles this object again within milliseconds,
            // with the Deployment (and usually its Pod) in the caches: one status write then
            // instead of an empty one now and another then.
            return Ok(Action::await_change());
        }
        let deployment_status = current.as_ref().and_then(|d| d.status.as_ref());
        self.write_status(
            &mc,
            ctx,
            Observed::Owned(deployment_status),
            self.nodes(&namespace, &name),
        )
        .await?;
        // Deployment and Pod events drive everything; no periodic resync is needed.
        Ok(Action::await_change())
    }
}
