//! The manager process: it assembles the controllers ([`manager`]), serves `/metrics`, `/healthz`
//! and `/readyz` ([`admin`], [`metrics`], [`readiness`]), elects a leader ([`lease`],
//! [`leadership`]), drains on a signal ([`shutdown`]), and reads its arguments, logging setup and
//! apiserver client ([`args`], [`telemetry`], [`client`]).
pub(crate) mod admin;
pub(crate) mod args;
pub mod client;
pub(crate) mod leadership;
pub(crate) mod lease;
pub(crate) mod manager;
pub(crate) mod metrics;
pub(crate) mod readiness;
pub(crate) mod shutdown;
pub(crate) mod telemetry;
