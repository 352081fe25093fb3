//! The runtime every capstan controller shares.
//!
//! A controller crate describes its kind, what it watches ([`Watches`]) and how it reconciles
//! ([`Reconciler`]); this crate owns everything else: the shared informers, the wiring over kube's
//! `Controller`, server-side apply that skips no-op writes ([`apply`], [`Children`]), status
//! conditions ([`conditions`]), events, Prometheus metrics, the admin server (`/metrics`,
//! `/healthz`, `/readyz`), leader election and graceful shutdown ([`Manager`]).
//!
//! Inside, the files group by subsystem: `informer/` (watches and the caches they feed),
//! `write/` (what goes to the apiserver), `process/` (the manager process and its endpoints),
//! and at the top what a controller is handed (`context`, `controller`, `watches`, `tasks`).
//! What a controller crate or the manager binary may use is re-exported here; the rest is
//! private to the crate.

pub mod compat;
mod context;
mod controller;
mod error;
mod events;
mod failure;
mod informer;
pub mod labels;
mod process;
mod served;
mod tasks;
mod watches;
mod write;

pub use context::Context;
pub use controller::{ReconcileError, Reconciler};
pub use error::Error;
pub use events::EventPublisher;
pub use failure::ReconcileFailure;
pub use informer::{ChildCache, IndexSubscription, MetadataIndex, Names, SharedIndex, Subscription, key, split_keys};
#[cfg(any(test, feature = "testing"))]
pub use informer::{child_cache_from, store_from};
pub use process::{
    args::RuntimeArgs,
    client::from_environment as client_from_environment,
    leadership::Leadership,
    manager::{BoundAddrs, ControllerEntry, Manager},
    shutdown::Shutdown,
    telemetry::{LogFormat, init as init_logging},
};
pub use served::ServedApis;
pub use tasks::{RefusedWrite, TaskContext};
pub use watches::{Trigger, Watches};
pub use write::{
    apply::{ApplyOutcome, FIELD_MANAGER, apply, apply_status, controller_owner_ref, needs_apply},
    children::{ChildApplied, Children},
    conditions,
};

/// The parts a manager wires by itself, for the runtime's own integration tests, which assemble
/// them by hand against a real apiserver (feature `testing`, for dev-dependencies only).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod parts {
    pub use crate::{
        informer::Informers,
        process::{client, metrics::Metrics, readiness::Readiness},
        watches::managed_by_capstan,
    };
}

/// Locks `mutex`, recovering the data if a panicking thread poisoned it: every critical section in
/// capstan leaves its data consistent, so a poisoned lock still holds valid data.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Re-exported so controller crates name one version of kube's runtime types.
pub use kube::runtime::controller::Action;
