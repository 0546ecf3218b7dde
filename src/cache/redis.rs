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

use crate::config::redis_url::{self, scrub};
use crate::config::schema::RedisSpec;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, Value};
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

/// Keys fetched per SCAN round trip in [`RedisStore::purge_prefix`].
const SCAN_COUNT: usize = 1000;

/// Whether Redis is being asked at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    /// Operations go to Redis.
    Up,
    /// A recent failure: operations fail fast until a probe succeeds.
    CircuitOpen,
}

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

/// Circuit breaker state in one atomic: the instant (ms since the store's start) until which the
/// circuit is open, or 0 when closed. Time is passed in, so tests can use a fake clock.
#[derive(Debug)]
struct Breaker {
    open_until_ms: AtomicU64,
    period_ms: u64,
}

/// How an operation was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// The circuit is closed.
    Closed,
    /// The probe after an open period; carries the `open_until` it armed, so that only this
    /// probe's success can close the circuit.
    Probe(u64),
}

/// What a recorded outcome changed, so the caller logs transitions once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    None,
    Opened,
    Closed,
}

impl Breaker {
    fn new(period: Duration) -> Self {
        Breaker {
            open_until_ms: AtomicU64::new(0),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX / 2),
        }
    }

    /// 0 means "closed", so an open circuit is never encoded as 0.
    fn open_until(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.period_ms).max(1)
    }

    /// `None`: fail fast. Only one caller wins the probe once the period has passed: it
    /// re-arms the period before trying, so concurrent callers keep failing fast meanwhile.
    fn admit(&self, now_ms: u64) -> Option<Admission> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Some(Admission::Closed);
        }
        if now_ms < until {
            return None;
        }
        let armed = self.open_until(now_ms);
        self.open_until_ms
            .compare_exchange(until, armed, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Admission::Probe(armed))
    }

    /// A success closes the circuit only when it was the probe and nothing failed since; a
    /// success of an operation started before the circuit opened must not close it.
    fn succeeded(&self, admission: Admission) -> Transition {
        match admission {
            Admission::Closed => Transition::None,
            Admission::Probe(armed) => match self.open_until_ms.compare_exchange(
                armed,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Transition::Closed,
                Err(_) => Transition::None,
            },
        }
    }

    fn failed(&self, now_ms: u64) -> Transition {
        let previous = self
            .open_until_ms
            .swap(self.open_until(now_ms), Ordering::AcqRel);
        if previous == 0 {
            Transition::Opened
        } else {
            Transition::None
        }
    }

    fn state(&self) -> RedisState {
        if self.open_until_ms.load(Ordering::Acquire) == 0 {
            RedisState::Up
        } else {
            RedisState::CircuitOpen
        }
    }
}

/// A connection made on first use and dropped after a timeout. A failed or cancelled (timed-out)
/// connect leaves it empty, so a later operation tries again.
struct LazyConn<T> {
    current: ArcSwapOption<T>,
    /// Serialises connects so that concurrent first users wait for one. Held across the connect's
    /// await on purpose: only connecting callers take it, each bounded by its own timeout.
    connecting: tokio::sync::Mutex<()>,
}

impl<T: Clone> LazyConn<T> {
    fn new() -> Self {
        LazyConn {
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    async fn get_or_connect<F, Fut>(&self, connect: F) -> redis::RedisResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if let Some(conn) = self.current.load_full() {
            return Ok(T::clone(&conn));
        }
        let _connecting = self.connecting.lock().await;
        if let Some(conn) = self.current.load_full() {
            return Ok(T::clone(&conn));
        }
        let conn = connect().await?;
        self.current.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// Forgets the connection; users holding clones finish with it.
    fn reset(&self) {
        self.current.store(None);
    }
}

/// How to reach Redis, and the connection once made.
enum Backend {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
        conn: LazyConn<ConnectionManager>,
    },
    Cluster {
        client: ClusterClient,
        conn: LazyConn<ClusterConnection>,
    },
}

impl Backend {
    /// After a timeout the connection may be dead without the client knowing (a peer that
    /// vanished without a FIN or RST: the client reconnects only on I/O errors, and these would
    /// take the kernel many minutes to report), so the next probe starts afresh.
    fn reset(&self) {
        match self {
            Backend::Single { conn, .. } => conn.reset(),
            Backend::Cluster { conn, .. } => conn.reset(),
        }
    }
}

/// A connection handle; both kinds are cheap clones sharing one multiplexed connection (pool).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
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
            mut nodes,
            cluster,
            secrets,
            redacted,
        } = redis_url::parse(spec).map_err(|e| RedisError::InvalidUrl(e.0))?;
        let invalid = |e: redis::RedisError| {
            RedisError::InvalidUrl(format!("{redacted}: {}", scrub(&e.to_string(), &secrets)))
        };

        let backend = if !cluster {
            let info = nodes.pop().expect("parse returns at least one node");
            let client = redis::Client::open(info).map_err(invalid)?;
            // No retries inside the manager: the circuit breaker paces reconnects, and a
            // retrying reconnect would make every operation wait on it until its timeout.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(write_timeout)
                .set_response_timeout(write_timeout);
            Backend::Single {
                client,
                config,
                conn: LazyConn::new(),
            }
        } else {
            // A couple of retries let MOVED/ASK redirections during resharding succeed; the
            // operation's own timeout still bounds the whole thing.
            let client = ClusterClient::builder(nodes)
                .connection_timeout(write_timeout)
                .response_timeout(write_timeout)
                .retries(2)
                .build()
                .map_err(invalid)?;
            Backend::Cluster {
                client,
                conn: LazyConn::new(),
            }
        };
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

    /// Deletes every key starting with `prefix` (SCAN MATCH prefix* + UNLINK; on a cluster, on
    /// every master). Returns how many.
    ///
    /// An operator's explicit request, so an open circuit does not refuse it; each round trip is
    /// bounded by the write timeout rather than the whole purge, which may be long.
    pub async fn purge_prefix(&self, prefix: &str) -> Result<u64, RedisError> {
        let result = self.purge(prefix).await;
        if let Err(e) = &result {
            self.record_failure(e);
        }
        result
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
                Duration::from_millis(self.breaker.period_ms)
            );
        }
    }

    fn drop_write(&self, why: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        log::debug!("{}", RedisError::WriteDropped(why));
    }

    /// The shared connection, made on first use (or after a timeout dropped it).
    async fn connection(&self) -> Result<Conn, RedisError> {
        match &self.backend {
            Backend::Single {
                client,
                config,
                conn,
            } => conn
                .get_or_connect(|| {
                    ConnectionManager::new_with_config(client.clone(), config.clone())
                })
                .await
                .map(|c| Conn::Single(c.clone()))
                .map_err(|e| self.client_error(&e)),
            Backend::Cluster { client, conn } => conn
                .get_or_connect(|| client.get_async_connection())
                .await
                .map(|c| Conn::Cluster(c.clone()))
                .map_err(|e| self.client_error(&e)),
        }
    }

    fn client_error(&self, e: &redis::RedisError) -> RedisError {
        RedisError::Redis(scrub(&e.to_string(), &self.secrets))
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.write_timeout, fut).await {
            Ok(result) => result.map_err(|e| self.client_error(&e)),
            Err(_) => Err(RedisError::Timeout),
        }
    }

    async fn purge(&self, prefix: &str) -> Result<u64, RedisError> {
        let pattern = format!("{}*", escape_glob(prefix));
        let conn = match tokio::time::timeout(self.write_timeout, self.connection()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(RedisError::Timeout),
        };
        match conn {
            Conn::Single(c) => self.purge_node(&mut Conn::Single(c), None, &pattern).await,
            Conn::Cluster(mut c) => {
                // The node addresses come back as the keys of the per-node reply map.
                let all_masters =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let reply = self
                    .bounded(c.route_command(&redis::cmd("PING"), all_masters))
                    .await?;
                let mut deleted = 0;
                for (host, port) in node_addresses(&reply)? {
                    let node = SingleNodeRoutingInfo::ByAddress { host, port };
                    deleted += self
                        .purge_node(&mut Conn::Cluster(c.clone()), Some(node), &pattern)
                        .await?;
                }
                Ok(deleted)
            }
        }
    }

    /// SCANs one node (`node` on a cluster, else the single server) and UNLINKs each batch.
    async fn purge_node(
        &self,
        conn: &mut Conn,
        node: Option<SingleNodeRoutingInfo>,
        pattern: &str,
    ) -> Result<u64, RedisError> {
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .clone();
            let (next, keys): (u64, Vec<Vec<u8>>) = match (&mut *conn, &node) {
                (Conn::Cluster(c), Some(node)) => {
                    let routing = RoutingInfo::SingleNode(node.clone());
                    let value = self.bounded(c.route_command(&scan, routing)).await?;
                    redis::from_redis_value(&value).map_err(|e| self.client_error(&e))?
                }
                (conn, _) => self.bounded(conn.query(&scan)).await?,
            };
            if !keys.is_empty() {
                // On a cluster the client splits a multi-key UNLINK by slot and sums the counts.
                let unlink = redis::cmd("UNLINK").arg(keys).clone();
                deleted += self.bounded(conn.query::<u64>(&unlink)).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// Holds one of the [`MAX_BACKGROUND_WRITES`] slots until dropped.
struct WriteSlot(Arc<RedisStore>);

impl Drop for WriteSlot {
    fn drop(&mut self) {
        self.0.background_writes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `text` with every secret replaced by `*****`.
/// Escapes the glob metacharacters of SCAN MATCH, so a prefix matches only itself.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `host:port` pairs from the keys of a per-node reply map.
fn node_addresses(reply: &Value) -> Result<Vec<(String, u16)>, RedisError> {
    let Value::Map(entries) = reply else {
        return Err(RedisError::Redis(
            "unexpected reply listing the cluster's masters".into(),
        ));
    };
    entries
        .iter()
        .map(|(addr, _)| {
            let addr: String = redis::from_redis_value(addr)
                .map_err(|_| RedisError::Redis("unreadable cluster node address".into()))?;
            addr.rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
                .ok_or_else(|| RedisError::Redis(format!("bad cluster node address {addr}")))
        })
        .collect()
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

    #[test]
    fn escapes_glob_metacharacters() {
        assert_eq!(escape_glob("a:b"), "a:b");
        assert_eq!(escape_glob("a*[x]?"), r"a\*\[x\]\?");
    }

    #[test]
    fn breaker_opens_fails_fast_then_probes_once() {
        let b = Breaker::new(Duration::from_millis(300));
        assert_eq!(b.admit(0), Some(Admission::Closed));
        assert_eq!(b.failed(10), Transition::Opened);
        assert_eq!(b.state(), RedisState::CircuitOpen);
        // Still open: fail fast.
        assert_eq!(b.admit(100), None);
        assert_eq!(b.admit(309), None);
        // Period over: exactly one probe goes through.
        let probe = b.admit(310).expect("probe");
        assert_eq!(probe, Admission::Probe(610));
        assert_eq!(b.admit(311), None);
        // The probe fails: open again, logged only once (no new "Opened").
        assert_eq!(b.failed(320), Transition::None);
        assert_eq!(b.state(), RedisState::CircuitOpen);
        assert_eq!(b.admit(500), None);
        // Next probe succeeds: closed.
        let probe = b.admit(620).expect("probe");
        assert_eq!(b.succeeded(probe), Transition::Closed);
        assert_eq!(b.state(), RedisState::Up);
        assert_eq!(b.admit(621), Some(Admission::Closed));
    }

    #[test]
    fn stale_success_does_not_close_the_circuit() {
        let b = Breaker::new(Duration::from_millis(300));
        // An operation admitted while closed...
        let early = b.admit(0).unwrap();
        // ...another fails meanwhile...
        assert_eq!(b.failed(5), Transition::Opened);
        // ...then the first succeeds: the circuit stays open.
        assert_eq!(b.succeeded(early), Transition::None);
        assert_eq!(b.state(), RedisState::CircuitOpen);

        // A probe whose period was re-armed by another failure does not close it either.
        let probe = b.admit(400).unwrap();
        assert_eq!(b.failed(410), Transition::None);
        assert_eq!(b.succeeded(probe), Transition::None);
        assert_eq!(b.state(), RedisState::CircuitOpen);
    }

    #[test]
    fn zero_period_still_encodes_open() {
        let b = Breaker::new(Duration::ZERO);
        assert_eq!(b.failed(0), Transition::Opened);
        assert_eq!(b.state(), RedisState::CircuitOpen);
        assert!(matches!(b.admit(1), Some(Admission::Probe(_))));
    }
}
