//! A client that writes through a RedisHA's master Service at a steady pace and records what it
//! saw: which writes a replica acknowledged (`SET` then `WAIT 1`), and when writes succeeded, so
//! the outage a fault causes is measured as clients feel it. Used by the failover tests and
//! `cargo xtask bench`; useful against any RedisHA (`redis-cli` has no equivalent).
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use capstan_runtime::lock;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, aio::MultiplexedConnection};
use tokio::{task::JoinHandle, time::Instant};

/// How long one write (its `SET` and `WAIT`) may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_millis(1500);
/// `WAIT 1 <ms>`: how long a write waits for a replica's acknowledgement.
const WAIT_MS: u64 = 1000;

#[derive(Debug, Default, Clone)]
pub struct ProbeLog {
    /// Keys whose write a replica acknowledged, in order.
    pub acknowledged: Vec<String>,
    /// When each acknowledged write completed.
    pub successes: Vec<Instant>,
    /// Writes that failed or were not acknowledged.
    pub failures: u64,
    /// The last failure, for diagnostics.
    pub last_error: Option<String>,
}

impl ProbeLog {
    /// The longest stretch without an acknowledged write that overlaps `[from, to]`: gaps between
    /// successes, the first counted from the last success before `from` (or `from` itself), the
    /// last running to `to`.
    pub fn longest_outage(&self, from: Instant, to: Instant) -> Duration {
        let mut previous = self
            .successes
            .iter()
            .rev()
            .find(|t| **t <= from)
            .copied()
            .unwrap_or(from);
        let mut longest = Duration::ZERO;
        for success in self.successes.iter().filter(|t| **t > from && **t <= to) {
            longest = longest.max(success.duration_since(previous));
            previous = *success;
        }
        longest.max(to.saturating_duration_since(previous))
    }

    /// Acknowledged writes completed after `since`.
    pub fn acknowledged_since(&self, since: Instant) -> usize {
        self.successes.iter().filter(|t| **t > since).count()
    }
}

/// Where a probe sends its writes.
#[derive(Debug, Clone)]
pub enum Route {
    /// One address: the `<name>-master` Service, which the operator's role labels steer.
    Service(SocketAddr),
    /// As a Sentinel-aware client does: ask the Sentinels for the master set's master (they
    /// announce Pod FQDNs), resolve it through `dns` (the cluster's DNS, as a Pod does) and
    /// connect there; ask again after every failed write.
    Sentinels {
        sentinels: Vec<SocketAddr>,
        master_set: String,
        dns: SocketAddr,
    },
}

/// A running probe; [`WriteProbe::stop`] ends it.
pub struct WriteProbe {
    log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl WriteProbe {
    /// Writes `<prefix>:<n>` to `address` every `interval`, at most `max_writes` times.
    pub fn start(
        address: SocketAddr,
        password: Option<String>,
        prefix: &str,
        interval: Duration,
        max_writes: u64,
    ) -> WriteProbe {
        Self::start_on(Route::Service(address), password, prefix, interval, max_writes)
    }

    /// Writes `<prefix>:<n>` along `route` every `interval`, at most `max_writes` times.
    pub fn start_on(
        route: Route,
        password: Option<String>,
        prefix: &str,
        interval: Duration,
        max_writes: u64,
    ) -> WriteProbe {
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write_loop(
            route,
            password,
            prefix.to_owned(),
            interval,
            max_writes,
            log.clone(),
            stop.clone(),
        ));
        WriteProbe { log, stop, task }
    }

    /// What was recorded so far.
    pub fn snapshot(&self) -> ProbeLog {
        lock(&self.log).clone()
    }

    /// Stops writing and returns the whole record.
    pub async fn stop(self) -> ProbeLog {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        lock(&self.log).clone()
    }
}

async fn connect(address: SocketAddr, password: Option<&str>) -> Result<MultiplexedConnection, String> {
    let mut info = (address.ip().to_string(), address.port())
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
    if let Some(password) = password {
        settings = settings.set_password(password);
    }
    info = info.set_redis_settings(settings);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(WRITE_TIMEOUT));
    redis::Client::open(info)
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())
}

/// `SET key n` and `WAIT 1`: Ok only when a replica acknowledged the write.
async fn acknowledged_write(connection: &mut MultiplexedConnection, key: &str, n: u64) -> Result<(), String> {
    let work = async {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(n)
            .query_async(connection)
            .await
            .map_err(|e| e.to_string())?;
        let replicas: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(WAIT_MS)
            .query_async(connection)
            .await
            .map_err(|e| e.to_string())?;
        if replicas >= 1 {
            Ok(())
        } else {
            Err("WAIT 1: no replica acknowledged".to_owned())
        }
    };
    tokio::time::timeout(WRITE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("no reply within {WRITE_TIMEOUT:?}")))
}

/// The master a Sentinel-aware client would write to now: the first Sentinel that names one,
/// its announced host resolved through `dns`. The Sentinels take the set's password.
async fn master_from_sentinels(
    sentinels: &[SocketAddr],
    master_set: &str,
    dns: SocketAddr,
    password: Option<&str>,
) -> Result<SocketAddr, String> {
    let mut last = "no Sentinel".to_owned();
    for sentinel in sentinels {
        let endpoint = crate::config::Endpoint::new(sentinel.ip().to_string(), sentinel.port());
        let target = crate::testing::redis_io::Target::sentinel(
            &endpoint,
            password,
            crate::testing::redis_io::Timeouts::default(),
        );
        match crate::testing::redis_io::sentinel_master_address(target, master_set).await {
            Ok(Some(master)) => {
                let ip = resolve(&master.host, dns).await?;
                return Ok(SocketAddr::new(ip, master.port));
            }
            Ok(None) => last = format!("{sentinel} names no master"),
            Err(error) => last = error.to_string(),
        }
    }
    Err(format!("asking the Sentinels: {last}"))
}

/// An A-record lookup of `host` at `dns`, bounded (an IP literal is its own answer).
async fn resolve(host: &str, dns: SocketAddr) -> Result<std::net::IpAddr, String> {
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RecordType},
    };
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let name = Name::from_ascii(format!("{}.", host.trim_end_matches('.'))).map_err(|e| e.to_string())?;
    let mut query = Message::new();
    query
        .set_id(rand_id())
        .set_recursion_desired(true)
        .add_query(Query::query(name, RecordType::A));
    let packet = query.to_vec().map_err(|e| e.to_string())?;
    let lookup = async {
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
            .await
            .map_err(|e| e.to_string())?;
        socket.send_to(&packet, dns).await.map_err(|e| e.to_string())?;
        let mut buffer = [0u8; 1500];
        let (len, _) = socket.recv_from(&mut buffer).await.map_err(|e| e.to_string())?;
        let answer = Message::from_vec(&buffer[..len]).map_err(|e| e.to_string())?;
        answer
            .answers()
            .iter()
            .find_map(|record| record.data().ip_addr())
            .ok_or_else(|| format!("{host}: no address at {dns}"))
    };
    tokio::time::timeout(Duration::from_secs(1), lookup)
        .await
        .unwrap_or_else(|_| Err(format!("{host}: {dns} did not answer within 1 s")))
}

/// A query id that differs between lookups (no need for randomness: one lookup at a time).
fn rand_id() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn write_loop(
    route: Route,
    password: Option<String>,
    prefix: String,
    interval: Duration,
    max_writes: u64,
    log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicBool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connection: Option<MultiplexedConnection> = None;
    for n in 0..max_writes {
        ticks.tick().await;
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let key = format!("{prefix}:{n}");
        let result = match connection.as_mut() {
            Some(connection) => acknowledged_write(connection, &key, n).await,
            None => match route_to(&route, password.as_deref()).await {
                Err(error) => Err(error),
                Ok(address) => match connect(address, password.as_deref()).await {
                    Ok(mut fresh) => {
                        let result = acknowledged_write(&mut fresh, &key, n).await;
                        connection = Some(fresh);
                        result
                    }
                    Err(error) => Err(error),
                },
            },
        };
        let mut log = lock(&log);
        match result {
            Ok(()) => {
                log.acknowledged.push(key);
                log.successes.push(Instant::now());
            }
            Err(error) => {
                // A fresh connection next time: the Service may route it to the new master.
                connection = None;
                log.failures += 1;
                log.last_error = Some(error);
            }
        }
    }
}

async fn route_to(route: &Route, password: Option<&str>) -> Result<SocketAddr, String> {
    match route {
        Route::Service(address) => Ok(*address),
        Route::Sentinels {
            sentinels,
            master_set,
            dns,
        } => master_from_sentinels(sentinels, master_set, *dns, password).await,
    }
}

/// Writes `<prefix>:0..n` one after the other on one connection; returns the keys a replica
/// acknowledged (`WAIT 1`), stopping at the first failure.
pub async fn write_acknowledged(
    address: SocketAddr,
    password: Option<&str>,
    prefix: &str,
    n: u64,
) -> Result<Vec<String>, String> {
    let mut connection = connect(address, password).await?;
    let mut acknowledged = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}:{i}");
        acknowledged_write(&mut connection, &key, i).await?;
        acknowledged.push(key);
    }
    Ok(acknowledged)
}

/// How many of `keys` exist at `address` (checked in batches with `EXISTS`).
pub async fn count_existing(address: SocketAddr, password: Option<&str>, keys: &[String]) -> Result<usize, String> {
    let mut connection = connect(address, password).await?;
    let mut found = 0usize;
    for batch in keys.chunks(500) {
        let n: usize = redis::cmd("EXISTS")
            .arg(batch)
            .query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        found += n;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_outage_spans_from_the_last_success_before_the_fault() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let log = ProbeLog {
            successes: vec![at(0), at(100), at(200), at(1700), at(1800)],
            ..Default::default()
        };
        // Fault at 250 ms: the gap runs from the success at 200 ms to the one at 1700 ms.
        assert_eq!(log.longest_outage(at(250), at(2000)), Duration::from_millis(1500));
        // No success after the fault: the outage lasts until `to`.
        assert_eq!(log.longest_outage(at(1850), at(3000)), Duration::from_millis(1200));
        assert_eq!(log.acknowledged_since(at(250)), 2);
    }
}
