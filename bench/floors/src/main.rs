//! Pingora floors: the least a Pingora 0.9 server can spend per request on the two things
//! promptgate does, so `make bench` can show how far promptgate is from what its framework
//! allows (reference rows, not products).
//!
//! One binary, four modes, served as promptgate serves its proxy (same `ServerConf` threads, h2c
//! on, client socket buffers read 0 / write 8 KiB as `src/server/mod.rs`'s `client_buffers`):
//!
//! - `static`: a cache hit with no cache: read the request body, answer a fixed body (the
//!   bench's 2 KB chat completion) with `Content-Length`.
//! - `exchange`: promptgate's miss design, minus promptgate: read the body, send it upstream on
//!   Pingora's pooled `Connector`, relay the answer chunk by chunk, return the connection to
//!   the pool.
//! - `hyper`: `exchange` with hyper's client instead of Pingora's: the same request head and
//!   body, sent on one `hyper_util` legacy `Client` per process (pooled keep-alive), the answer
//!   relayed frame by frame (issue 22 item 5: which client is cheaper).
//! - `proxy`: stock `ProxyHttp` pass-through: `upstream_peer` names the upstream, Pingora
//!   forwards the request and the response (its own pooled keep-alive connections): the
//!   reference for what stock Pingora proxying costs.
//!
//! `static`, `exchange` and `hyper` are a Pingora `HttpServerApp`, as promptgate is since issue
//! 22 (`src/proxy/serve.rs`): read the request head, box the request's work, answer, finish
//! the session and hand the connection back for its next request. pingora-proxy's request
//! driver (`ProxyHttp`) costs ≈ 15k instructions per request on top, which promptgate no longer
//! pays; `--proxy-http` serves the same three modes from `ProxyHttp::request_filter` instead,
//! as these floors did before, to show that cost.
//!
//! `--h2`: `exchange` and `hyper` speak HTTP/2 to the upstream by prior knowledge (h2c; the
//! bench's upstream is plain HTTP on loopback) instead of HTTP/1.1 keep-alive.
//!
//! Usage: `floor <static|proxy|exchange|hyper> --listen ADDR [--upstream ADDR] [--body FILE]
//! [--threads N] [--no-work-stealing] [--h2] [--proxy-http]`. Stops on SIGTERM.
//!
//! The global allocator is promptgate's (jemalloc): with glibc's malloc the floors paid ≈ 5,000
//! instructions per pass-through more than the product does for the same allocations, which
//! made promptgate look closer to them than it is.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::protocols::ALPN;
use pingora::proxy::{ProxyHttp, ProxyServiceBuilder, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Hop-by-hop headers (RFC 9110 §7.6.1): any proxy must drop these, so the floor does too.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How long an idle upstream connection stays in the pool (seconds; the bench's runs are short).
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Concurrent streams per upstream HTTP/2 connection (`--h2`) on Pingora's connector (hyper's
/// takes the server's limit).
const H2_STREAMS: usize = 100;

/// hyper's pooled client, as promptgate would hold it: one per process, shared by every request.
type HyperClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Static,
    Proxy,
    Exchange,
    Hyper,
}

struct Args {
    mode: Mode,
    listen: SocketAddr,
    upstream: Option<SocketAddr>,
    body: Option<String>,
    threads: usize,
    work_stealing: bool,
    /// HTTP/2 (h2c, prior knowledge) to the upstream instead of HTTP/1.1.
    h2: bool,
    /// `static`, `exchange`, `hyper` from `ProxyHttp::request_filter` (the floors before issue
    /// 22's `HttpServerApp`) instead of as an `HttpServerApp`.
    proxy_http: bool,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = match it.next().as_deref() {
        Some("static") => Mode::Static,
        Some("proxy") => Mode::Proxy,
        Some("exchange") => Mode::Exchange,
        Some("hyper") => Mode::Hyper,
        other => {
            return Err(format!(
                "unknown mode {other:?} (static, proxy, exchange or hyper)"
            ))
        }
    };
    let (mut listen, mut upstream, mut body, mut threads, mut work_stealing, mut h2) =
        (None, None, None, 1, true, false);
    let mut proxy_http = false;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?),
            "--upstream" => upstream = Some(value()?),
            "--body" => body = Some(value()?),
            "--threads" => threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--no-work-stealing" => work_stealing = false,
            "--h2" => h2 = true,
            "--proxy-http" => proxy_http = true,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let addr = |name: &str, v: String| {
        v.parse::<SocketAddr>()
            .map_err(|e| format!("{name} {v}: {e} (an IP:port)"))
    };
    let listen = addr("--listen", listen.ok_or("--listen is required")?)?;
    let upstream = upstream.map(|u| addr("--upstream", u)).transpose()?;
    if mode != Mode::Static && upstream.is_none() {
        return Err("--upstream is required for proxy, exchange and hyper".into());
    }
    if mode == Mode::Static && body.is_none() {
        return Err("--body is required for static".into());
    }
    // 0 = one thread per core, as promptgate's `threads: 0`.
    if threads == 0 {
        threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    Ok(Args {
        mode,
        listen,
        upstream,
        body,
        threads,
        work_stealing,
        h2,
        proxy_http: proxy_http || mode == Mode::Proxy,
    })
}

fn is_hop_by_hop(name: &HeaderName, connection: Option<&HeaderValue>) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || connection.and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
        })
}

/// The client's head for an upstream answer: its status and end-to-end headers, chunked
/// without a `Content-Length` (as promptgate's `exchange::client_header`).
fn client_head(status: http::StatusCode, headers: &http::HeaderMap) -> Result<ResponseHeader> {
    let mut head = ResponseHeader::build(status, Some(headers.len() + 1))?;
    let connection = headers.get(header::CONNECTION);
    for (name, value) in headers.iter() {
        if !is_hop_by_hop(name, connection) {
            head.append_header(name.clone(), value.clone())?;
        }
    }
    if !head.headers.contains_key(header::CONTENT_LENGTH) {
        head.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(head)
}

/// Reads the whole request body into one buffer (one chunk, the usual case, without a copy).
async fn read_body(session: &mut ServerSession) -> Result<Bytes> {
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(f) => {
                rest.extend_from_slice(&f);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

struct Floor {
    mode: Mode,
    /// The upstream (proxy, exchange); its `Host` header value.
    peer: Option<HttpPeer>,
    host: String,
    /// The fixed answer (static).
    body: Bytes,
    connector: Connector,
    /// `hyper`: the client and the upstream's authority (`IP:port`, for the absolute URI).
    hyper: HyperClient,
    authority: Option<Authority>,
    host_value: HeaderValue,
    /// `--h2`: HTTP/2 (h2c) to the upstream on either client.
    h2: bool,
    /// h2c on, as promptgate's `serve::server_options`.
    server_options: HttpServerOptions,
}

impl Floor {
    /// `static`: the fixed answer, after reading the request body as a cache lookup must.
    async fn answer(&self, session: &mut ServerSession) -> Result<()> {
        read_body(session).await?;
        let mut head = ResponseHeader::build(200, Some(2))?;
        head.insert_header(header::CONTENT_TYPE, "application/json")?;
        head.insert_header(header::CONTENT_LENGTH, self.body.len())?;
        session.write_response_header(Box::new(head)).await?;
        session.write_response_body(self.body.clone(), true).await
    }

    /// `exchange`: promptgate's miss path without promptgate (no routing, cache, metrics, log).
    async fn exchange(&self, session: &mut ServerSession) -> Result<()> {
        let body = read_body(session).await?;
        let peer = self.peer.as_ref().expect("exchange has an upstream");
        let client = session.req_header();
        let target = client
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut req = RequestHeader::build(
            client.method.clone(),
            target.as_bytes(),
            Some(client.headers.len() + 2),
        )?;
        let connection = client.headers.get(header::CONNECTION);
        for (name, value) in client.headers.iter() {
            if name == header::HOST
                || name == header::CONTENT_LENGTH
                || is_hop_by_hop(name, connection)
            {
                continue;
            }
            req.append_header(name.clone(), value.clone())?;
        }
        req.insert_header(header::CONTENT_LENGTH, body.len())?;
        if self.h2 {
            // HTTP/2 names the authority in the URI (`:authority`); a `Host` header as well is a
            // duplicate to nginx (400).
            req.set_uri(self.absolute_uri(client.uri.path_and_query())?);
        } else {
            req.insert_header(header::HOST, &self.host)?;
        }

        let (mut up, _reused) = self.connector.get_http_session(peer).await?;
        up.write_request_header(Box::new(req)).await?;
        if !body.is_empty() {
            up.write_request_body(body, true).await?;
        }
        up.finish_request_body().await?;
        up.read_response_header().await?;
        let upstream_head = up.response_header().expect("read above");
        let head = client_head(upstream_head.status, &upstream_head.headers)?;
        session.write_response_header(Box::new(head)).await?;
        while let Some(chunk) = up.read_response_body().await? {
            if up.response_done() {
                // Back to the pool before the client's last byte, as promptgate does.
                self.connector
                    .release_http_session(up, peer, Some(POOL_IDLE))
                    .await;
                return session.write_response_body(chunk, true).await;
            }
            session.write_response_body(chunk, false).await?;
        }
        if up.response_done() {
            self.connector
                .release_http_session(up, peer, Some(POOL_IDLE))
                .await;
        }
        session.write_response_body(Bytes::new(), true).await
    }

    /// `http://IP:port/path?query` for the upstream: hyper's client routes (and pools) by the
    /// URI's scheme and authority. Cheap: both parts are shared `Bytes`.
    fn absolute_uri(&self, path: Option<&PathAndQuery>) -> Result<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = self.authority.clone();
        parts.path_and_query = Some(
            path.cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts)
            .or_else(|e| Error::e_because(ErrorType::InternalError, "upstream URI", e))
    }

    /// `hyper`: `exchange` with the upstream leg on hyper's pooled client. Same request head
    /// (client headers minus hop-by-hop, `Host`, `Content-Length`), same relay chunk by chunk;
    /// hyper returns the connection to its pool once the answer's body has been read.
    async fn hyper_exchange(&self, session: &mut ServerSession) -> Result<()> {
        let body = read_body(session).await?;
        let client = session.req_header();
        let mut req = http::Request::new(Full::new(body.clone()));
        *req.method_mut() = client.method.clone();
        *req.uri_mut() = self.absolute_uri(client.uri.path_and_query())?;
        let headers = req.headers_mut();
        headers.reserve(client.headers.len() + 2);
        let connection = client.headers.get(header::CONNECTION);
        for (name, value) in client.headers.iter() {
            if name == header::HOST
                || name == header::CONTENT_LENGTH
                || is_hop_by_hop(name, connection)
            {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        if !self.h2 {
            // HTTP/2: the URI's authority is `:authority` (see `exchange`).
            headers.insert(header::HOST, self.host_value.clone());
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));

        let answer = self
            .hyper
            .request(req)
            .await
            .or_else(|e| Error::e_because(ErrorType::ConnectError, "hyper request", e))?;
        let (upstream_head, mut answer) = answer.into_parts();
        let head = client_head(upstream_head.status, &upstream_head.headers)?;
        session.write_response_header(Box::new(head)).await?;
        while let Some(frame) = answer.frame().await {
            let frame =
                frame.or_else(|e| Error::e_because(ErrorType::ReadError, "hyper body", e))?;
            if let Ok(chunk) = frame.into_data() {
                session.write_response_body(chunk, false).await?;
            }
        }
        session.write_response_body(Bytes::new(), true).await
    }

    /// One request of `static`, `exchange` or `hyper`, its head read.
    async fn respond(&self, session: &mut ServerSession) -> Result<()> {
        match self.mode {
            Mode::Static => self.answer(session).await,
            // Boxed: Pingora's connector makes this future ≈ 10 KB, which would otherwise
            // size (and be copied with) every request's future, hits included; promptgate
            // boxes its upstream steps for the same reason.
            Mode::Exchange => Box::pin(self.exchange(session)).await,
            Mode::Hyper => self.hyper_exchange(session).await,
            Mode::Proxy => Error::e_explain(ErrorType::InternalError, "proxy is a ProxyHttp"),
        }
    }

    /// One request, from its head to the connection handed back (as promptgate's
    /// `Proxy::serve`): `None` when the connection cannot be reused.
    async fn serve(&self, mut session: ServerSession) -> Option<ReusedHttpStream> {
        if self.respond(&mut session).await.is_err() {
            // An upstream that failed before the answer started gets a 502; after, the
            // connection is cut so a truncated body cannot look complete.
            if session.response_written().is_none() {
                let _ = session.respond_error(502).await;
            }
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        let reusable = session.finish().await.ok().flatten()?;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

/// The server side promptgate has (`src/proxy/serve.rs`): a small future waits for the request
/// head; the request's work is boxed once it has arrived.
#[async_trait]
impl HttpServerApp for Floor {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let mut closing = shutdown.clone();
        let read = tokio::select! {
            biased;
            read = session.read_request() => read,
            // Shutting down: an idle keep-alive connection is closed instead of waited on.
            _ = closing.wait_for(|closing| *closing) => return None,
        };
        match read {
            Ok(true) => {}
            // The client closed an idle connection, or sent no readable head.
            Ok(false) | Err(_) => return None,
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        Box::pin(self.serve(session)).await
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.server_options)
    }
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        match self.mode {
            Mode::Proxy => Ok(false),
            // `--proxy-http`: the same work on the proxy's client session.
            _ => self
                .respond(&mut session.downstream_session)
                .await
                .map(|()| true),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        match &self.peer {
            Some(peer) if self.mode == Mode::Proxy => Ok(Box::new(peer.clone())),
            _ => Error::e_explain(ErrorType::InternalError, "this floor has no upstream path"),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        req.insert_header(header::HOST, &self.host)
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("floor: {e}");
            return ExitCode::from(2);
        }
    };
    let body = match &args.body {
        Some(path) => match std::fs::read(path) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                eprintln!("floor: cannot read --body {path}: {e}");
                return ExitCode::from(2);
            }
        },
        None => Bytes::new(),
    };
    let conf = ServerConf {
        threads: args.threads,
        work_stealing: args.work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    let peer = args.upstream.map(|a| {
        let mut peer = HttpPeer::new(a, false, String::new());
        if args.h2 {
            // Plain text with min version 2: Pingora trusts the peer speaks h2c.
            peer.options.alpn = ALPN::H2;
            peer.options.max_h2_streams = H2_STREAMS;
        }
        peer
    });
    let host = args.upstream.map(|a| a.to_string()).unwrap_or_default();
    let mut http = HttpConnector::new();
    // As Pingora's connector does for its upstream sockets.
    http.set_nodelay(true);
    let hyper = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(args.h2)
        .build(http);
    let mut server_options = HttpServerOptions::default();
    server_options.h2c = true;
    let floor = Floor {
        mode: args.mode,
        peer,
        authority: host.parse().ok(),
        host_value: HeaderValue::from_str(&host).expect("an IP:port is a valid header value"),
        host,
        body,
        connector,
        hyper,
        h2: args.h2,
        server_options: server_options.clone(),
    };
    // As promptgate's `client_buffers` (src/server/mod.rs): no read buffer, 8 KiB write buffer.
    let listener =
        ListenerConfig::tcp(args.listen.to_string()).l4_buffer(L4BufferSettings::new(0, 8 * 1024));
    if args.proxy_http {
        let mut service = ProxyServiceBuilder::new(&server.configuration, floor)
            .name("floor")
            .server_options(server_options)
            .build();
        service.add_listener(listener);
        server.add_service(service);
    } else {
        let mut service = Service::new("floor".to_string(), floor);
        service.add_listener(listener);
        server.add_service(service);
    }
    server.run_forever()
}
