//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics and timings.
//!
//! Expiry is judged by when this process last *saw the record change*, never by the timestamps
//! written in it, so clock skew between replicas cannot make two leaders. A leader that cannot
//! renew for `renew_deadline` steps down while its lease (`lease_duration`) is still valid, so
//! there is never a moment with two writers. On shutdown the leader clears the holder, and a
//! follower, polling every `retry_period`, takes over at once instead of waiting for expiry.
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::{Error, process::metrics::Metrics};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// controller-runtime refuses timings that cannot keep one leader; so do we.
    pub fn validate(&self) -> Result<(), Error> {
        if self.lease_duration <= self.renew_deadline {
            return Err(Error::LeaderElection(
                "lease duration must be greater than the renew deadline".into(),
            ));
        }
        if self.renew_deadline <= self.retry_period.mul_f64(1.2) {
            return Err(Error::LeaderElection(
                "renew deadline must be greater than 1.2 × the retry period".into(),
            ));
        }
        if self.retry_period.is_zero() {
            return Err(Error::LeaderElection("retry period must be positive".into()));
        }
        Ok(())
    }
}

/// The last version of the record this process saw, and when it saw it change.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    /// The holder's `leaseDurationSeconds`: the holder, not this process, says how long its
    /// lease lasts (client-go reads it from the record too).
    lease_duration: Option<Duration>,
    at: Instant,
}

impl Observed {
    fn of(spec: &LeaseSpec, at: Instant) -> Self {
        Self {
            holder: spec.holder_identity.clone(),
            renew_time: spec.renew_time.clone(),
            lease_duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            at,
        }
    }
}

/// Whether this process may take or keep the lease now, given what it observed. A record
/// without a duration lasts `default_duration` (this process's own setting).
fn may_acquire(observed: &Observed, identity: &str, default_duration: Duration, now: Instant) -> bool {
    match observed.holder.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => now.duration_since(observed.at) >= observed.lease_duration.unwrap_or(default_duration),
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        })
    }

    /// Campaigns and renews until `stop` resolves, publishing leadership on `leader`. The leader
    /// keeps renewing while its controllers drain; the caller stops it once they have, then
    /// [`release`](Self::release)s the lease.
    pub async fn run(
        mut self,
        leader: watch::Sender<bool>,
        metrics: Metrics,
        stop: impl std::future::Future<Output = ()>,
    ) -> Self {
        let mut stop = std::pin::pin!(stop);
        let name = self.config.name.clone();
        let mut last_renewed: Option<Instant> = None;
        loop {
            let is_leader = last_renewed.is_some();
            // A renewal must finish before the deadline; a hung request must not keep a leader.
            let budget = match last_renewed {
                Some(at) => self.config.renew_deadline.saturating_sub(at.elapsed()),
                None => self.config.retry_period.max(Duration::from_secs(5)),
            };
            let attempt = tokio::select! {
                result = tokio::time::timeout(budget, self.try_acquire_or_renew()) => result,
                () = &mut stop => return self,
            };
            match attempt {
                Ok(Ok(true)) => {
                    if !is_leader {
                        tracing::info!(lease = %name, identity = %self.config.identity, "became leader");
                        leader.send_replace(true);
                        metrics.set_leader(&name, true);
                    }
                    last_renewed = Some(Instant::now());
                }
                Ok(Ok(false)) => {}
                Ok(Err(error)) => tracing::warn!(lease = %name, %error, "lease request failed"),
                Err(_) => tracing::warn!(lease = %name, "lease request timed out"),
            }
            if let Some(at) = last_renewed
                && at.elapsed() >= self.config.renew_deadline
            {
                tracing::error!(lease = %name, "could not renew the lease before the renew deadline; stepping down");
                leader.send_replace(false);
                metrics.set_leader(&name, false);
                last_renewed = None;
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period) => {}
                () = &mut stop => return self,
            }
        }
    }

    /// Gives the lease up if this process holds it, so a follower takes over at its next retry.
    pub async fn release(&mut self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %self.config.name, "released the lease");
        Ok(())
    }

    /// One round: read the record, and take or renew it when allowed. `Ok(true)` means this
    /// process holds the lease now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let now = Instant::now();
        let identity = self.config.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec_for_us(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let seen = Observed::of(&spec, now);
        let changed = self.observed.as_ref().is_none_or(|o| {
            o.holder != seen.holder || o.renew_time != seen.renew_time || o.lease_duration != seen.lease_duration
        });
        if changed {
            self.observed = Some(seen);
        }
        let observed = self
            .observed
            .as_ref()
            .ok_or(Error::LeaderElection("no observation".into()))?;
        if !may_acquire(observed, &identity, self.config.lease_duration, now) {
            return Ok(false);
        }
        lease.spec = Some(self.spec_for_us(Some(&spec)));
        // `replace` carries the resourceVersion we read: if another replica wrote in between,
        // the apiserver answers 409 and this round is lost, never shared.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observed = Some(Observed::of(&updated.spec.unwrap_or_default(), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    fn spec_for_us(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let ours = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(self.config.identity.as_str()));
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.config.lease_duration.as_secs())
                    .unwrap_or(i32::MAX)
                    .max(1),
            ),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..Default::default()
        }
    }
}

/// An identity unique per process: the Pod (or host) name, and a random suffix so a restarted
/// process never mistakes the previous incarnation's lease for its own.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "capstan-manager".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}_{:08x}{:04x}", nanos, std::process::id() & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(holder: Option<&str>, at: Instant) -> Observed {
        Observed {
            holder: holder.map(str::to_owned),
            renew_time: None,
            lease_duration: None,
            at,
        }
    }

    #[test]
    fn expiry_follows_the_duration_written_in_the_record() {
        let seen_at = Instant::now();
        let own_setting = Duration::from_secs(15);
        let short = Observed {
            lease_duration: Some(Duration::from_secs(1)),
            ..observed(Some("other"), seen_at)
        };
        assert!(may_acquire(&short, "me", own_setting, seen_at + Duration::from_secs(1)));
        let long = Observed {
            lease_duration: Some(Duration::from_secs(60)),
            ..observed(Some("other"), seen_at)
        };
        assert!(!may_acquire(
            &long,
            "me",
            own_setting,
            seen_at + Duration::from_secs(30)
        ));
        assert!(may_acquire(&long, "me", own_setting, seen_at + Duration::from_secs(60)));
    }

    #[test]
    fn a_free_or_own_lease_may_be_taken_at_once() {
        let now = Instant::now();
        let fifteen = Duration::from_secs(15);
        assert!(may_acquire(&observed(None, now), "me", fifteen, now));
        assert!(may_acquire(&observed(Some(""), now), "me", fifteen, now));
        assert!(may_acquire(&observed(Some("me"), now), "me", fifteen, now));
    }

    #[test]
    fn another_holder_is_respected_until_its_record_stood_still_for_a_lease_duration() {
        let seen_at = Instant::now();
        let fifteen = Duration::from_secs(15);
        assert!(!may_acquire(
            &observed(Some("other"), seen_at),
            "me",
            fifteen,
            seen_at + Duration::from_secs(14)
        ));
        assert!(may_acquire(
            &observed(Some("other"), seen_at),
            "me",
            fifteen,
            seen_at + fifteen
        ));
    }

    #[test]
    fn timings_that_allow_two_leaders_are_refused() {
        let config = |lease, renew, retry| LeaseConfig {
            name: "l".into(),
            namespace: "default".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        };
        assert!(config(15, 10, 2).validate().is_ok());
        assert!(config(10, 10, 2).validate().is_err());
        assert!(config(15, 2, 2).validate().is_err());
        assert!(config(15, 10, 0).validate().is_err());
    }
}
