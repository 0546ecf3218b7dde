//! The Redis / Redis Cluster store: bounded-time async get/set, and a circuit breaker so a slow or dead Redis never slows requests (fail open).
//!
//! Every operation is wrapped in a tokio timeout, and every failure (error or timeout) opens
//! the circuit for `cache.redis.breaker`: while it is open, operations return
//! [`RedisError::CircuitOpen`] at once, without I/O. When the period has passed, one operation
//! is let through as a probe (half-open); its success closes the circuit, its failure re-opens it.
//!
//! Connections are made lazily, on first use, so that a Redis that is down at start-up does not
//! stop promptgate from starting; the connect itself is inside the operation's timeout. A timeout
//! drops the connection, so the next probe connects afresh. After a dead Redis comes back,
//! recovery can take two breaker periods: the first probe may still meet the client's last failed
//! reconnect, which it then retries.
//!
//! The URLs may hold a password: they never appear in logs, `Debug` output or errors except
//! in redacted form ([`redact_url`](crate::config::redis_url::redact_url)).
//!
//! Here: the store and its bounded operations; [`breaker`], the lazy connections (`conn`) and
//! `purge` each have their file.

mod breaker;
mod conn;
mod purge;

pub use breaker::RedisState;

use crate::config::redis_url::{self, scrub};
use crate::config::schema::RedisSpec;
use breaker::{Breaker, Transition};
use bytes::Bytes;
use conn::{Backend, Conn};
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Background writes allowed in flight at once. Past this, Redis is not keeping up and queueing
/// more would only grow memory: the write is dropped (and counted) instead.
pub const MAX_BACKGROUND_WRITES: usize = 256;

/// Writes happen off the request path, so they can afford more than a lookup's budget, but
/// never less than this.
const MIN_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a Redis operation did not succeed. No variant ever carries a password.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The configured URL is unusable; the text shows the URL with its credentials redacted.
    #[error("invalid Redis URL {0}")]
    InvalidUrl(String),
    #[error("Redis did not answer in time")]
    Timeout,
    #[error("Redis circuit breaker is open (a recent error); not asking Redis for now")]
    CircuitOpen,
    /// A connection or command failure, as reported by the client, credentials scrubbed.
    #[error("Redis error: {0}")]
    Redis(String),
    /// Too many background writes in flight, or no tokio runtime to run one on.
    #[error("background Redis write dropped: {0}")]
    WriteDropped(&'static str),
}

/// The shared cache store in Redis or Redis Cluster. Cheap to share behind an `Arc`.
pub struct RedisStore {
    backend: Backend,
    /// Shown by `Debug`: the URL(s) redacted.
    redacted: String,
    /// Passwords from the URLs, scrubbed from any error text the client produces.
    secrets: Vec<String>,
    read_timeout: Duration,
    write_timeout: Duration,
    breaker: Breaker,
    started: Instant,
    errors: AtomicU64,
    background_writes: AtomicUsize,
    /// `cache.redis.prefix`, which the rate limiter's keys carry too.
    prefix: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.redacted)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Validates the URL(s) of `spec` (single `url`, or `cluster` when non-empty); no I/O.
    /// Connects lazily on first use (which happens inside a tokio runtime).
    pub fn new(spec: &RedisSpec) -> Result<RedisStore, RedisError> {
        let write_timeout = spec.timeout.max(MIN_WRITE_TIMEOUT);
        let redis_url::RedisUrls {
            nodes,
            cluster,
            secrets,
            redacted,
        } = redis_url::parse(spec).map_err(|e| RedisError::InvalidUrl(e.0))?;
        let invalid = |e: redis::RedisError| {
            RedisError::InvalidUrl(format!("{redacted}: {}", scrub(&e.to_string(), &secrets)))
        };

        let backend = Backend::new(cluster, nodes, write_timeout).map_err(invalid)?;
        Ok(RedisStore {
            backend,
            redacted,
            secrets,
            read_timeout: spec.timeout,
            write_timeout,
            breaker: Breaker::new(spec.breaker),
            started: Instant::now(),
            errors: AtomicU64::new(0),
            background_writes: AtomicUsize::new(0),
            prefix: spec.prefix.clone(),
        })
    }

    /// GET, bounded by spec.timeout. While the circuit is open, returns Err(CircuitOpen) at once
    /// with no I/O.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, RedisError> {
        let cmd = redis::cmd("GET").arg(key).clone();
        let value: Option<Vec<u8>> = self
            .guarded(self.read_timeout, |mut conn| async move {
                conn.query(&cmd).await
            })
            .await?;
        Ok(value.map(Bytes::from))
    }

    /// SET key value EX ttl_secs (ttl ≥ 1 s), bounded by a write timeout (max(spec.timeout, 1 s)).
    pub async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), RedisError> {
        let secs = ttl.as_secs().max(1);
        let cmd = redis::cmd("SET")
            .arg(key)
            .arg(value.as_ref())
            .arg("EX")
            .arg(secs)
            .clone();
        self.guarded(self.write_timeout, |mut conn| async move {
            conn.query::<()>(&cmd).await
        })
        .await
    }

    /// Spawns `set` on the current runtime, off the request path; at most
    /// [`MAX_BACKGROUND_WRITES`] writes in flight — past that, the write is dropped and counted
    /// as an error.
    pub fn set_in_background(self: &Arc<Self>, key: String, value: Bytes, ttl: Duration) {
        self.write_in_background(move |store| async move { store.set(&key, value, ttl).await });
    }

    /// LRANGE key 0 -1 (the whole list), bounded by spec.timeout, behind the circuit breaker.
    pub async fn list(&self, key: &str) -> Result<Vec<Bytes>, RedisError> {
        let cmd = redis::cmd("LRANGE").arg(key).arg(0).arg(-1).clone();
        let items: Vec<Vec<u8>> = self
            .guarded(self.read_timeout, |mut conn| async move {
                conn.query(&cmd).await
            })
            .await?;
        Ok(items.into_iter().map(Bytes::from).collect())
    }

    /// In the background (as [`RedisStore::set_in_background`]): pushes `value` at the head of
    /// list `key`, trims the list to its `max` newest items and extends its expiry to at least
    /// `ttl` — one atomic script on one key, so it also works on a cluster.
    pub fn push_bounded_in_background(
        self: &Arc<Self>,
        key: String,
        value: Bytes,
        max: usize,
        ttl: Duration,
    ) {
        const PUSH_BOUNDED: &str = "redis.call('LPUSH', KEYS[1], ARGV[1]) \
            redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1) \
            if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then \
            redis.call('EXPIRE', KEYS[1], ARGV[3]) end return 1";
        let cmd = redis::cmd("EVAL")
            .arg(PUSH_BOUNDED)
            .arg(1)
            .arg(&key)
            .arg(value.as_ref())
            .arg(max.max(1))
            .arg(ttl.as_secs().max(1))
            .clone();
        self.write_in_background(move |store| async move {
            store
                .guarded(store.write_timeout, |mut conn| async move {
                    conn.query::<()>(&cmd).await
                })
                .await
        });
    }

    /// Spawns the write `op` on the current runtime, off the request path; at most
    /// [`MAX_BACKGROUND_WRITES`] writes in flight — past that, the write is dropped and counted
    /// as an error.
    fn write_in_background<F, Fut>(self: &Arc<Self>, op: F)
    where
        F: FnOnce(Arc<RedisStore>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), RedisError>> + Send,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.drop_write("no tokio runtime");
            return;
        };
        if self.background_writes.fetch_add(1, Ordering::AcqRel) >= MAX_BACKGROUND_WRITES {
            self.background_writes.fetch_sub(1, Ordering::AcqRel);
            self.drop_write("too many writes in flight");
            return;
        }
        // The guard releases the slot even if the task is cancelled at runtime shutdown.
        let slot = WriteSlot(Arc::clone(self));
        runtime.spawn(async move {
            // Failures are already counted and logged (once) by the breaker.
            let _ = op(Arc::clone(&slot.0)).await;
            drop(slot);
        });
    }

    /// Runs a Lua script (EVALSHA, loading it on first use) behind the circuit breaker, bounded
    /// by the lookup timeout when `on_request_path`, else by the write timeout. The script's keys
    /// must share one hash slot (one key, or hash-tagged keys) to run on a cluster.
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
        on_request_path: bool,
    ) -> Result<T, RedisError> {
        let timeout = if on_request_path {
            self.read_timeout
        } else {
            self.write_timeout
        };
        self.guarded(timeout, |conn| async move {
            match conn {
                Conn::Single(mut c) => call.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => call.invoke_async(&mut c).await,
            }
        })
        .await
    }

    /// `cache.redis.prefix`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// PING (for readiness checks); on a cluster, every master must answer.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.guarded(self.write_timeout, |conn| async move {
            match conn {
                Conn::Single(mut c) => redis::cmd("PING").query_async::<()>(&mut c).await,
                Conn::Cluster(mut c) => c
                    .route_command(
                        &redis::cmd("PING"),
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await
                    .map(drop),
            }
        })
        .await
    }

    pub fn state(&self) -> RedisState {
        self.breaker.state()
    }

    /// Background writes still in flight (shutdown waits for them, so no stored answer is lost).
    pub fn background_writes(&self) -> usize {
        self.background_writes.load(Ordering::Acquire)
    }

    /// Errors (timeouts, connection failures, dropped background writes) since start.
    pub fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `op` on a connection within `timeout`, behind the circuit breaker.
    async fn guarded<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(admission) = self.breaker.admit(self.now_ms()) else {
            return Err(RedisError::CircuitOpen);
        };
        let attempt = async {
            let conn = self.connection().await?;
            op(conn).await.map_err(|e| self.client_error(&e))
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout),
        };
        match &result {
            Ok(_) => {
                if self.breaker.succeeded(admission) == Transition::Closed {
                    log::info!("Redis {} answers again; circuit closed", self.redacted);
                }
            }
            Err(e) => self.record_failure(e),
        }
        result
    }

    fn record_failure(&self, error: &RedisError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if matches!(error, RedisError::Timeout) {
            self.backend.reset();
        }
        if self.breaker.failed(self.now_ms()) == Transition::Opened {
            log::warn!(
                "Redis {} failed ({error}); circuit open, not asking it for {:?} at a time",
                self.redacted,
                self.breaker.period()
            );
        }
    }

    fn drop_write(&self, why: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        log::debug!("{}", RedisError::WriteDropped(why));
    }

    /// The shared connection, made on first use (or after a timeout dropped it).
    async fn connection(&self) -> Result<Conn, RedisError> {
        self.backend
            .connection()
            .await
            .map_err(|e| self.client_error(&e))
    }

    fn client_error(&self, e: &redis::RedisError) -> RedisError {
        RedisError::Redis(scrub(&e.to_string(), &self.secrets))
    }
}

/// Holds one of the [`MAX_BACKGROUND_WRITES`] slots until dropped.
struct WriteSlot(Arc<RedisStore>);

impl Drop for WriteSlot {
    fn drop(&mut self) {
        self.0.background_writes.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secret::Secret;

    #[test]
    fn invalid_url_error_never_shows_the_password() {
        for url in [
            "redis://:s3cr3t-pw@",
            "http://:s3cr3t-pw@host:1",
            "nonsense",
        ] {
            let spec = RedisSpec {
                url: Secret::new(url.into()),
                ..RedisSpec::default()
            };
            let err = RedisStore::new(&spec).expect_err(url);
            let text = format!("{err} {err:?}");
            assert!(matches!(err, RedisError::InvalidUrl(_)), "{text}");
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }

    #[test]
    fn valid_urls_need_no_io() {
        let spec = RedisSpec {
            url: Secret::new("redis://:pw-123@127.0.0.1:1/2".into()),
            ..RedisSpec::default()
        };
        let store = RedisStore::new(&spec).unwrap();
        assert_eq!(store.state(), RedisState::Up);
        assert!(!format!("{store:?}").contains("pw-123"));

        let cluster = RedisSpec {
            cluster: vec![
                Secret::new("redis://127.0.0.1:1".into()),
                Secret::new("redis://127.0.0.1:2".into()),
            ],
            ..RedisSpec::default()
        };
        RedisStore::new(&cluster).unwrap();
    }
}
