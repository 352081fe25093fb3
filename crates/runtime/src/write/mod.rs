//! Writes to the apiserver: server-side apply that skips no-op writes ([`apply`]), a reconcile's
//! children with their owner reference and pruning ([`children`]), status writes that remember
//! what was written ([`status_writes`]), the watch on objects a controller refused to adopt
//! ([`foreign`]), and the status conditions it writes ([`conditions`]).
pub(crate) mod apply;
pub(crate) mod children;
pub mod conditions;
pub(crate) mod foreign;
pub(crate) mod status_writes;
