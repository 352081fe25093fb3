//! Pure rendering of redis.conf, sentinel.conf and the scripts the Pods run, into the data of
//! the two configuration ConfigMaps.
//!
//! What is the same for every Pod lives in ConfigMaps (rendered here); what differs per Pod (its
//! announced hostname, whom it replicates, the password) is added at start by the scripts, on a
//! writable volume, so no password is ever written into a ConfigMap and no bare Pod IP into
//! persistent configuration. The scripts are POSIX sh using only redis-cli and coreutils/sed, as in
//! the official `redis:7` image and on a Debian host; they run every redis-cli call under
//! `timeout` and bound every loop.
mod redis_conf;
mod scripts;
mod sentinel_conf;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use self::scripts::sample_scripts;
use self::{
    redis_conf::redis_conf,
    scripts::{
        redis_prestop_script, redis_ready_script, redis_start_script, sentinel_init_script, sentinel_ready_script,
    },
    sentinel_conf::sentinel_conf,
};
use crate::config::{
    ConfigError, REDIS_CONF, REDIS_PRESTOP, REDIS_READY, REDIS_START, Rendering, SENTINEL_CONF, SENTINEL_INIT,
    SENTINEL_READY,
};

/// The Redis ConfigMap's data.
pub fn redis_config_data(r: &Rendering) -> Result<BTreeMap<String, String>, ConfigError> {
    Ok(BTreeMap::from([
        (REDIS_CONF.to_owned(), redis_conf(r)?),
        (REDIS_START.to_owned(), redis_start_script(r)),
        (REDIS_READY.to_owned(), redis_ready_script(r)),
        (REDIS_PRESTOP.to_owned(), redis_prestop_script(r)),
    ]))
}

/// The Sentinel ConfigMap's data.
pub fn sentinel_config_data(r: &Rendering) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SENTINEL_CONF.to_owned(), sentinel_conf(r)),
        (SENTINEL_INIT.to_owned(), sentinel_init_script(r)),
        (SENTINEL_READY.to_owned(), sentinel_ready_script(r)),
    ])
}
