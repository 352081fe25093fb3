//! Where a command goes and how it gets there. Every call opens its own connection and is
//! bounded by [`Timeouts`] as a whole, so an unreachable or stalled Pod costs the healer at most
//! that long.
use std::{future::Future, time::Duration};

use redis::{AsyncConnectionConfig, IntoConnectionInfo, aio::MultiplexedConnection};

use crate::config::Endpoint;

/// Bounds on each call: connecting, and the whole call (connect + command(s)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            call: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{endpoint}: {what} timed out after {after:?}")]
    Timeout {
        endpoint: Endpoint,
        what: &'static str,
        after: Duration,
    },
    #[error("{endpoint}: {what}: {source}")]
    Redis {
        endpoint: Endpoint,
        what: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("{0} is not a member of this RedisHA")]
    UnknownMember(String),
    /// A planned failover abandoned before Sentinel was asked: it could not be made safe.
    #[error("planned failover abandoned: {pod}: {why}")]
    NotVerified { pod: String, why: String },
    #[error("{endpoint}: {what}: unexpected reply: {detail}")]
    Unexpected {
        endpoint: Endpoint,
        what: &'static str,
        detail: String,
    },
}

/// Where to send a command, with the password Redis or Sentinel requires.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub endpoint: &'a Endpoint,
    pub password: Option<&'a str>,
    pub timeouts: Timeouts,
    /// A Sentinel that has no password yet (one started before `spec.auth` was set, until its
    /// Pod is rolled) refuses `AUTH`: for a Sentinel that refusal means "connect without".
    sentinel: bool,
}

impl<'a> Target<'a> {
    pub fn new(endpoint: &'a Endpoint, password: Option<&'a str>, timeouts: Timeouts) -> Self {
        Self {
            endpoint,
            password,
            timeouts,
            sentinel: false,
        }
    }

    /// A Sentinel, which requires the set's password when `spec.auth` is set.
    pub fn sentinel(endpoint: &'a Endpoint, password: Option<&'a str>, timeouts: Timeouts) -> Self {
        Self {
            sentinel: true,
            ..Self::new(endpoint, password, timeouts)
        }
    }

    pub(super) fn redis_error(&self, what: &'static str) -> impl FnOnce(redis::RedisError) -> IoError + '_ {
        move |source| IoError::Redis {
            endpoint: self.endpoint.clone(),
            what,
            source,
        }
    }

    pub(super) fn unexpected(&self, what: &'static str, detail: impl Into<String>) -> IoError {
        IoError::Unexpected {
            endpoint: self.endpoint.clone(),
            what,
            detail: detail.into(),
        }
    }

    pub(super) async fn connect(&self, what: &'static str) -> Result<MultiplexedConnection, IoError> {
        match self.connect_with(what, self.password).await {
            Err(error) if self.sentinel && self.password.is_some() && is_no_password_configured(&error) => {
                self.connect_with(what, None).await
            }
            connected => connected,
        }
    }

    pub(super) async fn connect_with(
        &self,
        what: &'static str,
        password: Option<&str>,
    ) -> Result<MultiplexedConnection, IoError> {
        let mut info = (self.endpoint.host.clone(), self.endpoint.port)
            .into_connection_info()
            .map_err(self.redis_error(what))?;
        // Redis 7.0 has no CLIENT SETINFO; do not send it.
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(self.redis_error(what))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(Some(self.timeouts.call));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(self.redis_error(what))
    }

    /// Runs `body` on a fresh connection, the whole bounded by the call timeout.
    pub(super) async fn call<T, F, Fut>(&self, what: &'static str, body: F) -> Result<T, IoError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, IoError>>,
    {
        let work = async {
            let connection = self.connect(what).await?;
            body(connection).await
        };
        tokio::time::timeout(self.timeouts.call, work)
            .await
            .unwrap_or_else(|_| {
                Err(IoError::Timeout {
                    endpoint: self.endpoint.clone(),
                    what,
                    after: self.timeouts.call,
                })
            })
    }

    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        command: redis::Cmd,
    ) -> Result<T, IoError> {
        self.call(what, |mut connection| async move {
            command
                .query_async(&mut connection)
                .await
                .map_err(self.redis_error(what))
        })
        .await
    }
}

/// Whether `AUTH` was refused while connecting. The client library does not keep the reason;
/// a server with no password configured refuses it too, and then takes commands without one.
fn is_no_password_configured(error: &IoError) -> bool {
    matches!(error, IoError::Redis { source, .. } if source.kind() == redis::ErrorKind::AuthenticationFailed)
}

/// Whether Redis refused the password (`WRONGPASS`, `NOAUTH`).
pub fn is_auth_refused(error: &IoError) -> bool {
    matches!(error, IoError::Redis { source, .. }
        if source.kind() == redis::ErrorKind::AuthenticationFailed
            || ["WRONGPASS", "NOAUTH"].iter().any(|code| source.to_string().contains(code)))
}
