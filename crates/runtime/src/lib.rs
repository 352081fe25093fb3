//! The runtime every capstan controller shares.
//!
//! A controller crate describes its kind, what it watches and how it reconciles; this crate owns
//! everything else: the shared informers ([`informer`]), the wiring over kube's `Controller`
//! ([`controller`]), server-side apply that skips no-op writes ([`apply`]), status conditions
//! ([`conditions`]), events, Prometheus metrics, the admin server (`/metrics`, `/healthz`,
//! `/readyz`), leader election and graceful shutdown ([`manager`]).

pub mod admin;
pub mod apply;
pub mod args;
pub mod child_cache;
pub mod children;
pub mod client;
pub mod compat;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod error;
pub mod events;
mod foreign;
pub mod informer;
pub mod labels;
pub mod leadership;
pub mod lease;
pub mod manager;
pub mod meta_index;
pub mod metrics;
pub mod readiness;
pub mod served;
pub mod shutdown;
mod status_writes;
pub mod tasks;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watches;

pub use apply::FIELD_MANAGER;
pub use args::RuntimeArgs;
pub use child_cache::ChildCache;
pub use children::{ChildApplied, Children};
pub use context::Context;
pub use controller::{ReconcileError, Reconciler};
pub use error::Error;
pub use informer::{Informers, Subscription};
pub use leadership::Leadership;
pub use manager::{ControllerEntry, Manager};
pub use meta_index::{MetadataIndex, Names, SharedIndex};
pub use served::ServedApis;
pub use tasks::{RefusedWrite, TaskContext};
pub use watches::{Trigger, Watches};

/// Locks `mutex`, recovering the data if a panicking thread poisoned it: every critical section in
/// capstan leaves its data consistent, so a poisoned lock still holds valid data.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Re-exported so controller crates name one version of kube's runtime types.
pub use kube::runtime::controller::Action;
