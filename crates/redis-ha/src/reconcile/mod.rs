//! The reconcile: reads (auth Secret by `get` only) → validates → builds → applies every child
//! with the runtime's refusing child apply → prunes → writes the status.
mod desired;
pub(crate) mod status;
pub(crate) mod validate;

pub use self::{
    desired::{Desired, Inputs, desired},
    status::{FAILOVER_CAPABLE, Health},
    validate::SpecError,
};

use std::{sync::Arc, time::Duration};

use capstan_runtime::{
    Action, ChildCache, Context, ReconcileFailure, Reconciler, Watches, compat::PodDisruptionBudgetV1Beta1,
    controller_owner_ref,
};
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Pod, Secret, Service},
        policy::v1::PodDisruptionBudget,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use crate::{
    RedisHA,
    build::{self, AuthError},
    healer::members::removed_pods_never_ran,
    names::{bootstrap_config_map_name, sentinel_set},
    reconcile::{
        status::{Blocked, build_status},
        validate::{check_auth_kept, validate},
    },
    shared::Shared,
};

/// How long a RedisHA waits for its missing or unusable auth Secret before looking again (Secrets
/// are not watched: the operator reads one by name with `get` only).
pub const SECRET_RETRY: Duration = Duration::from_secs(60);
/// How often the auth Secret is read again for a password change (not watched: `get` only). A
/// re-read that finds nothing changed writes nothing.
pub const SECRET_RECHECK: Duration = Duration::from_secs(30);

pub type Error = ReconcileFailure<SpecError>;

pub struct RedisHAReconciler {
    stateful_sets: ChildCache<StatefulSet>,
    services: ChildCache<Service>,
    config_maps: ChildCache<ConfigMap>,
    budgets: BudgetCache,
    /// The RedisHAs' Pods (trimmed), the healer's cache: whether a scale-down removes data.
    pods: Store<Pod>,
    shared: Shared,
}

/// The owned PodDisruptionBudgets, cached in the version the cluster serves: policy/v1, or
/// policy/v1beta1 on servers older than 1.21 (the local v1.20 plane).
pub enum BudgetCache {
    V1(ChildCache<PodDisruptionBudget>),
    V1Beta1(ChildCache<PodDisruptionBudgetV1Beta1>),
}

impl BudgetCache {
    pub fn owned(w: &mut Watches<'_, RedisHA>) -> Self {
        if w.serves("policy/v1") {
            Self::V1(w.owns())
        } else {
            Self::V1Beta1(w.owns())
        }
    }
}

/// Why the auth Secret cannot be used yet.
enum AuthProblem {
    Missing(String),
    Invalid(AuthError),
}

impl RedisHAReconciler {
    pub fn new(
        stateful_sets: ChildCache<StatefulSet>,
        services: ChildCache<Service>,
        config_maps: ChildCache<ConfigMap>,
        budgets: BudgetCache,
        pods: Store<Pod>,
        shared: Shared,
    ) -> Self {
        Self {
            stateful_sets,
            services,
            config_maps,
            budgets,
            pods,
            shared,
        }
    }

    /// The password (`None` without `spec.auth`) and its hash, or why it cannot be used.
    async fn read_auth(
        &self,
        rha: &RedisHA,
        ctx: &Context,
    ) -> Result<Result<Option<(String, String)>, AuthProblem>, Error> {
        let Some(auth) = &rha.spec.auth else {
            return Ok(Ok(None));
        };
        let namespace = rha.namespace().unwrap_or_default();
        let secret = Api::<Secret>::namespaced(ctx.client().clone(), &namespace)
            .get_opt(&auth.secret_name)
            .await
            .map_err(|source| Error::Read {
                what: "the auth Secret",
                source,
            })?;
        let Some(secret) = secret else {
            return Ok(Err(AuthProblem::Missing(auth.secret_name.clone())));
        };
        let salt = rha.uid().unwrap_or_default();
        let hash = match build::auth_hash(&secret, &auth.key, &salt) {
            Ok(hash) => hash,
            Err(error) => return Ok(Err(AuthProblem::Invalid(error))),
        };
        let password = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&auth.key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default();
        Ok(Ok(Some((password, hash))))
    }

    /// Writes the status of a RedisHA that cannot be acted on as it stands.
    async fn write_status(&self, rha: &RedisHA, ctx: &Context, blocked: Blocked<'_>) -> Result<(), Error> {
        let status = build_status(rha, Err(blocked), Timestamp::now());
        ctx.apply_status(rha, rha.status.as_ref(), &status)
            .await
            .map_err(Error::Status)?;
        Ok(())
    }

    /// Reports a refused child apply (a foreign object, or one the apiserver refuses as invalid)
    /// in the status, so no older `Ready=True` stands over it, then returns the error.
    async fn refused(&self, rha: &RedisHA, ctx: &Context, error: capstan_runtime::Error) -> Error {
        let blocked = match &error {
            capstan_runtime::Error::ForeignChild { kind, name, .. } => Some(Blocked::ForeignChild { kind, name }),
            other => other.invalid_message().map(Blocked::Rejected),
        };
        if let Some(blocked) = blocked
            && let Err(status_error) = self.write_status(rha, ctx, blocked).await
        {
            return status_error;
        }
        Error::Apply(error)
    }

    fn ready_replicas(&self, namespace: &str, name: &str) -> i32 {
        self.stateful_sets
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|s| s.status.as_ref().and_then(|st| st.ready_replicas))
            .unwrap_or(0)
    }
}

impl Reconciler for RedisHAReconciler {
    type Object = RedisHA;
    type Error = Error;
    const NAME: &'static str = "redis-ha";

    async fn reconcile(&self, rha: Arc<RedisHA>, ctx: &Context) -> Result<Action, Error> {
        let name = rha.name_any();
        let namespace = rha.namespace().unwrap_or_default();
        let key = (namespace.clone(), name.clone());
        let running = self.stateful_sets.get(&ObjectRef::new(&name).within(&namespace));
        if let Err(invalid) = validate(&rha).and_then(|()| check_auth_kept(&rha, running.as_deref())) {
            self.write_status(&rha, ctx, Blocked::InvalidSpec(&invalid)).await?;
            return Err(invalid.into());
        }
        let (password, auth_hash) = match self.read_auth(&rha, ctx).await? {
            Ok(Some((password, hash))) => (Some(password), Some(hash)),
            Ok(None) => (None, None),
            Err(problem) => {
                let (blocked, reason, note) = match &problem {
                    AuthProblem::Missing(secret) => (
                        Blocked::SecretMissing(secret),
                        "SecretMissing",
                        format!(
                            "auth Secret {secret} does not exist; retrying in {}s",
                            SECRET_RETRY.as_secs()
                        ),
                    ),
                    AuthProblem::Invalid(error) => (
                        Blocked::Auth(error),
                        "InvalidSecret",
                        format!("{error}; retrying in {}s", SECRET_RETRY.as_secs()),
                    ),
                };
                ctx.events().warning(&rha.object_ref(&()), reason, "ReadSecret", note);
                self.write_status(&rha, ctx, blocked).await?;
                // Nothing is deleted; the running Pods keep their password.
                return Ok(Action::requeue(SECRET_RETRY));
            }
        };
        self.shared.set_password(key.clone(), password);
        let owner = controller_owner_ref(rha.as_ref()).map_err(Error::Apply)?;
        let plan = self.shared.plan(&key);
        let master_ordinal = plan
            .as_ref()
            .and_then(|p| p.master.as_deref())
            .and_then(|pod| pod.strip_prefix(&format!("{name}-"))?.parse().ok());
        let stored_redis = self.stateful_sets.get(&ObjectRef::new(&name).within(&namespace));
        let current_replicas = stored_redis.as_ref().and_then(|set| set.spec.replicas);
        let rolling = stored_redis.as_deref().is_some_and(build::roll_pending);
        // The last master verified (for Sentinels that all restart at once) stays as recorded
        // while none is known (a failover in progress).
        let recorded = self
            .config_maps
            .get(&ObjectRef::new(&bootstrap_config_map_name(&name)).within(&namespace))
            .and_then(|c| c.data.as_ref()?.get(crate::config::BOOTSTRAP_MASTER_KEY).cloned());
        let verified_master = plan
            .as_ref()
            .and_then(|p| p.master.clone())
            .or_else(|| rha.status.as_ref().and_then(|s| s.master.clone()))
            .or(recorded);
        let pods: Vec<Pod> = self.pods.state().iter().map(|p| p.as_ref().clone()).collect();
        let removed_never_ran = removed_pods_never_ran(&name, &namespace, &pods, rha.spec.replicas);
        let redis_replicas = build::redis_replicas(
            rha.spec.replicas,
            current_replicas,
            master_ordinal,
            rolling,
            removed_never_ran,
        );
        // Held because no master is known yet and a Pod it would remove may hold data.
        let scale_down_held =
            (master_ordinal.is_none() && !rolling && redis_replicas > rha.spec.replicas).then_some(redis_replicas);
        let stored_sentinels = self
            .stateful_sets
            .get(&ObjectRef::new(&sentinel_set(&name)).within(&namespace));
        let sentinel_auth_hash = build::sentinel_auth_hash(
            auth_hash.as_deref(),
            stored_redis.as_deref(),
            stored_sentinels.as_deref(),
        );
        // Read before the applies, which change none of it: the ready counts are the
        // StatefulSets' status, the plan and a refused write the healer's.
        let refused = self.shared.refusal(&key);
        let health = Health {
            redis_ready: self.ready_replicas(&namespace, &name),
            sentinels_ready: self.ready_replicas(&namespace, &sentinel_set(&name)),
            plan: plan.as_ref(),
            refused: refused.as_ref(),
            scale_down_held,
        };
        let children = build::Inputs {
            owner: &owner,
            cluster_domain: &self.shared.cluster_domain,
            auth_hash: auth_hash.as_deref(),
            sentinel_auth_hash: sentinel_auth_hash.as_deref(),
            redis_replicas,
            recorded_master: verified_master.as_deref(),
        };
        let inputs = Inputs {
            children,
            health,
            now: Timestamp::now(),
        };
        let Desired {
            children: desired,
            status,
        } = match desired(&rha, &inputs) {
            Ok(desired) => desired,
            Err(invalid) => {
                self.write_status(&rha, ctx, Blocked::InvalidSpec(&invalid)).await?;
                return Err(invalid.into());
            }
        };
        let mut children = ctx.children(rha.as_ref()).map_err(Error::Apply)?;
        let stored_sets: Vec<Arc<StatefulSet>> = [name.clone(), sentinel_set(&name)]
            .iter()
            .filter_map(|set| self.stateful_sets.get(&ObjectRef::new(set).within(&namespace)))
            .collect();
        let stored: Vec<&StatefulSet> = stored_sets.iter().map(AsRef::as_ref).collect();
        if build::older_config_in_use(&stored, &desired.stateful_sets) {
            // Pods not rolled yet mount an older revision's ConfigMap: pruned once the roll ends.
            for older in self.config_maps.controlled_by(&owner.uid, &namespace) {
                children.keep::<ConfigMap>(older.name_any());
            }
        }
        for config_map in desired.config_maps {
            if let Err(error) = children.apply(&self.config_maps, config_map).await {
                return Err(self.refused(&rha, ctx, error).await);
            }
        }

        for service in desired.services {
            if let Err(error) = children.apply(&self.services, service).await {
                return Err(self.refused(&rha, ctx, error).await);
            }
        }
        for set in desired.stateful_sets {
            if let Err(error) = children.apply(&self.stateful_sets, set).await {
                return Err(self.refused(&rha, ctx, error).await);
            }
        }
        for pdb in desired.pod_disruption_budgets {
            let applied = match &self.budgets {
                BudgetCache::V1(cache) => children.apply(cache, pdb).await.map(drop),
                BudgetCache::V1Beta1(cache) => children.apply(cache, pdb.into()).await.map(drop),
            };
            if let Err(error) = applied {
                return Err(self.refused(&rha, ctx, error).await);
            }
        }
        children.prune_all().await.map_err(Error::Apply)?;
        ctx.apply_status(rha.as_ref(), rha.status.as_ref(), &status)
            .await
            .map_err(Error::Status)?;
        // StatefulSet, Pod and healer-plan changes wake this; the auth Secret is only read, so a
        // RedisHA with one looks again for a password change.
        Ok(if rha.spec.auth.is_some() {
            Action::requeue(SECRET_RECHECK)
        } else {
            Action::await_change()
        })
    }
}
