//! The connections to one upstream: its own Pingora connectors (so their keep-alive pools have
//! this upstream's size), the cap on connections open at once, and h2 connections set up once for
//! many requests arriving together.
//!
//! What Pingora enforces and what promptgate adds:
//! - **Idle connections** (`pool.max_idle`): Pingora's keep-alive pool is one LRU per connector,
//!   sized at creation. Each upstream gets its own connector, so the size is this upstream's:
//!   past it, the least recently used idle connection is closed.
//! - **Open connections** (`pool.max_connections`): Pingora has no such bound (a request that
//!   finds no idle connection opens one). promptgate bounds the connection *capacity in use*
//!   with a semaphore per upstream: `max_connections × max_streams` permits, an HTTP/1.1
//!   exchange takes `max_streams` of them (it occupies a whole connection), an h2 exchange one
//!   (a stream). Since Pingora opens a connection only when none is idle (h1) or none has a
//!   free stream (h2), connections in use never exceed `max_connections`, and idle ones are
//!   only ever connections that were in use. The protocol is learnt from the newest
//!   connection. Until then an upstream that may speak h2 is taken to (an exchange reserves a
//!   stream), so that a burst at start-up is not held to `max_connections` requests; an
//!   exchange that gets an HTTP/1.1 connection after all tops its reservation up to a whole
//!   connection before opening one (waiting like any other).
//! - **h2 multiplexing**: Pingora's `max_h2_streams` defaults to 1 (no multiplexing); the peer
//!   gets `pool.max_streams`. Pingora looks for an h2 connection with a free stream before
//!   opening one, but requests arriving together all find none while the first handshake is
//!   under way, and would each open their own. So set-up of a connection that may speak h2 is
//!   serialized per upstream: the others wait for it and then share it.

use crate::config::schema::{HttpVersion, PoolSpec};
use crate::config::spec::{self, CaBundle};
use pingora::connectors::http::{v1, v2};
use pingora::connectors::ConnectorOptions;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::utils::tls::{parse_x509, WrappedX509};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The protocol an upstream's connections last spoke.
const UNKNOWN: u8 = 0;
const H1: u8 = 1;
const H2: u8 = 2;

/// The connections to one upstream (shared by the upstream's successive builds across reloads
/// while its connection settings are unchanged).
pub struct Pool {
    /// Pingora's HTTP/1.1 and h2 connectors, each with its idle pool (its `Connector` holds the
    /// same two, but hides them: see [`Pool::connect`] for why promptgate asks them itself).
    h1: v1::Connector,
    h2: v2::Connector,
    /// The server refused h2 (`HTTP_1_1_REQUIRED`): HTTP/1.1 from now on (Pingora's own flag
    /// for this is not public).
    h1_preferred: AtomicBool,
    /// Connection capacity: `max_connections × per_connection` permits.
    capacity: Arc<Semaphore>,
    /// Permits one connection is worth: `max_streams` when h2 may be spoken, else 1.
    per_connection: u32,
    /// Whether `http_version` and the scheme allow h2 at all.
    may_h2: bool,
    max_connections: usize,
    /// `pool.max_streams`: h2 streams per connection.
    max_streams: usize,
    /// [`H1`], [`H2`] or [`UNKNOWN`]: what the newest connection negotiated.
    protocol: AtomicU8,
    /// Held while getting a session that may open an h2 connection (see the module doc).
    opening: tokio::sync::Mutex<()>,
    /// Connections opened since the pool was created, by protocol (h1, h2).
    opened: [AtomicU64; 2],
    /// The system's trust anchors plus `tls.ca_file`'s, when it is set.
    ca: Option<Arc<[WrappedX509]>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("max_connections", &self.max_connections)
            .field("per_connection", &self.per_connection)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// Capacity taken from an upstream's pool for one exchange (permits: a stream, or a whole
/// connection); given back when dropped.
#[derive(Debug)]
pub struct Reserved(OwnedSemaphorePermit);

/// Why [`Pool::session`] gave no session.
#[derive(Debug)]
pub enum Opening {
    /// The connection turned out HTTP/1.1 and no whole connection freed up in time.
    Busy,
    /// Pingora could not connect (or open an h2 stream).
    Failed(Box<pingora::Error>),
}

impl From<Box<pingora::Error>> for Opening {
    fn from(e: Box<pingora::Error>) -> Self {
        Opening::Failed(e)
    }
}

/// What identifies a pool across reloads: everything that shapes its connector or its
/// connections. (The address and SNI are part of Pingora's own pool key.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    upstream: String,
    tls: bool,
    pool: PoolSpec,
    http_version: HttpVersion,
    ca: Option<Arc<CaBundle>>,
}

/// Every live pool, so that a reload's new upstream keeps the running one's connections.
fn registry() -> &'static Mutex<HashMap<Identity, Weak<Pool>>> {
    static POOLS: OnceLock<Mutex<HashMap<Identity, Weak<Pool>>>> = OnceLock::new();
    POOLS.get_or_init(Default::default)
}

/// `peer` is offered HTTP/1.1 only (no ALPN options, or at most HTTP/1.1).
fn h1_only(peer: &HttpPeer) -> bool {
    peer.get_peer_options()
        .is_none_or(|o| o.alpn.get_max_http_version() == 1)
}

/// Whether exchanges with this upstream may speak h2 (what `http_version` allows).
pub fn may_speak_h2(tls: bool, version: HttpVersion) -> bool {
    match version {
        HttpVersion::Auto => tls,
        HttpVersion::H1 => false,
        HttpVersion::H2 => true,
    }
}

impl Pool {
    /// The pool for upstream `name`: the running one when its settings are unchanged,
    /// otherwise a new one (whose connector loads the system's trust anchors).
    pub fn shared(name: &str, spec: &spec::Upstream) -> Arc<Pool> {
        let identity = Identity {
            upstream: name.to_string(),
            tls: spec.tls,
            pool: spec.pool.clone(),
            http_version: spec.http_version,
            ca: spec.ca.clone(),
        };
        let mut pools = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(&identity).and_then(Weak::upgrade) {
            return pool;
        }
        pools.retain(|_, p| p.strong_count() > 0);
        let pool = Arc::new(Pool::new(name, spec));
        pools.insert(identity, Arc::downgrade(&pool));
        pool
    }

    fn new(name: &str, spec: &spec::Upstream) -> Pool {
        let may_h2 = may_speak_h2(spec.tls, spec.http_version);
        let per_connection = if may_h2 {
            spec.pool.max_streams.max(1)
        } else {
            1
        };
        let max_connections = spec.pool.max_connections.max(1);
        let permits = max_connections
            .saturating_mul(per_connection)
            .min(Semaphore::MAX_PERMITS);
        Pool {
            h1: v1::Connector::new(Some(ConnectorOptions::new(spec.pool.max_idle))),
            h2: v2::Connector::new(Some(ConnectorOptions::new(spec.pool.max_idle))),
            h1_preferred: AtomicBool::new(false),
            capacity: Arc::new(Semaphore::new(permits)),
            per_connection: per_connection.min(u32::MAX as usize) as u32,
            may_h2,
            max_connections,
            max_streams: spec.pool.max_streams.max(1),
            protocol: AtomicU8::new(UNKNOWN),
            opening: tokio::sync::Mutex::new(()),
            opened: Default::default(),
            ca: spec.ca.as_deref().map(|bundle| trust_anchors(name, bundle)),
        }
    }

    /// Concurrent h2 streams per connection (the peer's `max_h2_streams`).
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// The trust anchors for the peer's `ca` option (`None`: the connector's, the system's).
    pub fn ca(&self) -> Option<Arc<[WrappedX509]>> {
        self.ca.clone()
    }

    /// Takes the capacity of one exchange, waiting up to `wait` for it: a whole connection
    /// for HTTP/1.1 (`h1`, or an upstream known to speak it), one stream otherwise (see the
    /// module doc). `None` when none freed up in time.
    pub async fn reserve(&self, h1: bool, wait: Duration) -> Option<Reserved> {
        let weight = if h1 || self.protocol.load(Ordering::Relaxed) == H1 {
            self.per_connection
        } else {
            1
        };
        let permits = self.capacity.clone().acquire_many_owned(weight);
        match tokio::time::timeout(wait, permits).await {
            Ok(Ok(permit)) => Some(Reserved(permit)),
            _ => None,
        }
    }

    /// Makes `reserved` a whole connection's capacity (an HTTP/1.1 exchange), waiting up to
    /// `wait` for the rest; false when it did not free up in time.
    async fn whole_connection(&self, reserved: &mut Reserved, wait: Duration) -> bool {
        let missing = (self.per_connection as usize).saturating_sub(reserved.0.num_permits());
        if missing == 0 {
            return true;
        }
        let more = self.capacity.clone().acquire_many_owned(missing as u32);
        match tokio::time::timeout(wait, more).await {
            Ok(Ok(more)) => {
                reserved.0.merge(more);
                true
            }
            _ => false,
        }
    }

    /// A session to `peer` within `reserved`: an idle HTTP/1.1 connection, a stream on an h2
    /// connection with room, or a new connection (whose ALPN decides between them). True when
    /// reused. An HTTP/1.1 session first makes `reserved` a whole connection, waiting up to
    /// `wait`.
    pub async fn session(
        &self,
        peer: &HttpPeer,
        reserved: &mut Reserved,
        wait: Duration,
    ) -> Result<(HttpSession, bool), Opening> {
        let may_h2 = peer
            .get_peer_options()
            .is_some_and(|o| o.alpn.get_max_http_version() == 2);
        let (session, reused) = if may_h2 && self.protocol.load(Ordering::Relaxed) != H1 {
            let opening = self.opening.lock().await;
            if self.protocol.load(Ordering::Relaxed) == H1 {
                // The connection waited for spoke HTTP/1.1: those are opened side by side,
                // each within a whole connection's capacity.
                drop(opening);
                if !self.whole_connection(reserved, wait).await {
                    return Err(Opening::Busy);
                }
                self.connect(peer, true).await?
            } else {
                // Still holding `opening`: whoever waits for it sees what this one learnt.
                self.connect(peer, true).await?
            }
        } else {
            if !self.whole_connection(reserved, wait).await {
                return Err(Opening::Busy);
            }
            self.connect(peer, may_h2).await?
        };
        if matches!(session, HttpSession::H1(_)) {
            // Reserved as a stream, but it got a connection of its own (the first connection
            // of an upstream that turned out to speak HTTP/1.1): count it whole if possible.
            self.whole_connection(reserved, Duration::ZERO).await;
        }
        Ok((session, reused))
    }

    /// Pingora's session to `peer`, recording the protocol it speaks unless `peer` was offered
    /// only HTTP/1.1 on an upstream that may speak h2 (a WebSocket upgrade's HTTP/1.1 says
    /// nothing about what the upstream speaks); counts a new connection.
    async fn connect(&self, peer: &HttpPeer, may_h2: bool) -> pingora::Result<(HttpSession, bool)> {
        // What Pingora's `Connector::get_http_session` does, in two steps: a pooled connection
        // (or a free h2 stream) with small futures, else a new one. Opening's state (TCP, TLS,
        // h2 handshake) is large: boxed, and only when a connection is opened, it is not moved
        // with every request's send future (BENCHMARKS.md).
        let (session, reused) = match self.reused(peer).await? {
            Some(session) => (session, true),
            None => Box::pin(self.open(peer)).await?,
        };
        let protocol = match session {
            HttpSession::H2(_) => H2,
            _ => H1,
        };
        if may_h2 || !self.may_h2 {
            self.protocol.store(protocol, Ordering::Relaxed);
        }
        if !reused {
            self.opened[usize::from(protocol == H2)].fetch_add(1, Ordering::Relaxed);
        }
        Ok((session, reused))
    }

    /// An idle HTTP/1.1 connection or a free stream on an h2 one, looked for in Pingora's
    /// order: h2 first when `peer` may speak it, HTTP/1.1 unless `peer` speaks only h2.
    async fn reused(&self, peer: &HttpPeer) -> pingora::Result<Option<HttpSession>> {
        if !h1_only(peer) {
            if let Some(h2) = self.h2.reused_http_session(peer).await? {
                return Ok(Some(HttpSession::H2(h2)));
            }
            if self.h2_only(peer) {
                return Ok(None);
            }
        }
        Ok(self.h1.reused_http_session(peer).await.map(HttpSession::H1))
    }

    /// A new connection (HTTP/1.1 may still find one freed meanwhile: then reused); one that
    /// may speak h2 speaks what ALPN (or `h2` prior knowledge) decides.
    async fn open(&self, peer: &HttpPeer) -> pingora::Result<(HttpSession, bool)> {
        if h1_only(peer) {
            let (h1, reused) = self.h1.get_http_session(peer).await?;
            Ok((HttpSession::H1(h1), reused))
        } else {
            Ok((self.h2.new_http_session::<_, ()>(peer).await?, false))
        }
    }

    /// `peer` is offered h2 only (`http_version: h2`), unless the server refused it.
    fn h2_only(&self, peer: &HttpPeer) -> bool {
        peer.get_peer_options()
            .is_some_and(|o| o.alpn.get_min_http_version() == 2)
            && !self.h1_preferred.load(Ordering::Relaxed)
    }

    /// Returns a finished session to the pool (an h2 stream frees its slot on the connection).
    pub async fn release(&self, session: HttpSession, peer: &HttpPeer, idle: Duration) {
        match session {
            HttpSession::H1(h1) => self.h1.release_http_session(h1, peer, Some(idle)).await,
            HttpSession::H2(h2) => self.h2.release_http_session(h2, peer, Some(idle)),
            // Never made here: no custom protocol is offered.
            HttpSession::Custom(_) => {}
        }
    }

    /// The server refused h2 (`HTTP_1_1_REQUIRED`): offer only HTTP/1.1 to `peer` from now on.
    pub fn prefer_h1(&self, peer: &HttpPeer) {
        self.h2.prefer_h1(peer);
        self.h1_preferred.store(true, Ordering::Relaxed);
        self.protocol.store(H1, Ordering::Relaxed);
    }

    /// Connections opened so far: (HTTP/1.1, h2).
    pub fn opened(&self) -> (u64, u64) {
        (
            self.opened[0].load(Ordering::Relaxed),
            self.opened[1].load(Ordering::Relaxed),
        )
    }

    /// The protocol of the newest connection: `"h1"`, `"h2"`, or `""` before the first.
    pub fn protocol(&self) -> &'static str {
        match self.protocol.load(Ordering::Relaxed) {
            H1 => "h1",
            H2 => "h2",
            _ => "",
        }
    }
}

/// The system's trust anchors plus `bundle`'s, for a peer whose `tls.ca_file` is set. (A
/// peer's CA list replaces the connector's store in Pingora, so the system's are added here
/// to make the file's certificates an addition, not a replacement.)
fn trust_anchors(upstream: &str, bundle: &CaBundle) -> Arc<[WrappedX509]> {
    let mut ders: Vec<Vec<u8>> = bundle.certs.clone();
    match pingora::tls::load_native_certs() {
        Ok(system) => ders.extend(system.into_iter().map(|c| c.to_vec())),
        Err(e) => log::warn!(
            "upstream {upstream}: cannot load the system's CA certificates ({e}); trusting only {}",
            bundle.path.display()
        ),
    }
    ders.into_iter()
        // The config checked the file's certificates; a system one that does not parse is
        // left out rather than let `parse_x509` panic on it.
        .filter(|der| x509_parser::parse_x509_certificate(der).is_ok())
        .map(|der| WrappedX509::new(der, parse_x509))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{HealthSpec, TimeoutsSpec};
    use http::HeaderValue;

    fn spec(tls: bool, pool: PoolSpec, http_version: HttpVersion) -> spec::Upstream {
        spec::Upstream {
            tls,
            host: "127.0.0.1".into(),
            port: 9,
            base_path: String::new(),
            host_header: HeaderValue::from_static("127.0.0.1:9"),
            headers: Vec::new(),
            timeouts: TimeoutsSpec::default(),
            health: HealthSpec::default(),
            max_concurrent: 0,
            queue_timeout: Duration::from_millis(10),
            pool,
            http_version,
            ca: None,
            sni: None,
            provider: crate::config::schema::Provider::Other,
        }
    }

    fn small() -> PoolSpec {
        PoolSpec {
            max_connections: 2,
            max_idle: 1,
            max_streams: 10,
        }
    }

    const WAIT: Duration = Duration::from_millis(10);

    async fn streams(pool: &Pool, n: usize) -> Vec<Reserved> {
        futures_util::future::join_all((0..n).map(|_| pool.reserve(false, WAIT)))
            .await
            .into_iter()
            .map(|r| r.expect("a stream's capacity"))
            .collect()
    }

    #[tokio::test]
    async fn http1_exchanges_take_a_whole_connection_h2_ones_a_stream() {
        let pool = Pool::new("u", &spec(true, small(), HttpVersion::Auto));
        // Before the first connection an upstream that may speak h2 is taken to: a burst at
        // start-up gets 2 × 10 streams, not 2 requests.
        let held = streams(&pool, 20).await;
        assert!(
            pool.reserve(false, WAIT).await.is_none(),
            "2 × 10 streams taken"
        );
        drop(held);
        pool.protocol.store(H1, Ordering::Relaxed);
        let a = pool.reserve(false, WAIT).await.unwrap();
        let _b = pool.reserve(false, WAIT).await.unwrap();
        assert!(
            pool.reserve(false, WAIT).await.is_none(),
            "2 HTTP/1.1 connections taken"
        );
        drop(a);
        pool.protocol.store(H2, Ordering::Relaxed);
        let held = streams(&pool, 10).await;
        assert!(pool.reserve(false, WAIT).await.is_none());
        drop(held);
        // A WebSocket upgrade needs HTTP/1.1, so a whole connection, even on an h2 upstream.
        let _upgrade = pool.reserve(true, WAIT).await.unwrap();
        assert!(pool.reserve(false, WAIT).await.is_none());
    }

    #[tokio::test]
    async fn a_stream_that_gets_an_http1_connection_is_topped_up_to_a_whole_one() {
        let pool = Pool::new("u", &spec(true, small(), HttpVersion::Auto));
        let mut one = pool.reserve(false, WAIT).await.unwrap();
        let mut two = pool.reserve(false, WAIT).await.unwrap();
        assert!(pool.whole_connection(&mut one, WAIT).await);
        assert_eq!(one.0.num_permits(), 10);
        let held = streams(&pool, 8).await;
        // 10 + 1 + 8 of 20 taken: the second cannot become a whole connection in time.
        assert!(!pool.whole_connection(&mut two, WAIT).await);
        drop(held);
        assert!(pool.whole_connection(&mut two, WAIT).await);
        assert!(pool.reserve(false, WAIT).await.is_none());
    }

    #[tokio::test]
    async fn an_http1_only_upstream_counts_connections_one_by_one() {
        for (tls, version) in [(false, HttpVersion::Auto), (true, HttpVersion::H1)] {
            let pool = Pool::new("u", &spec(tls, small(), version));
            let held = [
                pool.reserve(false, WAIT).await.unwrap(),
                pool.reserve(false, WAIT).await.unwrap(),
            ];
            assert!(pool.reserve(false, WAIT).await.is_none());
            drop(held);
        }
    }

    #[test]
    fn a_reload_keeps_the_pool_unless_its_connection_settings_change() {
        let one = Pool::shared("keep", &spec(true, small(), HttpVersion::Auto));
        let again = Pool::shared("keep", &spec(true, small(), HttpVersion::Auto));
        assert!(Arc::ptr_eq(&one, &again));
        let mut bigger = small();
        bigger.max_idle = 2;
        let changed = Pool::shared("keep", &spec(true, bigger, HttpVersion::Auto));
        assert!(!Arc::ptr_eq(&one, &changed));
        let other = Pool::shared("other", &spec(true, small(), HttpVersion::Auto));
        assert!(!Arc::ptr_eq(&one, &other));
        // Once no upstream holds it, a pool is gone: the next build starts afresh.
        let weak = Arc::downgrade(&one);
        drop((one, again));
        assert!(weak.upgrade().is_none());
    }
}
