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
pub use reconcile::{Desired, Error, FooReconciler, Inputs, desired};

use capstan_runtime::{ControllerEntry, Names, Watches};
use k8s_openapi::api::core::v1::Pod;
use kube::{CustomResourceExt, runtime::watcher};

/// The Foo controller's line in a manager's controller table.
pub const CONTROLLER: ControllerEntry = ControllerEntry {
    name: "foo",
    crds: || vec![Foo::crd()],
    add: |manager| manager.add(controller),
};

/// Foos, and the names of the Pods in scope (watched metadata-only), a Pod's change mapped to
/// the Foos naming it.
pub fn controller(w: &mut Watches<'_, Foo>) -> FooReconciler {
    let friends = FriendIndex::default();
    let (recorded, recorded_store) = (friends.clone(), w.store());
    w.on_change(move |foo| recorded.observe(foo, &recorded_store));
    let pods = w.index::<Pod, Names>(watcher::Config::default(), index::trim_pod);
    let pod_names = pods.index();
    let foos = w.store();
    w.watches(pods.into_stream(), move |pod| friends.foos_naming(&pod, &foos));
    FooReconciler::new(pod_names)
}
