use capstan_runtime::{Action, ChildApplied, Context, ReconcileError, Reconciler, apply::ApplyOutcome, labels};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt, core::PartialObjectMeta, runtime::reflector::Store};
use std::sync::Arc;

use crate::{
    Memcached,
    build::{APP, Observed, SpecError, build_deployment, build_status},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecError),
    #[error("applying Deployment: {0}")]
    Apply(#[source] capstan_runtime::Error),
    #[error("writing status: {0}")]
    Status(#[source] capstan_runtime::Error),
}

impl ReconcileError for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Apply(capstan_runtime::Error::ForeignChild { .. }) => "resource_exists",
            Error::Apply(e) | Error::Status(e) => e.metric_label(),
        }
    }

    fn event_reason(&self) -> Option<&'static str> {
        Some(match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Apply(capstan_runtime::Error::ForeignChild { .. }) => "ResourceExists",
            Error::Apply(e) if e.invalid_message().is_some() => "Rejected",
            Error::Apply(_) | Error::Status(_) => "ReconcileFailed",
        })
    }

    fn is_permanent(&self) -> bool {
        match self {
            Error::InvalidSpec(_) => true,
            Error::Apply(e) | Error::Status(e) => e.is_permanent(),
        }
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
            .map_err(Error::Status)
            .map(drop)
    }

    /// Reports an apply error that retrying cannot fix in the status, then returns it.
    async fn refused(&self, mc: &Memcached, ctx: &Context, error: capstan_runtime::Error) -> Result<Action, Error> {
        if let Some(observed) = match (&error, error.invalid_message()) {
            (capstan_runtime::Error::ForeignChild { .. }, _) => Some(Observed::Conflict),
            (_, message) => message.map(Observed::Rejected),
        } {
            self.write_status(mc, ctx, observed, Vec::new()).await?;
        }
        Err(Error::Apply(error))
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
        let mut children = ctx.children(mc.as_ref()).map_err(Error::Apply)?;
        let ChildApplied { outcome, previous } = match children.apply(&self.deployments, desired).await {
            Ok(applied) => applied,
            Err(error) => return self.refused(&mc, ctx, error).await,
        };
        if outcome == ApplyOutcome::Applied {
            let size = mc.spec.size;
            let (reason, action, note) = match previous.as_ref().and_then(|d| d.spec.replicas) {
                None => (
                    "Created",
                    "CreateDeployment",
                    format!("created Deployment {name} with {size} replicas"),
                ),
                Some(from) if from != size => (
                    "Scaled",
                    "ScaleDeployment",
                    format!("scaled Deployment {name} from {from} to {size} replicas"),
                ),
                Some(_) => ("Updated", "UpdateDeployment", format!("updated Deployment {name}")),
            };
            ctx.events().normal(&mc.object_ref(&()), reason, action, note);
        }
        if outcome == ApplyOutcome::Applied && previous.is_none() {
            // The new Deployment's watch event reconciles this object again within milliseconds,
            // with the Deployment (and usually its Pod) in the caches: one status write then
            // instead of an empty one now and another then.
            return Ok(Action::await_change());
        }
        let deployment_status = previous.as_ref().and_then(|d| d.status.as_ref());
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
