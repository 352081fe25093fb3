use capstan_runtime::{
    Action, ApplyOutcome, ChildApplied, ChildCache, Context, ReconcileFailure, Reconciler, SharedIndex,
};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Service},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};
use std::sync::Arc;

use crate::{
    Memcached, PodsByInstance,
    build::{SpecError, build_deployment, build_headless_service},
    status::{Observed, build_status, changes_deployment_spec, own_part},
};

pub type Error = ReconcileFailure<SpecError>;

pub struct MemcachedReconciler {
    deployments: ChildCache<Deployment>,
    services: ChildCache<Service>,
    pods: SharedIndex<PodsByInstance>,
}

impl MemcachedReconciler {
    pub fn new(
        deployments: ChildCache<Deployment>,
        services: ChildCache<Service>,
        pods: SharedIndex<PodsByInstance>,
    ) -> Self {
        Self {
            deployments,
            services,
            pods,
        }
    }

    async fn write_status(
        &self,
        mc: &Memcached,
        ctx: &Context,
        observed: Observed<'_>,
        nodes: Vec<String>,
    ) -> Result<(), Error> {
        let status = build_status(mc, observed, nodes, Timestamp::now());
        // Compared with capstan's own part only: other managers' conditions are not in the apply.
        let current = mc.status.as_ref().map(own_part);
        ctx.apply_status(mc, current.as_ref(), &status)
            .await
            .map_err(Error::Status)
            .map(drop)
    }

    /// Reports an apply error that retrying cannot fix in the status, then returns it.
    async fn refused(&self, mc: &Memcached, ctx: &Context, error: capstan_runtime::Error) -> Result<Action, Error> {
        if let Some(observed) = match (&error, error.invalid_message()) {
            (capstan_runtime::Error::ForeignChild { kind, .. }, _) => Some(Observed::Conflict { kind }),
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
        let (desired, service) = match build_deployment(&mc).and_then(|d| Ok((d, build_headless_service(&mc)?))) {
            Ok(desired) => desired,
            Err(invalid) => {
                self.write_status(&mc, ctx, Observed::Invalid(&invalid), Vec::new())
                    .await?;
                return Err(invalid.into());
            }
        };
        // Whether this apply changes the Pod template or size: then the cached Deployment's
        // generation and status predate it and cannot say the rollout is done.
        let cached = self.deployments.get(&ObjectRef::new(&name).within(&namespace));
        let just_changed = changes_deployment_spec(&desired, cached.as_deref());
        let mut children = ctx.children(mc.as_ref()).map_err(Error::Apply)?;
        let ChildApplied { outcome, previous } = match children.apply(&self.deployments, desired).await {
            Ok(applied) => applied,
            Err(error) => return self.refused(&mc, ctx, error).await,
        };
        if let Err(error) = children.apply(&self.services, service).await {
            return self.refused(&mc, ctx, error).await;
        }
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
        let observed = Observed::Owned {
            deployment: previous.as_deref(),
            just_changed: just_changed && outcome == ApplyOutcome::Applied,
        };
        self.write_status(
            &mc,
            ctx,
            observed,
            self.pods.read(|pods| pods.pods_of(&namespace, &name)),
        )
        .await?;
        // Deployment and Pod events drive everything; no periodic resync is needed.
        Ok(Action::await_change())
    }
}
