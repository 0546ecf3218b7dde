//! The upstream exchange: build the upstream request, send it with its buffered body on a
//! hyper connection from the upstream's pool, and relay the response to the client chunk by
//! chunk as it arrives.

use super::ctx::Stamp;
use super::errors::{self, Named, ProxyError};
use super::heads::{self, RequestHead, ResponseHead};
use super::respond;
use super::session::Session;
use crate::body::ParsedBody;
use crate::cache::record::{RecordPlan, Recorder};
use crate::config::schema::Provider;
use crate::headers;
use crate::providers::anthropic::{self, CacheMinimums};
use crate::providers::ResponseReader;
use crate::routing::pool::{Conn, Opening, Outgoing, Peer, Progress};
use crate::routing::upstream::{Slot, Upstream};
use crate::routing::Target;
use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{self, HeaderName};
use http::HeaderValue;
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, RetryType};
use std::time::Duration;

/// Tries on pooled connections that turn out to be closed by the upstream while idle.
pub const STALE_CONNECTION_ATTEMPTS: usize = 3;

/// The header names a message's `Connection` field nominates as hop-by-hop besides the fixed
/// ones (RFC 9110 §7.6.1), read once per message instead of once per header: from every
/// `Connection` field line, since lines of one name are one comma-separated list (§5.3).
/// Usually none: `keep-alive` and `close`, the common values, name no other header.
struct Nominated<'a>(Vec<&'a str>);

impl<'a> Nominated<'a> {
    fn of(headers: &'a http::HeaderMap) -> Nominated<'a> {
        let mut names = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            // The usual values nominate nothing: no split.
            if value.eq_ignore_ascii_case("keep-alive") || value.eq_ignore_ascii_case("close") {
                continue;
            }
            names.extend(value.split(',').map(str::trim).filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("keep-alive")
                    && !t.eq_ignore_ascii_case("close")
            }));
        }
        Nominated(names)
    }

    fn contains(&self, name: &HeaderName) -> bool {
        self.0.iter().any(|t| t.eq_ignore_ascii_case(name.as_str()))
    }
}

/// True for hop-by-hop headers ([`headers::is_hop_by_hop`]), including any the message's
/// `Connection` header nominates.
fn is_hop_by_hop(name: &HeaderName, nominated: &Nominated) -> bool {
    headers::is_hop_by_hop(name.as_str()) || nominated.contains(name)
}

/// The request to send upstream: the client's method and headers, minus hop-by-hop and
/// framing headers, plus `Host`, `Content-Length` and the upstream's injected headers.
///
/// An `http` head ([`heads`]): hyper writes its names as they are (lower case; header names
/// are case-insensitive).
pub fn build_request(
    client: &RequestHeader,
    upstream: &Upstream,
    path_and_query: &str,
    body_len: usize,
) -> Result<RequestHead, ProxyError> {
    let invalid = |_| ProxyError::ClientBody("request target is not valid".into());
    let path = upstream.path_for(path_and_query);
    let mut req =
        heads::request(client.method.clone(), path, client.headers.len() + 4).map_err(invalid)?;
    let nominated = Nominated::of(&client.headers);
    let headers = &mut req.headers;
    for (name, value) in client.headers.iter() {
        if headers::is_replaced_upstream(name.as_str())
            || upstream.headers.iter().any(|(n, _)| n == name)
            || nominated.contains(name)
        {
            continue;
        }
        heads::append(headers, name.clone(), value.clone()).map_err(invalid)?;
    }
    heads::insert(headers, header::HOST, upstream.host_header.clone()).map_err(invalid)?;
    // Cached and replayed bodies must be plain bytes, so ask for no compression.
    heads::insert(
        headers,
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    )
    .map_err(invalid)?;
    let has_body = body_len > 0
        || client.headers.contains_key(header::CONTENT_LENGTH)
        || client.headers.contains_key(header::TRANSFER_ENCODING);
    if has_body {
        heads::insert(headers, header::CONTENT_LENGTH, HeaderValue::from(body_len))
            .map_err(invalid)?;
    }
    for (name, value) in &upstream.headers {
        heads::insert(headers, name, value.expose().clone()).map_err(invalid)?;
    }
    Ok(req)
}

/// The body `target` gets, and how many prompt-cache breakpoints promptgate added to it: the
/// client's body with the target's model rewrite ([`rewrite_model`]); with `caching` (a route
/// with `prompt_caching: auto`) and a Messages call to an `anthropic` upstream, also the
/// breakpoints [`anthropic::with_breakpoints`] places. `parsed` is `body`'s tree; the
/// response-cache key was computed from it before, so it is the client's body that is keyed.
pub fn body_for(
    target: &Target,
    forward: &str,
    body: &Bytes,
    parsed: &ParsedBody<'_>,
    caching: Option<&CacheMinimums>,
) -> (Bytes, usize) {
    let up = &target.upstream;
    let marked = caching
        .filter(|_| up.provider == Provider::Anthropic)
        .filter(|_| anthropic::is_messages_path(&up.path_for(forward)))
        .and_then(|minimums| {
            anthropic::with_breakpoints(parsed, target.model.as_deref(), minimums)
        });
    match marked {
        Some(m) => (Bytes::from(m.body), m.breakpoints),
        None => (rewrite_model(target, body, parsed), 0),
    }
}

/// Replaces the JSON body's `model` when the target asks for it. Other fields keep their order
/// and values; the body length changes, which `build_request` accounts for. A body that is not
/// a JSON object with a `model` is sent untouched: the upstream decides what to make of it.
/// `parsed` is `body`'s tree, shared by every target of the request.
pub fn rewrite_model(target: &Target, body: &Bytes, parsed: &ParsedBody<'_>) -> Bytes {
    match target.model.as_deref().and_then(|m| parsed.with_model(m)) {
        Some(rewritten) => Bytes::from(rewritten),
        None => body.clone(),
    }
}

/// An upstream response whose head has been read and whose body is still to come.
pub struct UpstreamResponse {
    head: ResponseHead,
    body: Incoming,
    /// The connection (h2: the stream's place on it), back to the pool once the body is read.
    conn: Option<Conn>,
    peer: Peer,
    /// The body has been read to its end.
    done: bool,
    /// The upstream answered before it had the whole request body (h2, see `send_once`): an
    /// answer to a request it did not read whole is relayed, never stored.
    answered_early: bool,
}

/// What reading a response body gives: a chunk, or its end.
enum Read {
    Chunk(Bytes),
    End,
}

impl UpstreamResponse {
    pub fn header(&self) -> &ResponseHead {
        &self.head
    }

    /// The connection switched to another protocol after a `101` (for a tunnel; it is never
    /// returned to the pool).
    pub async fn upgraded(mut self) -> pingora::Result<hyper::upgrade::Upgraded> {
        let Some(upgrade) = self.head.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Error::e_explain(ErrorType::InternalError, "the 101 allows no upgrade");
        };
        upgrade
            .await
            .map_err(|e| Error::because(ErrorType::ConnectionClosed, "upgrading", e))
    }

    /// A reader for this response's body (its `Content-Type` and `Content-Encoding`).
    pub fn reader(&self) -> ResponseReader {
        ResponseReader::for_headers(&self.header().headers)
    }

    /// The next body chunk, waiting up to `idle` for it (`timeouts.idle`). Trailers are not
    /// relayed. After the last chunk, `done` says so at once when the length tells (so the
    /// connection goes back before the client has the last byte).
    async fn read(&mut self, idle: Duration) -> pingora::Result<Read> {
        loop {
            // A chunk already there needs no timer (arming and cancelling one cost more than
            // the rest of the read).
            let frame = match self.body.frame().now_or_never() {
                Some(frame) => frame,
                None => match tokio::time::timeout(idle, self.body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => return Error::e_explain(ErrorType::ReadTimedout, "reading the body"),
                },
            };
            match frame {
                None => {
                    self.done = true;
                    return Ok(Read::End);
                }
                Some(Err(e)) => return Err(body_error(e)),
                Some(Ok(frame)) => {
                    if let Ok(chunk) = frame.into_data() {
                        if self.body.is_end_stream() {
                            self.done = true;
                        }
                        if !chunk.is_empty() {
                            return Ok(Read::Chunk(chunk));
                        }
                        if self.done {
                            // An empty last frame (h2 servers often end a stream so).
                            return Ok(Read::End);
                        }
                    }
                }
            }
        }
    }

    /// Reads the whole body (for promptgate's own calls, such as embeddings), up to `limit`
    /// bytes, and returns the connection to the pool.
    pub async fn read_body(mut self, upstream: &Upstream, limit: usize) -> pingora::Result<Bytes> {
        let mut body = bytes::BytesMut::new();
        while !self.done {
            match self.read(upstream.timeouts.idle).await? {
                Read::Chunk(chunk) if body.len() + chunk.len() > limit => {
                    return Error::e_explain(
                        ErrorType::InvalidHTTPHeader,
                        format!("response body over {limit} bytes"),
                    );
                }
                Read::Chunk(chunk) => body.extend_from_slice(&chunk),
                Read::End => break,
            }
        }
        release(upstream, self);
        Ok(body.freeze())
    }
}

/// A failed read of a response body, as the Pingora error kind [`errors::broke_off`] words.
fn body_error(e: hyper::Error) -> Box<Error> {
    let kind = if e.is_timeout() {
        ErrorType::ReadTimedout
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() || cut_off(&e) {
        ErrorType::ConnectionClosed
    } else if h2_reason(&e).is_some() {
        ErrorType::H2Error
    } else {
        ErrorType::ReadError
    };
    Error::because(kind, "reading the response body", e)
}

/// The first error of type `T` in `e`'s chain of sources, if any.
fn cause<T: std::error::Error + 'static>(e: &hyper::Error) -> Option<&T> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        source = err.source();
    }
    None
}

/// The kind of the I/O error behind `e`'s, if any.
fn io_kind(e: &hyper::Error) -> Option<std::io::ErrorKind> {
    cause::<std::io::Error>(e).map(std::io::Error::kind)
}

/// Whether `e` comes from the connection ending or being reset under it (a body cut short of
/// its length or last chunk, a reset, a broken pipe).
fn cut_off(e: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        io_kind(e),
        Some(
            ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
        )
    )
}

/// The h2 error code behind `e`, if it is an h2 stream or connection error.
fn h2_reason(e: &hyper::Error) -> Option<h2::Reason> {
    cause::<h2::Error>(e).and_then(h2::Error::reason)
}

/// Sends a request to `upstream` and reads the response head: [`send_once`] on a connection
/// to its [`peer`], again on another while a try is [`Unsent::resend`] (at most
/// [`STALE_CONNECTION_ATTEMPTS`] tries). `head` makes each try's request head: the connection
/// keeps the head it sends, so one try takes one head, and the common single try copies none.
pub async fn send(
    upstream: &Upstream,
    mut head: impl FnMut() -> Result<RequestHead, ProxyError>,
    body: &Bytes,
    h1: bool,
    slot: &mut Slot,
) -> Result<UpstreamResponse, ProxyError> {
    let mut peer = peer(upstream, h1).await?;
    let mut tries = 0;
    loop {
        tries += 1;
        match send_once(upstream, peer, head()?, body, slot).await {
            Ok(response) => return Ok(response),
            Err(u) if u.resend && tries < STALE_CONNECTION_ATTEMPTS => peer = u.peer,
            Err(u) => return Err(u.error),
        }
    }
}

/// The address (resolved) and connection options of `upstream`; `h1` offers only HTTP/1.1,
/// as a WebSocket upgrade needs.
pub async fn peer(upstream: &Upstream, h1: bool) -> Result<Peer, ProxyError> {
    upstream.peer(h1).await.map_err(|e| ProxyError::Resolve {
        upstream: Named::of(upstream),
        detail: e.reason,
    })
}

/// A try at sending that got no response head.
pub struct Unsent {
    pub error: ProxyError,
    /// The peer tried, for the next try.
    pub peer: Peer,
    /// The same request may go at once on another connection: a pooled one was found dead, or
    /// the h2 server refused the stream before processing it (GOAWAY, `REFUSED_STREAM`,
    /// `HTTP_1_1_REQUIRED`). The body is buffered, so sending it again is safe.
    pub resend: bool,
}

/// Sends `req` and `body` on one connection to `peer` (pooled, else new) and reads the response
/// head, over HTTP/1.1 or h2 (whichever the connection speaks), within `timeouts.first_byte`.
/// On HTTP/1.1 hyper writes head and body together (one `writev`); informational heads
/// (`100 Continue`, `103 Early Hints`) are skipped.
pub async fn send_once(
    upstream: &Upstream,
    peer: Peer,
    req: RequestHead,
    body: &Bytes,
    slot: &mut Slot,
) -> Result<UpstreamResponse, Unsent> {
    let opened = upstream
        .pool
        .session(&peer, slot.connection(), upstream.queue_timeout)
        .await;
    let (mut conn, reused) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let error = match e {
                Opening::Busy => ProxyError::Busy {
                    upstream: Named::of(upstream),
                    limit: "pool.max_connections",
                },
                Opening::Failed(e) => ProxyError::from_upstream(upstream, &e),
            };
            return Err(Unsent {
                error,
                peer,
                resend: false,
            });
        }
    };
    let h2 = conn.is_h2();
    let request = match request(req, body, h2, upstream.tls) {
        Ok(request) => request,
        Err(e) => {
            // Never sent: an HTTP/1.1 connection is still good.
            upstream
                .pool
                .release(conn, &peer, upstream.timeouts.pool_idle);
            return Err(Unsent {
                error: ProxyError::from_upstream(upstream, &e),
                peer,
                resend: false,
            });
        }
    };
    let progress = request.body().progress();
    let exchange = async {
        match &mut conn {
            Conn::H1(sender) => Some(sender.send_request(request).await),
            Conn::H2(sender, _) => {
                // An h2 body waits for the server's flow-control window, not for the socket
                // (whose write timeout is `routing::pool`'s): one that stops moving for
                // `timeouts.write` is a stalled write.
                tokio::select! {
                    sent = sender.send_request(request) => Some(sent),
                    () = stalled(&progress, upstream.timeouts.write) => None,
                }
            }
        }
    };
    let failed = match tokio::time::timeout(upstream.timeouts.first_byte, exchange).await {
        Ok(Some(Ok(response))) => {
            let (head, body) = response.into_parts();
            // h2: an answer before the whole body was taken (RFC 9113 §8.1 lets a server
            // answer early and then stop the stream) is relayed, but never stored.
            let answered_early = h2 && !progress.all_taken();
            return Ok(UpstreamResponse {
                head,
                done: body.is_end_stream(),
                body,
                conn: Some(conn),
                peer,
                answered_early,
            });
        }
        Ok(Some(Err(e))) => send_error(e),
        // The stream is reset, or the connection closed, with `conn`.
        Ok(None) => Error::explain(ErrorType::WriteTimedout, "writing the request (timeout)"),
        Err(_) if !progress.all_taken() => {
            Error::explain(ErrorType::WriteTimedout, "writing the request (timeout)")
        }
        Err(_) => Error::explain(ErrorType::ReadTimedout, "waiting for the answer (timeout)"),
    };
    let resend = resendable(&failed, reused, h2);
    if resend {
        if failed.etype() == &ErrorType::H2Downgrade {
            upstream.pool.prefer_h1();
        }
        log::debug!(
            "{} connection to {} could not take the request ({}); trying another",
            if reused { "pooled" } else { "new" },
            upstream.name,
            failed.etype().as_str()
        );
    }
    Err(Unsent {
        error: ProxyError::from_upstream(upstream, &failed),
        peer,
        resend,
    })
}

/// Returns once `progress` has not moved for `write` while part of the body is still to go;
/// never once the whole body was taken.
async fn stalled(progress: &Progress, write: Duration) {
    loop {
        if progress.all_taken() {
            return std::future::pending().await;
        }
        let before = progress.pieces();
        tokio::time::sleep(write).await;
        if progress.pieces() == before && !progress.all_taken() {
            return;
        }
    }
}

/// A failed send (before the response head), as the Pingora error kind
/// [`ProxyError::from_upstream`] classifies; an h2 stream the server turned down before
/// processing it is marked retryable.
fn send_error(e: hyper::Error) -> Box<Error> {
    if let Some(reason) = h2_reason(&e) {
        let (kind, retry) = match reason {
            h2::Reason::HTTP_1_1_REQUIRED => (ErrorType::H2Downgrade, true),
            h2::Reason::REFUSED_STREAM => (ErrorType::H2Error, true),
            // GOAWAY with NO_ERROR: the server is closing the connection gracefully.
            h2::Reason::NO_ERROR => (ErrorType::H2Error, true),
            _ => (ErrorType::H2Error, false),
        };
        let mut error = Error::because(kind, "h2 stream", e);
        error.retry = RetryType::Decided(retry);
        return error;
    }
    let kind = if io_kind(&e) == Some(std::io::ErrorKind::TimedOut) {
        // The socket's write timeout (`timeouts.write`, see `routing::pool`).
        ErrorType::WriteTimedout
    } else if e.is_timeout() {
        ErrorType::ReadTimedout
    } else if e.is_parse() {
        // hyper could not read the response head.
        return Error::because(ErrorType::InvalidHTTPHeader, errors::RESPONSE_HEAD, e);
    } else if e.is_canceled() || e.is_incomplete_message() || e.is_closed() || cut_off(&e) {
        ErrorType::ConnectionClosed
    } else if e.is_body_write_aborted() {
        ErrorType::WriteError
    } else {
        ErrorType::ReadError
    };
    Error::because(kind, "sending the request", e)
}

/// Whether a request that failed before its response head may be sent again on another
/// connection: an idle pooled connection the upstream had closed, or (h2) a stream the
/// server turned down before processing it.
fn resendable(e: &Error, reused: bool, h2: bool) -> bool {
    let stale = reused
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::WriteError | ErrorType::ReadError
        );
    if stale {
        return true;
    }
    h2 && match e.retry {
        RetryType::Decided(retry) => retry,
        RetryType::ReusedOnly => reused,
    }
}

/// The request as hyper sends it: `req`'s head (in h2 form on an h2 connection) and `body`.
fn request(
    req: RequestHead,
    body: &Bytes,
    h2: bool,
    tls: bool,
) -> pingora::Result<http::Request<Outgoing>> {
    let mut head = if h2 { h2_request(req, tls)? } else { req };
    head.version = if h2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    Ok(http::Request::from_parts(
        head,
        Outgoing::new(body.clone(), h2),
    ))
}

/// The h2 form of an upstream request: the target in absolute form (`:scheme` and
/// `:authority` from the `Host` header), no `Host` header (some h2 servers refuse one).
fn h2_request(mut h2: RequestHead, tls: bool) -> pingora::Result<RequestHead> {
    let Some(host) = h2.headers.remove(header::HOST) else {
        return Error::e_explain(ErrorType::InvalidHTTPHeader, "no Host for :authority");
    };
    let path = h2.uri.path_and_query().map_or("/", |p| p.as_str());
    h2.uri = http::Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(host.as_bytes())
        .path_and_query(path)
        .build()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "h2 request target", e))?;
    Ok(h2)
}

/// The client's response head: the upstream's status and end-to-end headers, taken out of
/// `upstream` (its headers are left empty). Without a `Content-Length`, an HTTP/1 client gets
/// chunked encoding, so each chunk is flushed as it comes.
///
/// The upstream's header map is kept and its hop-by-hop fields removed in place, where copying
/// every other field into a new map cost ≈ 450 instructions a field. A removal moves the map's
/// last field into the gap, so fields of different names may reach the client in another
/// order than the upstream sent them, which changes nothing (RFC 9110 §5.3); lines of one name
/// keep theirs.
pub fn client_header(
    upstream: &mut ResponseHead,
    session: &Session,
) -> pingora::Result<ResponseHead> {
    let mut resp = heads::response(upstream.status, 0)?;
    resp.headers = std::mem::take(&mut upstream.headers);
    remove_hop_by_hop(&mut resp.headers);
    let bodyless = session.req_header().method == http::Method::HEAD
        || matches!(upstream.status.as_u16(), 204 | 304);
    if !bodyless && !resp.headers.contains_key(header::CONTENT_LENGTH) && !session.is_http2() {
        heads::insert(
            &mut resp.headers,
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        )?;
    }
    Ok(resp)
}

/// Removes `headers`' hop-by-hop fields, and those its `Connection` nominates, in place: what
/// is left is the end-to-end fields, in their order but for a removal moving the map's last
/// field into the gap ([`client_header`]).
pub(super) fn remove_hop_by_hop(headers: &mut http::HeaderMap) {
    let nominated = Nominated::of(headers);
    // The usual message: no hop-by-hop field but `Connection` (`keep-alive` from an HTTP/1.1
    // upstream): one look at each name, one removal, no list of names.
    if !headers
        .keys()
        .any(|name| name != header::CONNECTION && is_hop_by_hop(name, &nominated))
    {
        headers.remove(header::CONNECTION);
        return;
    }
    let gone: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name, &nominated))
        .cloned()
        .collect();
    for name in gone {
        headers.remove(&name);
    }
}

/// Writes the response to the client as it arrives, then returns the connection to the pool.
///
/// With a `record` plan, a storable response is recorded on the way and stored as soon as the
/// upstream has delivered its last byte — before that byte is passed on, so a client that
/// repeats the request as soon as it has the answer finds it cached.
///
/// Every body chunk also goes to `reader`, which reads the provider's token counts and judges
/// whether the answer is whole (only a [`crate::providers::Verdict::Complete`] one is stored).
///
/// An error here happens after the head went out: the caller must cut the client connection
/// so a truncated body can never look complete (and nothing is stored).
pub async fn relay(
    upstream: &Upstream,
    mut response: UpstreamResponse,
    session: &mut Session,
    stamp: Stamp<'_>,
    record: Option<RecordPlan>,
    reader: &mut ResponseReader,
) -> pingora::Result<()> {
    let head = relayed_head(&mut response, session, stamp)?;
    let mut recorder = recorder(record, &response, session, &head, reader);
    session.write_response_header(head).await?;
    let idle = upstream.timeouts.idle;
    while !response.done {
        match response.read(idle).await {
            Ok(Read::Chunk(chunk)) => {
                reader.observe(&chunk);
                if let Some(r) = recorder.as_mut() {
                    r.push(&chunk);
                }
                if response.done {
                    reader.finish();
                    if let Some(r) = recorder.take() {
                        r.commit(reader.verdict());
                    }
                    // Back to the pool before the client has its last byte, so a request
                    // it sends right after finds the connection free instead of opening
                    // another.
                    release(upstream, response);
                    session.write_response_body(Some(chunk), false).await?;
                    return session.write_response_body(None, true).await;
                }
                if let Err(e) = session.write_response_body(Some(chunk), false).await {
                    // The client left. Finish reading only if the answer is still worth
                    // storing (or others wait on it); otherwise drop the upstream mid-response.
                    if let Some(r) = recorder.filter(|r| r.worth_finishing(reader.verdict())) {
                        finish_without_client(upstream, response, r, reader).await;
                    }
                    return Err(e);
                }
            }
            Ok(Read::End) => break,
            Err(e) => return Err(broken_off(upstream, e)),
        }
    }
    reader.finish();
    if let Some(r) = recorder.take() {
        r.commit(reader.verdict());
    }
    release(upstream, response);
    session.write_response_body(None, true).await
}

/// The error of a response broken off after its head: marked as the upstream's doing, with
/// what the log line says about it (see `serve::answer`).
fn broken_off(upstream: &Upstream, e: Box<Error>) -> Box<Error> {
    let why = errors::broke_off(upstream, &e);
    e.more_context(why).into_up()
}

/// The client's head for an upstream response, with what `stamp` adds (`x-promptgate-cache`,
/// `x-ratelimit-*`: per exchange, so never stored with an entry). Takes the upstream's headers
/// out of `response` ([`client_header`]).
fn relayed_head(
    response: &mut UpstreamResponse,
    session: &Session,
    stamp: Stamp<'_>,
) -> pingora::Result<ResponseHead> {
    let mut head = client_header(&mut response.head, session)?;
    respond::add(&mut head, stamp)?;
    Ok(head)
}

/// Starts recording the response whose client head is `head`, if the plan and the response
/// allow it (a `HEAD` request's empty body, or an answer given before the whole request was
/// sent, is never stored); `reader` then reads JSON bodies
/// as large as the route may store, to judge them. Otherwise nothing is stored, so nothing
/// needs judging: `reader` reads only the usage.
fn recorder(
    record: Option<RecordPlan>,
    response: &UpstreamResponse,
    session: &Session,
    head: &ResponseHead,
    reader: &mut ResponseReader,
) -> Option<Recorder> {
    let recorder = record
        .filter(|_| session.req_header().method != http::Method::HEAD && !response.answered_early)
        .and_then(|plan| Recorder::start(plan, head, &session.req_header().headers));
    match &recorder {
        Some(r) => reader.read_json_up_to(r.limit()),
        None => reader.usage_only(),
    }
    recorder
}

/// After the client left before the response head, reads the answer into the cache (and to
/// followers) when it is storable; otherwise drops the upstream connection. Writes nothing
/// to the client.
pub async fn finish_detached(
    upstream: &Upstream,
    mut response: UpstreamResponse,
    session: &Session,
    stamp: Stamp<'_>,
    record: Option<RecordPlan>,
    reader: &mut ResponseReader,
) {
    let recorder = relayed_head(&mut response, session, stamp)
        .ok()
        .and_then(|head| recorder(record, &response, session, &head, reader));
    // Without a recorder the response is dropped: an unfinished HTTP/1.1 connection is
    // closed, an h2 stream reset.
    if let Some(r) = recorder {
        finish_without_client(upstream, response, r, reader).await;
    }
}

/// Returns a finished upstream connection to the pool. An unfinished one is dropped with the
/// response: an HTTP/1.1 connection is closed, an h2 stream reset (its connection goes on
/// carrying the others), and the stream's place given back either way.
fn release(upstream: &Upstream, mut response: UpstreamResponse) {
    if let Some(conn) = response.conn.take() {
        if response.done || conn.is_h2() {
            upstream
                .pool
                .release(conn, &response.peer, upstream.timeouts.pool_idle);
        }
    }
}

/// Reads the rest of the upstream response into `recorder` after the client left, and stores
/// it if it completes.
async fn finish_without_client(
    upstream: &Upstream,
    mut response: UpstreamResponse,
    mut recorder: Recorder,
    reader: &mut ResponseReader,
) {
    while !response.done {
        match response.read(upstream.timeouts.idle).await {
            Ok(Read::Chunk(chunk)) => {
                reader.observe(&chunk);
                recorder.push(&chunk);
            }
            Ok(Read::End) => break,
            Err(_) => return,
        }
    }
    reader.finish();
    recorder.commit(reader.verdict());
    release(upstream, response);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::TimeoutsSpec;
    use crate::config::secret::Secret;

    fn upstream() -> Upstream {
        let mut key = HeaderValue::from_static("Bearer injected");
        key.set_sensitive(true);
        let spec = crate::config::spec::Upstream {
            tls: true,
            host: "api.openai.com".into(),
            port: 443,
            base_path: "/base".into(),
            host_header: HeaderValue::from_static("api.openai.com"),
            headers: vec![(header::AUTHORIZATION, Secret::new(key))],
            timeouts: TimeoutsSpec::default(),
            health: Default::default(),
            max_concurrent: 0,
            queue_timeout: std::time::Duration::from_secs(5),
            pool: Default::default(),
            http_version: Default::default(),
            ca: None,
            sni: None,
            provider: crate::config::schema::Provider::Openai,
        };
        Upstream::new("openai".into(), &spec)
    }

    #[test]
    fn rewrites_host_framing_and_credentials() {
        let mut client = RequestHeader::build("POST", b"/openai/v1/chat?x=1", None).unwrap();
        for (n, v) in [
            ("host", "127.0.0.1:8080"),
            ("authorization", "Bearer client"),
            ("content-length", "999"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            // a second line of the same list (RFC 9110 §5.3) nominates too
            ("connection", "X-Second-Hop"),
            ("x-second-hop", "2"),
            ("keep-alive", "timeout=5"),
            ("expect", "100-continue"),
            ("accept-encoding", "gzip"),
            ("x-custom", "kept"),
            ("transfer-encoding", "chunked"),
        ] {
            client.append_header(n, v).unwrap();
        }
        let req = build_request(&client, &upstream(), "/v1/chat?x=1", 12).unwrap();
        assert_eq!(req.uri.to_string(), "/base/v1/chat?x=1");
        let h = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("host").as_deref(), Some("api.openai.com"));
        assert_eq!(h("authorization").as_deref(), Some("Bearer injected"));
        assert_eq!(req.headers.get_all("authorization").iter().count(), 1);
        assert_eq!(h("content-length").as_deref(), Some("12"));
        assert_eq!(h("accept-encoding").as_deref(), Some("identity"));
        assert_eq!(h("x-custom").as_deref(), Some("kept"));
        for gone in [
            "connection",
            "x-secret-hop",
            "x-second-hop",
            "keep-alive",
            "expect",
            "transfer-encoding",
        ] {
            assert!(h(gone).is_none(), "{gone} was forwarded");
        }
    }

    /// Every kind of `Connection` a response can carry, against what stays: the usual
    /// `keep-alive` alone (the shortcut), fixed hop-by-hop names, names nominated on one or on
    /// several lines, a value that is not text.
    #[test]
    fn remove_hop_by_hop_keeps_exactly_the_end_to_end_fields() {
        /// The fields an upstream sent (name, value), and the names that must be left.
        type Case<'a> = (&'a [(&'a str, &'a [u8])], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[("connection", b"keep-alive"), ("x-a", b"1")], &["x-a"]),
            (
                &[("x-a", b"1"), ("content-type", b"x")],
                &["x-a", "content-type"],
            ),
            (
                &[
                    ("connection", b"close"),
                    ("keep-alive", b"timeout=5"),
                    ("te", b"trailers"),
                    ("x-a", b"1"),
                ],
                &["x-a"],
            ),
            (
                &[
                    ("connection", b"x-b, Keep-Alive"),
                    ("x-b", b"2"),
                    ("x-a", b"1"),
                ],
                &["x-a"],
            ),
            (
                &[
                    ("connection", b"keep-alive"),
                    ("connection", b"X-B"),
                    ("x-b", b"2"),
                    ("x-c", b"3"),
                    ("connection", b"x-c ,, close"),
                ],
                &[],
            ),
            (&[("connection", b"x-\xff"), ("x-a", b"1")], &["x-a"]),
            (
                &[
                    ("proxy-authenticate", b"Basic"),
                    ("trailer", b"x"),
                    ("upgrade", b"h2c"),
                ],
                &[],
            ),
        ];
        for (fields, kept) in cases {
            let mut headers = http::HeaderMap::new();
            for (name, value) in *fields {
                headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            remove_hop_by_hop(&mut headers);
            let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
            left.sort_unstable();
            let mut want = kept.to_vec();
            want.sort_unstable();
            assert_eq!(left, want, "{fields:?}");
        }
    }

    #[test]
    fn get_without_body_has_no_content_length() {
        let client = RequestHeader::build("GET", b"/v1/models", None).unwrap();
        let req = build_request(&client, &upstream(), "/v1/models", 0).unwrap();
        assert!(req.headers.get("content-length").is_none());
    }
}
