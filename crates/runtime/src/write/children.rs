//! Objects a custom resource owns: applied with a controller owner reference and the
//! `managed-by: capstan` label (so the label-selected caches see them), never taking over a
//! same-named object someone else controls, and pruned when the desired set no longer has them.
//!
//! ```text
//! let mut children = ctx.children(redis.as_ref())?;
//! children.apply(&self.statefulsets, build_statefulset(&redis)?).await?;
//! for service in build_services(&redis) {
//!     children.apply(&self.services, service).await?;
//! }
//! children.prune(&self.services).await?; // Services this RedisHA no longer wants
//! children.prune_all().await?; // or: every kind the controller owns
//! ```
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Api, Resource, ResourceExt, api::ApiResource, runtime::reflector::ObjectRef};
use serde::Serialize;
use std::{
    any::TypeId,
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use crate::{
    ChildCache, Context, Error,
    informer::Informable,
    labels,
    write::apply::{ApplyOutcome, controller_owner_ref},
};

/// What [`Children::apply`] did, and the child as it was before.
#[derive(Debug)]
pub struct ChildApplied<C> {
    pub outcome: ApplyOutcome,
    /// The stored child before this apply (`None`: it was created now).
    pub previous: Option<Arc<C>>,
}

/// The children of one owner within one reconcile.
pub struct Children<'a> {
    ctx: &'a Context,
    owner_ref: OwnerReference,
    namespace: String,
    applied: HashMap<TypeId, BTreeSet<String>>,
}

impl<'a> Children<'a> {
    pub(crate) fn new<P>(ctx: &'a Context, owner: &P) -> Result<Self, Error>
    where
        P: Resource<DynamicType = ()>,
    {
        Ok(Self {
            ctx,
            owner_ref: controller_owner_ref(owner)?,
            namespace: owner
                .meta()
                .namespace
                .clone()
                .ok_or(Error::MissingField("metadata.namespace"))?,
            applied: HashMap::new(),
        })
    }

    /// Server-side applies `desired` as a child of the owner, in the owner's namespace, unless the
    /// stored child already matches. `cache` is the store [`Watches::owns`] handed back.
    ///
    /// A same-named object the owner does not control is refused with [`Error::ForeignChild`]
    /// (nothing is written). The cache only holds capstan's objects, so a miss costs one GET to
    /// tell "free" from "someone else's". Under a controller, the refused name is then watched
    /// until the owner's next reconcile that does not refuse it again; if the object goes away or
    /// changes hands first, the owner is reconciled.
    ///
    /// [`Watches::owns`]: crate::Watches::owns
    pub async fn apply<C>(&mut self, cache: &ChildCache<C>, mut desired: C) -> Result<ChildApplied<C>, Error>
    where
        C: Informable + Serialize,
    {
        let name = desired
            .meta()
            .name
            .clone()
            .ok_or(Error::MissingField("metadata.name"))?;
        let meta = desired.meta_mut();
        meta.namespace = Some(self.namespace.clone());
        meta.owner_references = Some(vec![self.owner_ref.clone()]);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(labels::MANAGED_BY.to_owned(), labels::MANAGER.to_owned());

        let previous = match cache.get(&ObjectRef::new(&name).within(&self.namespace)) {
            Some(cached) => Some(cached),
            None => self.ctx.read(&self.namespace, &name).await?.map(Arc::new),
        };
        if let Some(existing) = &previous
            && !controls(&self.owner_ref, existing.as_ref())
        {
            self.refused(&ApiResource::erase::<C>(&()), &name, existing.meta());
            return Err(Error::ForeignChild {
                kind: C::kind(&()).into_owned(),
                name,
                owner_kind: self.owner_ref.kind.clone(),
            });
        }
        let (outcome, stored) = self.ctx.apply_returning(&desired, previous.as_deref()).await?;
        if let (None, Some(created)) = (&previous, &stored) {
            // Until its watch event arrives, the next reconcile reads it from here, not with a GET.
            cache.remember_created(created);
        }
        self.applied.entry(TypeId::of::<C>()).or_default().insert(name);
        Ok(ChildApplied { outcome, previous })
    }

    /// Remembers the refusal so the owner is reconciled again once the object in the way goes
    /// (the child caches never see it: it lacks capstan's label).
    fn refused(&self, resource: &ApiResource, name: &str, existing: &ObjectMeta) {
        if let Some(foreign) = self.ctx.foreign_watches() {
            foreign.refused(&self.owner_ref, &self.namespace, resource, name, existing);
        }
    }

    /// Keeps the child of kind `C` named `name` from [`Self::prune`] without applying it: one
    /// still in use although the spec wants another now (a revision's immutable ConfigMap that
    /// running Pods mount until a roll moves them on).
    pub fn keep<C: 'static>(&mut self, name: impl Into<String>) {
        self.applied.entry(TypeId::of::<C>()).or_default().insert(name.into());
    }

    /// Deletes the children of kind `C` in `cache` that this owner controls and that were not
    /// applied (or kept) through this set: what a spec change no longer wants. Returns their names.
    pub async fn prune<C>(&mut self, cache: &ChildCache<C>) -> Result<Vec<String>, Error>
    where
        C: Informable + Serialize,
    {
        self.prune_unwanted(cache).await
    }

    /// [`prune`](Self::prune) for every kind the controller owns (each
    /// [`Watches::owns`](crate::Watches::owns), in the order it declared them), stopping at the
    /// first failure. Returns the names pruned.
    pub async fn prune_all(&mut self) -> Result<Vec<String>, Error> {
        let mut pruned = Vec::new();
        for owned in self.ctx.owned_kinds() {
            pruned.extend(owned.prune(self).await?);
        }
        Ok(pruned)
    }

    async fn prune_unwanted<C>(&self, cache: &ChildCache<C>) -> Result<Vec<String>, Error>
    where
        C: Informable + Serialize,
    {
        let keep = self.applied.get(&TypeId::of::<C>()).cloned().unwrap_or_default();
        let mut pruned = Vec::new();
        for child in unwanted(cache, &self.owner_ref, &self.namespace, &keep) {
            let name = child.name_any();
            if child.meta().deletion_timestamp.is_none() {
                self.ctx.delete::<C>(&self.namespace, &name).await?;
                pruned.push(name);
            }
        }
        Ok(pruned)
    }
}

/// A kind a controller owns, as [`Children::prune_all`] reaches it: the cache of its children.
pub(crate) trait OwnedKind: Send + Sync {
    fn prune<'c>(&'c self, children: &'c Children<'_>) -> BoxFuture<'c, Result<Vec<String>, Error>>;
}

impl<C: Informable + Serialize> OwnedKind for ChildCache<C> {
    fn prune<'c>(&'c self, children: &'c Children<'_>) -> BoxFuture<'c, Result<Vec<String>, Error>> {
        Box::pin(children.prune_unwanted(self))
    }
}

/// Cached children of `owner` in `namespace` that are not in `keep`.
fn unwanted<C: Informable + Serialize>(
    cache: &ChildCache<C>,
    owner: &OwnerReference,
    namespace: &str,
    keep: &BTreeSet<String>,
) -> Vec<Arc<C>> {
    let mut found: Vec<Arc<C>> = cache
        .controlled_by(&owner.uid, namespace)
        .into_iter()
        .filter(|child| !keep.contains(&child.name_any()))
        .collect();
    found.sort_by_key(|child| child.name_any());
    found
}

fn controls(owner: &OwnerReference, child: &impl Resource) -> bool {
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner.uid)
}

impl Context {
    /// The children of `owner`, for [`Children::apply`] and [`Children::prune`].
    pub fn children<P>(&self, owner: &P) -> Result<Children<'_>, Error>
    where
        P: Resource<DynamicType = ()>,
    {
        Children::new(self, owner)
    }

    /// One GET of `namespace/name` (used on a cache miss).
    async fn read<C: Informable>(&self, namespace: &str, name: &str) -> Result<Option<C>, Error> {
        let api = Api::<C>::namespaced(self.client().clone(), namespace);
        Ok(api.get_opt(name).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::informer::child_cache_from;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "cache.capstan.dev/v1alpha1".into(),
            kind: "Memcached".into(),
            name: "cache".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn config_map(ns: &str, name: &str, owner_uid: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                owner_references: owner_uid.map(|uid| vec![owner(uid)]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_the_owners_children_outside_the_kept_set_are_unwanted() {
        let cache = child_cache_from([
            config_map("a", "keep", Some("u1")),
            config_map("a", "stale-2", Some("u1")),
            config_map("a", "stale-1", Some("u1")),
            config_map("a", "someone-elses", Some("u2")),
            config_map("a", "unowned", None),
            config_map("b", "other-namespace", Some("u1")),
        ]);
        let keep = BTreeSet::from(["keep".to_owned()]);
        let names: Vec<String> = unwanted(&cache, &owner("u1"), "a", &keep)
            .iter()
            .map(|c| c.name_any())
            .collect();
        assert_eq!(names, ["stale-1", "stale-2"]);
    }

    #[test]
    fn a_child_is_controlled_only_through_a_controller_reference_with_the_owners_uid() {
        assert!(controls(&owner("u1"), &config_map("a", "x", Some("u1"))));
        assert!(!controls(&owner("u1"), &config_map("a", "x", Some("u2"))));
        assert!(!controls(&owner("u1"), &config_map("a", "x", None)));
        let mut not_controller = config_map("a", "x", Some("u1"));
        if let Some(refs) = not_controller.metadata.owner_references.as_mut() {
            refs[0].controller = Some(false);
        }
        assert!(!controls(&owner("u1"), &not_controller));
    }
}
