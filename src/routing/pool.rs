//! The connections to one upstream, on hyper's client: HTTP/1.1 connections kept alive for
//! reuse, h2 connections shared by many streams, the cap on connections open at once, and h2
//! connections set up once for many requests arriving together.
//!
//! hyper gives connections (`hyper::client::conn`); the pool is promptgate's own, because
//! what it must do is per upstream and per connection, which hyper-util's pooled `Client`
//! hides: count the connections it opens and the protocol they speak (metrics, dashboard),
//! bound the capacity in use, serialize h2 set-up, fall back to HTTP/1.1 when the server
//! refuses h2, and trust `tls.ca_file` for this upstream only. It is also cheaper per request:
//! no pool key to hash, one short lock per checkout.
//!
//! - **Idle connections** (`pool.max_idle`): finished HTTP/1.1 connections wait in a
//!   last-in-first-out list, up to `max_idle` (past it, the oldest is closed), each reused for
//!   at most `timeouts.pool_idle` (one past it is closed when the list is next used: no timer
//!   per connection). One the upstream closed while idle is noticed by its connection task and
//!   skipped.
//! - **Open connections** (`pool.max_connections`): the connection *capacity in use* is
//!   bounded with a semaphore per upstream: `max_connections × max_streams` permits, an
//!   HTTP/1.1 exchange takes `max_streams` of them (it occupies a whole connection), an h2
//!   exchange one (a stream). A connection is opened only when none is idle (h1) or none has a
//!   free stream (h2), so connections in use never exceed `max_connections`. The protocol is
//!   learnt from the newest connection. Until then an upstream that may speak h2 is taken to
//!   (an exchange reserves a stream), so that a burst at start-up is not held to
//!   `max_connections` requests; an exchange that gets an HTTP/1.1 connection after all tops
//!   its reservation up to a whole connection before opening one (waiting like any other).
//! - **h2 multiplexing**: an h2 connection carries up to `pool.max_streams` exchanges at once.
//!   Requests arriving together would all find none with room while the first handshake is
//!   under way, and each open their own: so set-up of a connection that may speak h2 is
//!   serialized per upstream, the others wait for it and then share it. Once an h2
//!   connection is open, a request that finds a free stream on it takes no lock at all.
//! - **TLS**: rustls, SNI by host (or `tls.sni`), ALPN `h2` + `http/1.1` when h2 may be spoken;
//!   the system's trust anchors plus `tls.ca_file`'s.

use crate::config::schema::{HttpVersion, PoolSpec};
use crate::config::spec::{self, CaBundle};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pingora::tls::{ClientConfig, RootCertStore, ServerName, TlsConnector};
use pingora::{Error, ErrorType};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The protocol an upstream's connections last spoke.
const UNKNOWN: u8 = 0;
const H1: u8 = 1;
const H2: u8 = 2;

/// The largest piece of a request body handed to an h2 connection at a time: h2 then takes
/// the next only when flow control lets it send, so "the whole body was taken" means (to
/// within one piece) "the whole body was sent" (see [`Outgoing::progress`]).
const H2_PIECE: usize = 16 << 10;

/// What a connection may be offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// HTTP/1.1 only.
    H1,
    /// h2 or HTTP/1.1, as ALPN decides (TLS only).
    H2H1,
    /// h2 only (`http_version: h2`: ALPN `h2`, or prior knowledge on plain TCP).
    H2,
}

/// Where and how to connect for one exchange (the SNI name is the pool's: one per upstream).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
    pub offer: Offer,
    /// `timeouts.connect`: TCP and TLS together.
    pub connect_timeout: Duration,
    /// `timeouts.write`: how long one write may wait for the upstream to take bytes.
    pub write_timeout: Duration,
}

/// A connection's socket whose writes fail with `TimedOut` once one has waited `timeout`
/// for the upstream to take bytes (hyper has no write timeout of its own). A write that
/// completes at once, the usual case, costs nothing more.
struct WriteTimeout<S> {
    io: S,
    timeout: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(io: S, timeout: Duration) -> Self {
        WriteTimeout {
            io,
            timeout,
            waiting: None,
        }
    }

    /// `polled` was a write's result: pending writes wait at most `timeout` in all.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.waiting = None;
            return polled;
        }
        let timeout = self.timeout;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.waiting = None;
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "write timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.bounded(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.bounded(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.bounded(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The request body as hyper sends it: the buffered body (whole for HTTP/1.1, so head and body
/// leave in one `writev`; in [`H2_PIECE`]s for h2), telling how far the connection has taken it.
#[derive(Debug)]
pub struct Outgoing {
    rest: Bytes,
    piece: usize,
    progress: Arc<Progress>,
}

/// How much of a request body its connection has taken.
#[derive(Debug, Default)]
pub struct Progress {
    /// Pieces taken so far.
    pieces: AtomicU64,
    /// The whole body was taken.
    all: AtomicBool,
}

impl Progress {
    /// The connection has taken the whole body.
    pub fn all_taken(&self) -> bool {
        self.all.load(Ordering::Acquire)
    }

    /// Pieces taken so far (it moves while the upstream takes the body).
    pub fn pieces(&self) -> u64 {
        self.pieces.load(Ordering::Acquire)
    }
}

impl Outgoing {
    /// `body` for a connection speaking h2 (`h2`) or HTTP/1.1.
    pub fn new(body: Bytes, h2: bool) -> Outgoing {
        let progress = Progress::default();
        progress.all.store(body.is_empty(), Ordering::Release);
        Outgoing {
            progress: Arc::new(progress),
            piece: if h2 { H2_PIECE } else { usize::MAX },
            rest: body,
        }
    }

    /// How far the connection has taken the body.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(self.piece);
        let piece = self.rest.split_to(n);
        self.progress.pieces.fetch_add(1, Ordering::AcqRel);
        if self.rest.is_empty() {
            self.progress.all.store(true, Ordering::Release);
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// One exchange's connection: an HTTP/1.1 connection of its own, or a stream on an h2 one.
pub enum Conn {
    H1(http1::SendRequest<Outgoing>),
    H2(http2::SendRequest<Outgoing>, Stream),
}

impl Conn {
    pub fn is_h2(&self) -> bool {
        matches!(self, Conn::H2(..))
    }
}

/// An h2 connection in the pool.
struct H2Conn {
    sender: http2::SendRequest<Outgoing>,
    addr: SocketAddr,
    /// Streams in use.
    streams: AtomicUsize,
    /// When it last had no stream in use (ms since the pool's creation), for `pool_idle`.
    idle_since: AtomicU64,
}

/// A stream's place on an h2 connection, given back when dropped.
pub struct Stream {
    conn: Arc<H2Conn>,
    /// The pool's creation: [`H2Conn::idle_since`] counts from it.
    origin: Instant,
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.conn.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = self.origin.elapsed().as_millis() as u64;
            self.conn.idle_since.store(now, Ordering::Relaxed);
        }
    }
}

/// An idle HTTP/1.1 connection.
struct Idle {
    sender: http1::SendRequest<Outgoing>,
    addr: SocketAddr,
    until: Instant,
}

/// The connections to one upstream (shared by the upstream's successive builds across reloads
/// while its connection settings are unchanged).
pub struct Pool {
    /// Idle HTTP/1.1 connections, the newest last.
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    /// Open h2 connections.
    h2: Mutex<Vec<Arc<H2Conn>>>,
    /// The server refused h2 (`HTTP_1_1_REQUIRED`): HTTP/1.1 from now on.
    h1_preferred: AtomicBool,
    /// Connection capacity: `max_connections × per_connection` permits.
    capacity: Arc<Semaphore>,
    /// Permits one connection is worth: `max_streams` when h2 may be spoken, else 1.
    per_connection: u32,
    /// Whether `http_version` and the scheme allow h2 at all.
    may_h2: bool,
    http_version: HttpVersion,
    max_connections: usize,
    /// `pool.max_streams`: h2 streams per connection.
    max_streams: usize,
    /// [`H1`], [`H2`] or [`UNKNOWN`]: what the newest connection negotiated.
    protocol: AtomicU8,
    /// Held while getting a connection that may speak h2 (see the module doc).
    opening: tokio::sync::Mutex<()>,
    /// Connections opened since the pool was created, by protocol (h1, h2).
    opened: [AtomicU64; 2],
    /// `tls.ca_file`'s certificates, trusted besides the system's.
    ca: Option<Arc<CaBundle>>,
    /// The TLS settings by [`Offer`] (built on first use).
    tls: OnceLock<[Arc<ClientConfig>; 3]>,
    name: String,
    /// The name sent as SNI and verified against the certificate: `tls.sni`, else the URL's
    /// host (TLS only).
    sni: String,
    created: Instant,
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

/// Why [`Pool::session`] gave no connection.
#[derive(Debug)]
pub enum Opening {
    /// The connection turned out HTTP/1.1 and no whole connection freed up in time.
    Busy,
    /// Could not connect (TCP, TLS, or the HTTP handshake), as a Pingora error for
    /// [`crate::proxy::errors`]' classification.
    Failed(Box<Error>),
}

impl From<Box<Error>> for Opening {
    fn from(e: Box<Error>) -> Self {
        Opening::Failed(e)
    }
}

/// What identifies a pool across reloads: everything that shapes its connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    upstream: String,
    tls: bool,
    host: String,
    port: u16,
    sni: Option<String>,
    pool: PoolSpec,
    http_version: HttpVersion,
    ca: Option<Arc<CaBundle>>,
}

/// Every live pool, so that a reload's new upstream keeps the running one's connections.
fn registry() -> &'static Mutex<HashMap<Identity, Weak<Pool>>> {
    static POOLS: OnceLock<Mutex<HashMap<Identity, Weak<Pool>>>> = OnceLock::new();
    POOLS.get_or_init(Default::default)
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
    /// otherwise a new one.
    pub fn shared(name: &str, spec: &spec::Upstream) -> Arc<Pool> {
        let identity = Identity {
            upstream: name.to_string(),
            tls: spec.tls,
            host: spec.host.clone(),
            port: spec.port,
            sni: spec.sni.clone(),
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
        if spec.tls {
            // The trust anchors are read from disk here, while the config is built, not on
            // the runtime by the first request.
            pool.tls_config(Offer::H1);
        }
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
            idle: Mutex::new(Vec::new()),
            max_idle: spec.pool.max_idle,
            h2: Mutex::new(Vec::new()),
            h1_preferred: AtomicBool::new(false),
            capacity: Arc::new(Semaphore::new(permits)),
            per_connection: per_connection.min(u32::MAX as usize) as u32,
            may_h2,
            http_version: spec.http_version,
            max_connections,
            max_streams: spec.pool.max_streams.max(1),
            protocol: AtomicU8::new(UNKNOWN),
            opening: tokio::sync::Mutex::new(()),
            opened: Default::default(),
            ca: spec.ca.clone(),
            tls: OnceLock::new(),
            name: name.to_string(),
            sni: spec
                .sni
                .clone()
                .unwrap_or_else(|| spec.host.trim_matches(['[', ']']).to_string()),
            created: Instant::now(),
        }
    }

    /// What a connection for an exchange may be offered: HTTP/1.1 only with `h1` (a WebSocket
    /// upgrade), when h2 is not allowed, or once the server refused it.
    pub fn offer(&self, h1: bool) -> Offer {
        if h1 || !self.may_h2 || self.h1_preferred.load(Ordering::Relaxed) {
            Offer::H1
        } else if self.http_version == HttpVersion::H2 {
            Offer::H2
        } else {
            Offer::H2H1
        }
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
        acquire_within(&self.capacity, weight, wait)
            .await
            .map(Reserved)
    }

    /// Makes `reserved` a whole connection's capacity (an HTTP/1.1 exchange), waiting up to
    /// `wait` for the rest; false when it did not free up in time.
    async fn whole_connection(&self, reserved: &mut Reserved, wait: Duration) -> bool {
        let missing = (self.per_connection as usize).saturating_sub(reserved.0.num_permits());
        if missing == 0 {
            return true;
        }
        match acquire_within(&self.capacity, missing as u32, wait).await {
            Some(more) => {
                reserved.0.merge(more);
                true
            }
            None => false,
        }
    }

    /// A connection to `peer` within `reserved`: an idle HTTP/1.1 connection, a stream on an
    /// h2 connection with room, or a new connection (whose ALPN decides between them). True
    /// when reused. An HTTP/1.1 connection first makes `reserved` a whole connection, waiting
    /// up to `wait`.
    pub async fn session(
        &self,
        peer: &Peer,
        reserved: &mut Reserved,
        wait: Duration,
    ) -> Result<(Conn, bool), Opening> {
        if peer.offer != Offer::H1 && self.h1_preferred.load(Ordering::Relaxed) {
            // The server refused h2 since `peer` was made (a resend after
            // `HTTP_1_1_REQUIRED`, say): HTTP/1.1 now.
            let h1 = Peer {
                offer: Offer::H1,
                ..*peer
            };
            return Box::pin(self.session_as_offered(&h1, reserved, wait)).await;
        }
        self.session_as_offered(peer, reserved, wait).await
    }

    async fn session_as_offered(
        &self,
        peer: &Peer,
        reserved: &mut Reserved,
        wait: Duration,
    ) -> Result<(Conn, bool), Opening> {
        let may_h2 = peer.offer != Offer::H1;
        if may_h2 && self.protocol.load(Ordering::Relaxed) == H2 {
            // The usual case once warm: a free stream on an open h2 connection, found without
            // the set-up lock (which only serializes opening connections; every request
            // taking it made the request threads queue on one lock).
            if let Some(stream) = self.h2_stream(peer) {
                return Ok((stream, true));
            }
        }
        let (conn, reused) = if may_h2 && self.protocol.load(Ordering::Relaxed) != H1 {
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
        if !conn.is_h2() {
            // Reserved as a stream, but it got a connection of its own (the first connection
            // of an upstream that turned out to speak HTTP/1.1): count it whole if possible.
            self.whole_connection(reserved, Duration::ZERO).await;
        }
        Ok((conn, reused))
    }

    /// A connection to `peer`, recording the protocol it speaks unless `peer` was offered
    /// only HTTP/1.1 on an upstream that may speak h2 (a WebSocket upgrade's HTTP/1.1 says
    /// nothing about what the upstream speaks); counts a new connection.
    async fn connect(&self, peer: &Peer, may_h2: bool) -> Result<(Conn, bool), Box<Error>> {
        let (conn, reused) = match self.reused(peer).await {
            Some(conn) => (conn, true),
            // Boxed: opening's state (TCP, TLS, handshake) is large, and only needed when a
            // connection is opened; inline it would enlarge every request's future.
            None => (Box::pin(self.open(peer)).await?, false),
        };
        let protocol = if conn.is_h2() { H2 } else { H1 };
        if may_h2 || !self.may_h2 {
            self.protocol.store(protocol, Ordering::Relaxed);
        }
        if !reused {
            self.opened[usize::from(protocol == H2)].fetch_add(1, Ordering::Relaxed);
        }
        Ok((conn, reused))
    }

    /// A free stream on an h2 connection when `peer` may speak h2, else (unless `peer` speaks
    /// only h2) an idle HTTP/1.1 connection.
    async fn reused(&self, peer: &Peer) -> Option<Conn> {
        if peer.offer != Offer::H1 {
            if let Some(stream) = self.h2_stream(peer) {
                return Some(stream);
            }
            if peer.offer == Offer::H2 {
                return None;
            }
        }
        self.idle_h1(peer).await
    }

    /// A stream on an open h2 connection to `peer` with room for one; closed connections and
    /// ones idle past `pool_idle`'s end are dropped on the way.
    fn h2_stream(&self, peer: &Peer) -> Option<Conn> {
        let mut conns = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.sender.is_closed());
        for conn in conns.iter() {
            if conn.addr != peer.addr || !conn.sender.is_ready() {
                continue;
            }
            let taken = conn
                .streams
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.max_streams).then_some(n + 1)
                });
            if taken.is_ok() {
                let stream = Stream {
                    conn: conn.clone(),
                    origin: self.created,
                };
                return Some(Conn::H2(conn.sender.clone(), stream));
            }
        }
        None
    }

    /// The newest idle HTTP/1.1 connection to `peer` still open and within its idle time.
    async fn idle_h1(&self, peer: &Peer) -> Option<Conn> {
        loop {
            let Idle {
                mut sender,
                addr,
                until,
            } = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if addr != peer.addr || until < Instant::now() || sender.is_closed() {
                continue; // dropped: closed
            }
            // Usually ready at once; right after its answer was read, the connection task may
            // not have marked it so yet.
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(Conn::H1(sender));
            }
        }
    }

    /// A new connection to `peer`, within `timeouts.connect`.
    async fn open(&self, peer: &Peer) -> Result<Conn, Box<Error>> {
        match tokio::time::timeout(peer.connect_timeout, self.dial(peer)).await {
            Ok(conn) => conn,
            Err(_) => Error::e_explain(
                if peer.tls {
                    ErrorType::TLSHandshakeTimedout
                } else {
                    ErrorType::ConnectTimedout
                },
                format!("connecting to {} (timeout)", peer.addr),
            ),
        }
    }

    async fn dial(&self, peer: &Peer) -> Result<Conn, Box<Error>> {
        let tcp = tokio::net::TcpStream::connect(peer.addr)
            .await
            .map_err(|e| connect_error(peer, e))?;
        // As Pingora's connector did: a request leaves at once, not after Nagle's delay.
        let _ = tcp.set_nodelay(true);
        let tcp = WriteTimeout::new(tcp, peer.write_timeout);
        if !peer.tls {
            return match peer.offer {
                // `http_version: h2` on plain TCP: h2 by prior knowledge (h2c).
                Offer::H2 => self.handshake_h2(tcp, peer).await,
                _ => handshake_h1(tcp).await,
            };
        }
        let name = ServerName::try_from(self.sni.clone()).map_err(|e| {
            Error::because(ErrorType::InvalidCert, "the SNI is not a valid name", e)
        })?;
        let connector = TlsConnector::from(self.tls_config(peer.offer));
        let tls = connector.connect(name, tcp).await.map_err(|e| {
            Error::explain(
                ErrorType::TLSHandshakeFailure,
                format!("{e}, SNI: {}", self.sni),
            )
        })?;
        let alpn_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if alpn_h2 || (peer.offer == Offer::H2 && tls.get_ref().1.alpn_protocol().is_none()) {
            self.handshake_h2(tls, peer).await
        } else {
            handshake_h1(tls).await
        }
    }

    /// An h2 connection on `io`, added to the pool with one stream taken (this exchange's).
    async fn handshake_h2<T>(&self, io: T, peer: &Peer) -> Result<Conn, Box<Error>>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::because(ErrorType::HandshakeError, "h2 handshake", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("upstream h2 connection ended: {e}");
            }
        });
        let conn = Arc::new(H2Conn {
            sender: sender.clone(),
            addr: peer.addr,
            streams: AtomicUsize::new(1),
            idle_since: AtomicU64::new(0),
        });
        self.h2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.clone());
        Ok(Conn::H2(
            sender,
            Stream {
                conn,
                origin: self.created,
            },
        ))
    }

    /// The rustls settings for `offer`: ALPN to match, the system's trust anchors plus
    /// `tls.ca_file`'s.
    fn tls_config(&self, offer: Offer) -> Arc<ClientConfig> {
        let configs = self.tls.get_or_init(|| {
            pingora::tls::install_default_crypto_provider();
            let roots = Arc::new(trust_anchors(&self.name, self.ca.as_deref()));
            let with = |alpn: &[&[u8]]| {
                let mut config = ClientConfig::builder()
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth();
                config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                Arc::new(config)
            };
            [
                with(&[b"http/1.1"]),
                with(&[b"h2", b"http/1.1"]),
                with(&[b"h2"]),
            ]
        });
        configs[match offer {
            Offer::H1 => 0,
            Offer::H2H1 => 1,
            Offer::H2 => 2,
        }]
        .clone()
    }

    /// Returns a finished exchange's connection: an HTTP/1.1 one to the idle list (for
    /// `idle` at most), an h2 stream's place on its connection (given back by dropping it).
    pub fn release(&self, conn: Conn, peer: &Peer, idle: Duration) {
        match conn {
            Conn::H1(sender) => {
                if self.max_idle == 0 || sender.is_closed() {
                    return;
                }
                let now = Instant::now();
                let mut list = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                // The oldest first: those past `pool_idle` (or closed by the upstream) go.
                while list
                    .first()
                    .is_some_and(|i| i.until <= now || i.sender.is_closed())
                {
                    list.remove(0);
                }
                if list.len() >= self.max_idle {
                    list.remove(0); // the least recently used: closed
                }
                list.push(Idle {
                    sender,
                    addr: peer.addr,
                    until: now + idle,
                });
            }
            Conn::H2(_, stream) => {
                drop(stream);
                self.trim_h2(idle);
            }
        }
    }

    /// Closes h2 connections without streams beyond `max_idle`, and those idle past `idle`.
    fn trim_h2(&self, idle: Duration) {
        let now = self.created.elapsed().as_millis() as u64;
        let idle = idle.as_millis() as u64;
        let mut unused = 0;
        let mut conns = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| {
            if c.streams.load(Ordering::Acquire) > 0 {
                return true;
            }
            unused += 1;
            unused <= self.max_idle
                && now.saturating_sub(c.idle_since.load(Ordering::Relaxed)) <= idle
                && !c.sender.is_closed()
        });
    }

    /// The server refused h2 (`HTTP_1_1_REQUIRED`): offer only HTTP/1.1 from now on.
    pub fn prefer_h1(&self) {
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

/// An HTTP/1.1 connection on `io` (able to switch protocols after a `101`).
async fn handshake_h1<T>(io: T) -> Result<Conn, Box<Error>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Error::because(ErrorType::HandshakeError, "HTTP/1.1 handshake", e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            log::debug!("upstream connection ended: {e}");
        }
    });
    Ok(Conn::H1(sender))
}

/// `n` permits of `semaphore`, waiting up to `wait` for them; `None` when they did not free up
/// in time (or the semaphore is closed). Permits already free are taken without arming a
/// timer (creating and cancelling one cost more than the rest of taking them).
pub(crate) async fn acquire_within(
    semaphore: &Arc<Semaphore>,
    n: u32,
    wait: Duration,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = semaphore.clone().try_acquire_many_owned(n) {
        return Some(permit);
    }
    let permits = semaphore.clone().acquire_many_owned(n);
    tokio::time::timeout(wait, permits).await.ok()?.ok()
}

/// A failed TCP connect, as the error kind [`crate::proxy::errors`] classifies.
fn connect_error(peer: &Peer, e: std::io::Error) -> Box<Error> {
    use std::io::ErrorKind;
    let kind = match e.kind() {
        ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => ErrorType::ConnectNoRoute,
        ErrorKind::TimedOut => ErrorType::ConnectTimedout,
        _ => ErrorType::ConnectError,
    };
    Error::because(kind, format!("connecting to {}", peer.addr), e)
}

/// The system's trust anchors, loaded once per process.
fn system_anchors() -> &'static [Vec<u8>] {
    static SYSTEM: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SYSTEM.get_or_init(|| match pingora::tls::load_native_certs() {
        Ok(certs) => certs.into_iter().map(|c| c.to_vec()).collect(),
        Err(e) => {
            log::warn!("cannot load the system's CA certificates ({e})");
            Vec::new()
        }
    })
}

/// The system's trust anchors plus `bundle`'s (`tls.ca_file`: an addition, not a
/// replacement). A certificate rustls cannot use is left out.
fn trust_anchors(upstream: &str, bundle: Option<&CaBundle>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let system = system_anchors();
    if system.is_empty() {
        if let Some(bundle) = bundle {
            log::warn!(
                "upstream {upstream}: no system CA certificates; trusting only {}",
                bundle.path.display()
            );
        }
    }
    let file = bundle.map(|b| b.certs.as_slice()).unwrap_or_default();
    for der in file.iter().chain(system) {
        let _ = roots.add(der.clone().into());
    }
    roots
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
    fn offers_follow_http_version_the_scheme_and_a_refusal_of_h2() {
        let offer = |tls, version, h1| Pool::new("u", &spec(tls, small(), version)).offer(h1);
        assert_eq!(offer(false, HttpVersion::Auto, false), Offer::H1);
        assert_eq!(offer(true, HttpVersion::Auto, false), Offer::H2H1);
        assert_eq!(offer(true, HttpVersion::Auto, true), Offer::H1);
        assert_eq!(offer(true, HttpVersion::H1, false), Offer::H1);
        assert_eq!(offer(false, HttpVersion::H2, false), Offer::H2);
        assert_eq!(offer(true, HttpVersion::H2, false), Offer::H2);
        let refused = Pool::new("u", &spec(true, small(), HttpVersion::Auto));
        refused.prefer_h1();
        assert_eq!(refused.offer(false), Offer::H1);
    }

    #[test]
    fn an_h2_body_goes_in_pieces_and_says_when_it_was_all_taken() {
        use http_body_util::BodyExt;
        let body = Bytes::from(vec![7u8; H2_PIECE * 2 + 5]);
        let mut h2 = Outgoing::new(body.clone(), true);
        let progress = h2.progress();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut sizes = Vec::new();
        while let Some(frame) = rt.block_on(h2.frame()) {
            sizes.push(frame.unwrap().into_data().unwrap().len());
            assert_eq!(progress.pieces(), sizes.len() as u64);
            // Set with the last piece, not before.
            assert_eq!(progress.all_taken(), sizes.len() == 3);
        }
        assert_eq!(sizes, [H2_PIECE, H2_PIECE, 5]);
        let mut h1 = Outgoing::new(body, false);
        let whole = rt.block_on(h1.frame()).unwrap().unwrap();
        assert_eq!(whole.into_data().unwrap().len(), H2_PIECE * 2 + 5);
        assert!(h1.progress().all_taken());
        assert!(Outgoing::new(Bytes::new(), true).progress().all_taken());
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
        let mut moved = spec(true, small(), HttpVersion::Auto);
        moved.port = 10;
        assert!(!Arc::ptr_eq(&one, &Pool::shared("keep", &moved)));
        // Once no upstream holds it, a pool is gone: the next build starts afresh.
        let weak = Arc::downgrade(&one);
        drop((one, again));
        assert!(weak.upgrade().is_none());
    }
}
