use capstan_runtime::{
    Action, Context, ReconcileError, Reconciler,
    apply::{ApplyOutcome, is_controlled_by},
};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Service},
    jiff::Timestamp,
};
use kube::{
    Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use std::sync::Arc;

use crate::{
    Memcached, PodsByInstance,
    build::{SpecError, build_deployment, build_headless_service},
    status::{Observed, build_status, changes_deployment_spec, own_part},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecError),
    #[error("Deployment {0} exists and is not controlled by this Memcached; delete or rename it")]
    ResourceExists(String),
    #[error("applying an owned object: {0}")]
    Apply(#[source] capstan_runtime::Error),
    #[error("writing status: {0}")]
    Status(#[source] capstan_runtime::Error),
}

impl ReconcileError for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::ResourceExists(_) => "resource_exists",
            Error::Apply(e) | Error::Status(e) => e.metric_label(),
        }
    }

    fn event_reason(&self) -> Option<&'static str> {
        Some(match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::ResourceExists(_) => "ResourceExists",
            Error::Apply(_) | Error::Status(_) => "ReconcileFailed",
        })
    }
}

pub struct MemcachedReconciler {
    deployments: Store<Deployment>,
    services: Store<Service>,
    pods: PodsByInstance,
}

impl MemcachedReconciler {
    pub fn new(deployments: Store<Deployment>, services: Store<Service>, pods: PodsByInstance) -> Self {
        Self {
            deployments,
            services,
            pods,
        }
    }

    /// The Deployment of this name, from the cache of every Deployment in scope. Should a
    /// foreign Deployment appear in the instant before the cache hears of it, the apply cannot
    /// take it over if it has a controller (the apiserver refuses a second controller reference).
    fn find_deployment(&self, namespace: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.get(&ObjectRef::new(name).within(namespace))
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
        let current = self.find_deployment(&namespace, &name);
        if let Some(existing) = &current
            && !is_controlled_by(existing.as_ref(), &uid)
        {
            self.write_status(&mc, ctx, Observed::Conflict, Vec::new()).await?;
            return Err(Error::ResourceExists(name));
        }

        let just_changed = changes_deployment_spec(&desired, current.as_deref());
        let outcome = ctx.apply(&desired, current.as_deref()).await.map_err(Error::Apply)?;
        // Plain apply for now: the runtime's refusing child apply replaces it (a foreign,
        // unlabelled Service of this name is not in the cache and would be taken over).
        let service = build_headless_service(&mc)?;
        let cached_service = self.services.get(&ObjectRef::new(&name).within(&namespace));
        ctx.apply(&service, cached_service.as_deref())
            .await
            .map_err(Error::Apply)?;
        if outcome == ApplyOutcome::Applied {
            let size = mc.spec.size;
            let (reason, action, note) = match current.as_ref().and_then(|d| d.spec.replicas) {
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
        if outcome == ApplyOutcome::Applied && current.is_none() {
            // The new Deployment's watch event reconciles this object again within milliseconds,
            // with the Deployment (and usually its Pod) in the caches: one status write then
            // instead of an empty one now and another then.
            return Ok(Action::await_change());
        }
        let observed = Observed::Owned {
            deployment: current.as_deref(),
            just_changed: just_changed && outcome == ApplyOutcome::Applied,
        };
        self.write_status(&mc, ctx, observed, self.pods.pods_of(&namespace, &name))
            .await?;
        // Deployment and Pod events drive everything; no periodic resync is needed.
        Ok(Action::await_change())
    }
}
