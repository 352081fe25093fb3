//! Foo: `status.happy` is true while a Pod named `spec.name` exists in the Foo's namespace.
//!
//! Pods are watched metadata-only, and a Pod event wakes only the Foos that name that Pod (found
//! through [`FriendIndex`]), so a busy cluster's Pod churn costs a map lookup, not a reconcile of
//! every Foo.

mod crd;
mod index;
mod reconcile;

pub use crd::{Foo, FooSpec, FooStatus};
pub use index::FriendIndex;
pub use reconcile::{Error, FooReconciler, build_status};

use capstan_runtime::{ControllerDef, Informers};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{core::PartialObjectMeta, runtime::Controller};

/// The Foo controller, subscribed to the shared Foo and Pod (metadata) informers.
pub fn controller(informers: &mut Informers) -> ControllerDef<FooReconciler> {
    let foos = informers.subscribe::<Foo>();
    let pods = informers.subscribe::<PartialObjectMeta<Pod>>();
    let foo_store = foos.store();
    let pod_store = pods.store();
    let friends = FriendIndex::default();
    let (recorded, recorded_store) = (friends.clone(), foo_store.clone());
    let foo_changes = foos
        .into_stream()
        .inspect(move |foo| recorded.observe(foo, &recorded_store));
    let lookup = friends.clone();
    let lookup_store = foo_store.clone();
    let controller = Controller::for_shared_stream(foo_changes, foo_store)
        .watches_shared_stream(pods.into_stream(), move |pod| lookup.foos_naming(&pod, &lookup_store));
    ControllerDef {
        controller,
        reconciler: FooReconciler::new(pod_store),
    }
}
