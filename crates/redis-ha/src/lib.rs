//! RedisHA: Redis with Sentinel failover. This crate holds everything about the kind that does not
//! need the controller runtime: the CRD, the rendered Redis/Sentinel configuration and scripts, the
//! desired objects, the healer's decisions and the Redis/Sentinel I/O they act through.
pub mod build;
pub mod config;
pub mod crd;
pub mod healer;
pub mod members;
pub mod redis_io;
pub mod status;

pub use crd::{AuthSpec, RedisHA, RedisHASpec, RedisHAStatus, SentinelEndpoint, SentinelSpec, StorageSpec};
