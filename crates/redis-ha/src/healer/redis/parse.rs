//! Reading Redis and Sentinel replies into what the healer decides on. Pure.
use std::collections::BTreeMap;

use crate::{
    config::{Endpoint, SentinelTimings},
    healer::{Replication, Role, SentinelView},
};

/// Why an `INFO replication` reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no role line")]
    NoRole,
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("field {field}: {value:?} is not a number")]
    NotANumber { field: &'static str, value: String },
}

/// Parses `INFO replication`.
pub fn parse_info_replication(info: &str) -> Result<Replication, ParseError> {
    let fields: BTreeMap<&str, &str> = info
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .collect();
    let number = |field: &'static str| -> Result<Option<i64>, ParseError> {
        fields
            .get(field)
            .map(|value| {
                value.parse::<i64>().map_err(|_| ParseError::NotANumber {
                    field,
                    value: (*value).to_owned(),
                })
            })
            .transpose()
    };
    let role = match fields.get("role").copied() {
        Some("master") => Role::Master,
        Some("slave") | Some("replica") => Role::Replica,
        Some(other) => return Err(ParseError::UnknownRole(other.to_owned())),
        None => return Err(ParseError::NoRole),
    };
    let master = match (role, fields.get("master_host"), number("master_port")?) {
        (Role::Replica, Some(host), Some(port)) => Some(Endpoint::new(
            *host,
            u16::try_from(port).map_err(|_| ParseError::NotANumber {
                field: "master_port",
                value: port.to_string(),
            })?,
        )),
        _ => None,
    };
    let offset = match role {
        Role::Replica => number("slave_repl_offset")?.or(number("master_repl_offset")?),
        Role::Master => number("master_repl_offset")?,
    }
    .unwrap_or(0);
    let link_up = fields.get("master_link_status") == Some(&"up");
    let link_down_seconds = match role {
        Role::Replica if !link_up => number("master_link_down_since_seconds")?,
        _ => None,
    };
    Ok(Replication {
        role,
        master,
        link_up,
        link_down_seconds,
        sync_in_progress: number("master_sync_in_progress")? == Some(1),
        offset,
        priority: match role {
            Role::Replica => number("slave_priority")?.and_then(|p| u32::try_from(p).ok()),
            Role::Master => None,
        },
        requires_replicas: role == Role::Master && fields.contains_key("min_slaves_good_slaves"),
        connected_replicas: number("connected_slaves")?.unwrap_or(0).try_into().unwrap_or(0),
    })
}

/// A flat `[key, value, key, value, …]` reply (SENTINEL MASTER, one entry of REPLICAS) as a map.
pub fn pairs(flat: Vec<String>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut items = flat.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        map.insert(key, value);
    }
    map
}

/// Reads a Sentinel's view from its `SENTINEL MASTER` fields and `GET-MASTER-ADDR-BY-NAME`.
pub fn parse_sentinel_view(master: &BTreeMap<String, String>, address: Option<Endpoint>) -> SentinelView {
    let count = |key: &str| master.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    let flagged = |wanted: &[&str]| {
        master
            .get("flags")
            .is_some_and(|flags| flags.split(',').any(|f| wanted.contains(&f)))
    };
    SentinelView {
        master: address,
        failover_in_progress: flagged(&["failover_in_progress"]),
        master_down: flagged(&["s_down", "o_down"]),
        known_replicas: count("num-slaves"),
        known_sentinels: count("num-other-sentinels"),
        config_epoch: master.get("config-epoch").and_then(|v| v.parse().ok()).unwrap_or(0),
        tilt: false,
        settings: (|| {
            let number = |key: &str| master.get(key)?.parse::<u32>().ok();
            let timings = SentinelTimings {
                down_after_ms: number("down-after-milliseconds")?,
                failover_timeout_ms: number("failover-timeout")?,
            };
            Some((timings, number("quorum")?))
        })(),
    }
}

/// Whether `INFO sentinel` says the Sentinel is in TILT mode.
pub fn parse_tilt(info: &str) -> bool {
    info.lines().any(|line| line.trim() == "sentinel_tilt:1")
}

/// The ids of the Sentinels' connections in a `CLIENT LIST` reply: named `sentinel-<id>-cmd` or
/// `-pubsub` by Sentinel, or, since a link whose `AUTH` was refused could not name itself either,
/// any connection from a Sentinel's address that is not a replication link.
pub fn sentinel_client_ids(client_list: &str, sentinel_hosts: &[&str]) -> Vec<u64> {
    client_list
        .lines()
        .filter_map(|line| {
            let field = |key: &str| {
                line.split(' ')
                    .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            };
            let named = field("name").is_some_and(|name| name.starts_with("sentinel-"));
            let from_sentinel = field("addr")
                .and_then(|addr| addr.rsplit_once(':'))
                .is_some_and(|(host, _)| sentinel_hosts.contains(&host));
            let replication = field("flags").is_some_and(|flags| flags.contains(['S', 'M']));
            let sentinel_link = named || (from_sentinel && !replication);
            sentinel_link.then(|| field("id")?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER_INFO: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=127.0.0.1,port=7001,state=online,offset=4242,lag=0\r\n\
        min_slaves_good_slaves:2\r\nmaster_failover_state:no-failover\r\nmaster_replid:abc\r\nmaster_repl_offset:4242\r\n";
    const REPLICA_INFO: &str = "# Replication\r\nrole:slave\r\nmaster_host:cache-0.cache-headless.apps.svc.cluster.local\r\n\
        master_port:6379\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\n\
        master_link_down_since_seconds:7\r\nmaster_sync_in_progress:1\r\nslave_read_repl_offset:10\r\nslave_repl_offset:10\r\n\
        slave_priority:100\r\nconnected_slaves:0\r\nmaster_repl_offset:12\r\n";

    #[test]
    fn sentinel_links_are_told_apart_from_other_clients() {
        // Redis 7.0's CLIENT LIST: one line per client, the healer's own connection included.
        let list = "id=3 addr=10.0.0.7:41234 laddr=10.0.0.5:6379 fd=8 name=sentinel-1a2b3c4d-cmd age=40 flags=N cmd=ping user=default\n\
            id=4 addr=10.0.0.7:41236 laddr=10.0.0.5:6379 fd=9 name=sentinel-1a2b3c4d-pubsub age=40 flags=P cmd=subscribe user=default\n\
            id=5 addr=10.0.0.8:41000 laddr=10.0.0.5:6379 fd=13 name= age=2 flags=N cmd=ping user=default\n\
            id=6 addr=10.0.0.8:41002 laddr=10.0.0.5:6379 fd=14 name= age=2 flags=N cmd=subscribe user=default\n\
            id=9 addr=10.0.0.2:50000 laddr=10.0.0.5:6379 fd=10 name= age=0 flags=N cmd=client|list user=default\n\
            id=12 addr=10.0.0.9:50002 laddr=10.0.0.5:6379 fd=11 name=app-sentinel-like age=3 flags=N cmd=set user=default\n\
            id=15 addr=10.0.0.8:6379 laddr=10.0.0.5:6379 fd=12 name= age=30 flags=S cmd=replconf user=default\n";
        // 10.0.0.8 is a Sentinel whose AUTH was refused (it could not name its links) and, in
        // this made-up list, also a replica's address: its replication link stays.
        assert_eq!(sentinel_client_ids(list, &["10.0.0.7", "10.0.0.8"]), [3, 4, 5, 6]);
        assert_eq!(sentinel_client_ids(list, &[]), [3, 4], "named links only");
        assert!(sentinel_client_ids("", &["10.0.0.7"]).is_empty());
        assert!(
            sentinel_client_ids("id=x name=sentinel-1-cmd\nname=sentinel-2-cmd", &[]).is_empty(),
            "no usable id"
        );
    }

    #[test]
    fn info_replication_of_a_master() {
        let replication = parse_info_replication(MASTER_INFO).expect("parses");
        assert_eq!(
            replication,
            Replication {
                role: Role::Master,
                master: None,
                link_up: false,
                link_down_seconds: None,
                sync_in_progress: false,
                offset: 4242,
                priority: None,
                requires_replicas: true,
                connected_replicas: 2,
            }
        );
    }

    #[test]
    fn info_replication_of_a_syncing_replica_uses_its_replica_offset() {
        let replication = parse_info_replication(REPLICA_INFO).expect("parses");
        assert_eq!(replication.role, Role::Replica);
        assert_eq!(
            replication.master,
            Some(Endpoint::new("cache-0.cache-headless.apps.svc.cluster.local", 6379))
        );
        assert!(!replication.link_up);
        assert_eq!(replication.link_down_seconds, Some(7));
        assert_eq!(replication.priority, Some(100));
        assert!(replication.sync_in_progress);
        assert_eq!(replication.offset, 10);
        let linked = REPLICA_INFO.replace("master_link_status:down", "master_link_status:up");
        assert_eq!(
            parse_info_replication(&linked).expect("parses").link_down_seconds,
            None,
            "a link that is up has no down time, whatever a stale field says"
        );
    }

    #[test]
    fn bad_info_is_an_error_not_a_guess() {
        assert_eq!(parse_info_replication("# Replication\r\n"), Err(ParseError::NoRole));
        assert_eq!(
            parse_info_replication("role:sentinel\r\n"),
            Err(ParseError::UnknownRole("sentinel".into()))
        );
        assert!(matches!(
            parse_info_replication("role:master\r\nmaster_repl_offset:x\r\n"),
            Err(ParseError::NotANumber { .. })
        ));
    }

    #[test]
    fn a_sentinel_view_reads_flags_and_counts() {
        let master = pairs(
            [
                "name",
                "cache",
                "flags",
                "master,failover_in_progress",
                "num-slaves",
                "2",
                "num-other-sentinels",
                "2",
            ]
            .map(String::from)
            .to_vec(),
        );
        let view = parse_sentinel_view(&master, Some(Endpoint::new("h", 6379)));
        assert!(view.failover_in_progress);
        assert_eq!(view.settings, None, "not reported: nothing to compare");
        let mut with_settings = master.clone();
        for (key, value) in [
            ("down-after-milliseconds", "4000"),
            ("failover-timeout", "20000"),
            ("quorum", "2"),
        ] {
            with_settings.insert(key.into(), value.into());
        }
        assert_eq!(
            parse_sentinel_view(&with_settings, None).settings,
            Some((SentinelTimings::default(), 2))
        );
        assert!(!view.master_down);
        assert_eq!((view.known_replicas, view.known_sentinels), (2, 2));
        let quiet = pairs(["flags", "master"].map(String::from).to_vec());
        assert!(!parse_sentinel_view(&quiet, None).failover_in_progress);
        for flags in ["master,s_down", "master,s_down,o_down,disconnected"] {
            let down = pairs(["flags", flags].map(String::from).to_vec());
            assert!(parse_sentinel_view(&down, None).master_down, "{flags}");
        }
        let disconnected = pairs(["flags", "master,disconnected"].map(String::from).to_vec());
        assert!(
            !parse_sentinel_view(&disconnected, None).master_down,
            "a link being re-established is not a judgement"
        );
    }

    #[test]
    fn tilt_mode_is_read_from_info_sentinel() {
        let info = "# Sentinel\r\nsentinel_masters:1\r\nsentinel_tilt:1\r\nsentinel_tilt_since_seconds:4\r\n";
        assert!(parse_tilt(info));
        assert!(!parse_tilt(&info.replace("sentinel_tilt:1", "sentinel_tilt:0")));
        assert!(!parse_tilt(""));
    }
}
