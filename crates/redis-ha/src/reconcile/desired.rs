//! The pure step of the reconcile: from a RedisHA and what was read about it to every child it
//! should own and the status to write once they are applied. No client, no I/O.
use k8s_openapi::jiff::Timestamp;

use super::{
    status::{Health, build_status},
    validate::SpecError,
};
use crate::{
    RedisHAStatus,
    build::{self, Children},
    crd::RedisHA,
};

/// What the reconcile has read besides the RedisHA.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// What the children are built from (owner, cluster domain, password hashes, counts).
    pub children: build::Inputs<'a>,
    /// How the running sets are doing, for the status.
    pub health: Health<'a>,
    /// When the status's conditions change, if they do.
    pub now: Timestamp,
}

/// What a RedisHA should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub children: Children,
    /// The status once every child is applied.
    pub status: RedisHAStatus,
}

/// Every child of a valid RedisHA and its status, or why the spec cannot be acted on.
pub fn desired(rha: &RedisHA, inputs: &Inputs<'_>) -> Result<Desired, SpecError> {
    let children = build::build_children(rha, inputs.children)?;
    let status = build_status(rha, Ok(inputs.health.clone()), inputs.now);
    Ok(Desired { children, status })
}
