//! The upstream exchange: build the upstream request, send it with its buffered body,
//! and relay the response to the client chunk by chunk as it arrives.

use super::ctx::Stamp;
use super::errors::{self, Named, ProxyError};
use super::respond;
use super::session::Session;
use crate::body::ParsedBody;
use crate::cache::record::{RecordPlan, Recorder};
use crate::config::schema::Provider;
use crate::headers;
use crate::providers::anthropic::{self, CacheMinimums};
use crate::providers::ResponseReader;
use crate::routing::pool::Opening;
use crate::routing::upstream::{Slot, Upstream};
use crate::routing::Target;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession as UpstreamSession;
use pingora::protocols::http::v1::client::{http_req_header_to_wire, HttpSession as Http1Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, RetryType};

/// Tries on pooled connections that turn out to be closed by the upstream while idle.
pub const STALE_CONNECTION_ATTEMPTS: usize = 3;

/// The header names a message's `Connection` header nominates as hop-by-hop besides the fixed
/// ones (RFC 9110 §7.6.1), read once per message instead of once per header. Usually none:
/// `keep-alive` and `close`, the common values, name no other header.
pub(super) struct Nominated<'a>(Vec<&'a str>);

impl<'a> Nominated<'a> {
    pub(super) fn of(headers: &'a http::HeaderMap) -> Nominated<'a> {
        let value = headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok());
        Nominated(
            value
                .into_iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|t| {
                    !t.is_empty()
                        && !t.eq_ignore_ascii_case("keep-alive")
                        && !t.eq_ignore_ascii_case("close")
                })
                .collect(),
        )
    }

    fn contains(&self, name: &HeaderName) -> bool {
        self.0.iter().any(|t| t.eq_ignore_ascii_case(name.as_str()))
    }
}

/// True for hop-by-hop headers ([`headers::is_hop_by_hop`]), including any the message's
/// `Connection` header nominates.
pub(super) fn is_hop_by_hop(name: &HeaderName, nominated: &Nominated) -> bool {
    headers::is_hop_by_hop(name.as_str()) || nominated.contains(name)
}

/// The request to send upstream: the client's method and headers, minus hop-by-hop and
/// framing headers, plus `Host`, `Content-Length` and the upstream's injected headers.
///
/// Built without Pingora's header-case map: the names are `http` names either way, which
/// Pingora writes in the same (title) case with or without the map, so the bytes on the wire
/// are the same without a second map to fill and copy.
pub fn build_request(
    client: &RequestHeader,
    upstream: &Upstream,
    path_and_query: &str,
    body_len: usize,
) -> Result<RequestHeader, ProxyError> {
    let invalid = |_| ProxyError::ClientBody("request target is not valid".into());
    let path = upstream.path_for(path_and_query);
    let mut req = RequestHeader::build_no_case(
        client.method.clone(),
        path.as_bytes(),
        Some(client.headers.len() + 4),
    )
    .map_err(invalid)?;
    let nominated = Nominated::of(&client.headers);
    for (name, value) in client.headers.iter() {
        if headers::is_replaced_upstream(name.as_str())
            || upstream.headers.iter().any(|(n, _)| n == name)
            || nominated.contains(name)
        {
            continue;
        }
        req.append_header(name.clone(), value.clone())
            .map_err(invalid)?;
    }
    let set = |req: &mut RequestHeader, name: HeaderName, value: HeaderValue| {
        req.insert_header(name, value).map_err(invalid)
    };
    set(&mut req, header::HOST, upstream.host_header.clone())?;
    // Cached and replayed bodies must be plain bytes, so ask for no compression.
    set(
        &mut req,
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    )?;
    let has_body = body_len > 0
        || client.headers.contains_key(header::CONTENT_LENGTH)
        || client.headers.contains_key(header::TRANSFER_ENCODING);
    if has_body {
        set(
            &mut req,
            header::CONTENT_LENGTH,
            HeaderValue::from(body_len),
        )?;
    }
    for (name, value) in &upstream.headers {
        set(&mut req, name.clone(), value.expose().clone())?;
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
    session: UpstreamSession,
    peer: HttpPeer,
    /// The upstream answered before it had the whole request body (see `exchange_head`): an
    /// answer to a request it did not read whole is relayed, never stored.
    answered_early: bool,
}

impl UpstreamResponse {
    pub fn header(&self) -> &ResponseHeader {
        self.session
            .response_header()
            .expect("send() returns only after the response head was read")
    }

    /// The upstream session, for a tunnel after a `101` (it is never returned to the pool).
    pub fn into_session(self) -> UpstreamSession {
        self.session
    }

    /// A reader for this response's body (its `Content-Type` and `Content-Encoding`).
    pub fn reader(&self) -> ResponseReader {
        ResponseReader::for_headers(&self.header().headers)
    }

    /// Reads the whole body (for promptgate's own calls, such as embeddings), up to `limit`
    /// bytes, and returns the connection to the pool.
    pub async fn read_body(mut self, upstream: &Upstream, limit: usize) -> pingora::Result<Bytes> {
        let mut body = bytes::BytesMut::new();
        loop {
            match self.session.read_response_body().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > limit => {
                    abandon(upstream, self).await;
                    return Error::e_explain(
                        ErrorType::InvalidHTTPHeader,
                        format!("response body over {limit} bytes"),
                    );
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    abandon(upstream, self).await;
                    return Err(e);
                }
            }
        }
        release(upstream, self).await;
        Ok(body.freeze())
    }
}

/// Sends a request to `upstream` and reads the response head: [`send_once`] on a connection
/// to its [`peer`], again on another while a try is [`Unsent::resend`] (at most
/// [`STALE_CONNECTION_ATTEMPTS`] tries). `head` makes each try's request head: the connection
/// keeps the head it sends, so one try takes one head, and the common single try copies none.
pub async fn send(
    upstream: &Upstream,
    mut head: impl FnMut() -> Result<RequestHeader, ProxyError>,
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
pub async fn peer(upstream: &Upstream, h1: bool) -> Result<HttpPeer, ProxyError> {
    upstream.peer(h1).await.map_err(|e| ProxyError::Resolve {
        upstream: Named::of(upstream),
        detail: e.reason,
    })
}

/// A try at sending that got no response head.
pub struct Unsent {
    pub error: ProxyError,
    /// The peer tried, for the next try.
    pub peer: HttpPeer,
    /// The same request may go at once on another connection: a pooled one was found dead, or
    /// the h2 server refused the stream before processing it (GOAWAY, `REFUSED_STREAM`,
    /// `HTTP_1_1_REQUIRED`). The body is buffered, so sending it again is safe.
    pub resend: bool,
}

/// Sends `req` and `body` on one connection to `peer` (pooled, else new) and reads the response
/// head, over HTTP/1.1 or h2 (whichever the connection speaks). `req` is handed to the
/// connection whole (Pingora keeps the head it sent), not copied.
pub async fn send_once(
    upstream: &Upstream,
    peer: HttpPeer,
    req: RequestHeader,
    body: &Bytes,
    slot: &mut Slot,
) -> Result<UpstreamResponse, Unsent> {
    let opened = upstream
        .pool
        .session(&peer, slot.connection(), upstream.queue_timeout)
        .await;
    let (mut session, reused) = match opened {
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
    let h2 = matches!(session, UpstreamSession::H2(_));
    let head = if h2 {
        match h2_request(req, upstream.tls) {
            Ok(head) => head,
            Err(e) => {
                return Err(Unsent {
                    error: ProxyError::from_upstream(upstream, &e),
                    peer,
                    resend: false,
                })
            }
        }
    } else {
        req
    };
    let written = match session {
        UpstreamSession::H1(h1) if one_write(&head) => {
            // Boxed: inline, the session and the write's state would enlarge every request's
            // send future, which is copied whole where it is boxed (BENCHMARKS.md).
            let write = write_whole(h1, &head, body, &peer, upstream.timeouts.write);
            match Box::pin(write).await {
                Ok(h1) => session = UpstreamSession::H1(h1),
                Err(e) => {
                    // The connection is dropped (closed) with the session that held it.
                    return Err(Unsent {
                        error: ProxyError::from_upstream(upstream, &e),
                        resend: resendable(&e, reused, false),
                        peer,
                    });
                }
            }
            true
        }
        other => {
            session = other;
            false
        }
    };
    // On the session that reads the answer (a whole write made a new one).
    session.set_read_timeout(Some(upstream.timeouts.first_byte));
    session.set_write_timeout(Some(upstream.timeouts.write));
    match exchange_head(&mut session, (!written).then_some(head), body).await {
        Ok(answered_early) => {
            // From here on the wait is for the next body chunk.
            session.set_read_timeout(Some(upstream.timeouts.idle));
            Ok(UpstreamResponse {
                session,
                peer,
                answered_early,
            })
        }
        Err(e) => {
            let resend = resendable(&e, reused, h2);
            if resend {
                if e.etype() == &ErrorType::H2Downgrade {
                    upstream.pool.prefer_h1(&peer);
                }
                log::debug!(
                    "{} connection to {} could not take the request ({}); trying another",
                    if reused { "pooled" } else { "new" },
                    upstream.name,
                    e.etype().as_str()
                );
            }
            Err(Unsent {
                error: ProxyError::from_upstream(upstream, &e),
                peer,
                resend,
            })
        }
    }
}

/// Whether a request that failed before its response head may be sent again on another
/// connection: an idle pooled connection the upstream had closed, or (h2) a stream the
/// server turned down before processing it, which Pingora marks as retryable.
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

/// The h2 form of an upstream request: the target in absolute form (`:scheme` and
/// `:authority` from the `Host` header), no `Host` header (some h2 servers refuse one).
fn h2_request(mut h2: RequestHeader, tls: bool) -> pingora::Result<RequestHeader> {
    let Some(host) = h2.remove_header(&header::HOST) else {
        return Error::e_explain(ErrorType::InvalidHTTPHeader, "no Host for :authority");
    };
    let path = h2.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = http::Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(host.as_bytes())
        .path_and_query(path)
        .build()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "h2 request target", e))?;
    h2.set_uri(uri);
    Ok(h2)
}

/// Whether a request goes out head and body in one write ([`write_whole`]) on an HTTP/1.1
/// connection: not a `HEAD` and not an upgrade, whose answers Pingora reads right (bodiless, a
/// `101`) only when it wrote the head itself.
fn one_write(req: &RequestHeader) -> bool {
    req.method != http::Method::HEAD && !req.headers.contains_key(header::UPGRADE)
}

/// Writes `req` and `body` on `h1`'s connection in one write — one `sendto` while both fit its
/// write buffer, else one `writev` — and gives back a Pingora session on that connection to
/// read the answer with. Pingora's own `write_request_header` flushes the head by itself, so
/// head and body would leave in two writes (and, with `TCP_NODELAY`, two packets).
async fn write_whole(
    h1: Http1Session,
    req: &RequestHeader,
    body: &[u8],
    peer: &HttpPeer,
    timeout: std::time::Duration,
) -> pingora::Result<Http1Session> {
    let Some(head) = http_req_header_to_wire(req) else {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "request-line contains forbidden delimiter bytes",
        );
    };
    let mut stream = h1.into_inner();
    match tokio::time::timeout(timeout, write_both(&mut stream, &head, body)).await {
        Ok(Ok(())) => Ok(Http1Session::new_with_options(stream, peer)),
        Ok(Err(e)) => Error::e_because(ErrorType::WriteError, "while writing the request", e),
        Err(_) => Error::e_explain(ErrorType::WriteTimedout, "writing the request (timeout)"),
    }
}

/// `head` then `body`, vectored (a stream that writes one buffer at a time writes two).
async fn write_both(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut written = 0;
    while written < head.len() {
        let bufs = [
            std::io::IoSlice::new(&head[written..]),
            std::io::IoSlice::new(body),
        ];
        match stream.write_vectored(&bufs).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => written += n,
        }
    }
    stream.write_all(&body[written - head.len()..]).await?;
    stream.flush().await
}

/// Sends the request unless `req` is `None` (already written whole), then reads the head of
/// the answer. True when that answer came before the whole body could be sent.
async fn exchange_head(
    session: &mut UpstreamSession,
    req: Option<RequestHeader>,
    body: &Bytes,
) -> pingora::Result<bool> {
    if let Some(req) = req {
        session.write_request_header(Box::new(req)).await?;
        if let Err(e) = send_body(session, body).await {
            // An h2 server may answer before it has read the whole request and then stop the
            // stream with NO_ERROR (RFC 9113 §8.1), so that sending the rest fails: its answer,
            // already received, is the answer. Without one, the failed send is the error (and
            // a send that timed out is one at once: a server not reading is not answering).
            let answered = matches!(session, UpstreamSession::H2(_))
                && e.etype() != &ErrorType::WriteTimedout
                && session.read_response_header().await.is_ok();
            return if answered { Ok(true) } else { Err(e) };
        }
    }
    loop {
        session.read_response_header().await?;
        let status = session.response_header().map(|h| h.status.as_u16());
        // Skip informational heads (100 Continue, 103 Early Hints); 101 is not expected here.
        // (h2 skips them itself: its head is read once.)
        let informational = matches!(status, Some(100..=199)) && status != Some(101);
        if !informational || matches!(session, UpstreamSession::H2(_)) {
            return Ok(false);
        }
    }
}

/// Sends the request body (if any) and ends the request.
async fn send_body(session: &mut UpstreamSession, body: &Bytes) -> pingora::Result<()> {
    if !body.is_empty() {
        session.write_request_body(body.clone(), true).await?;
    }
    session.finish_request_body().await
}

/// True when the upstream has sent its whole response. For h2, a stream that ended with an
/// error (a reset) is an error here, not a complete answer.
fn response_complete(session: &mut UpstreamSession) -> pingora::Result<bool> {
    match session {
        UpstreamSession::H2(h2) => h2.check_response_end_or_error(),
        other => Ok(other.response_done()),
    }
}

/// The client's response head: the upstream's status and end-to-end headers. Without a
/// `Content-Length`, an HTTP/1 client gets chunked encoding, so each chunk is flushed as it comes.
pub fn client_header(
    upstream: &ResponseHeader,
    session: &Session,
) -> pingora::Result<ResponseHeader> {
    // No header-case map, for the reason given at `build_request`: the same bytes.
    let mut resp =
        ResponseHeader::build_no_case(upstream.status, Some(upstream.headers.len() + 2))?;
    let nominated = Nominated::of(&upstream.headers);
    for (name, value) in upstream.headers.iter() {
        if !is_hop_by_hop(name, &nominated) {
            resp.append_header(name.clone(), value.clone())?;
        }
    }
    let bodyless = session.req_header().method == http::Method::HEAD
        || matches!(upstream.status.as_u16(), 204 | 304);
    if !bodyless && !resp.headers.contains_key(header::CONTENT_LENGTH) && !session.is_http2() {
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(resp)
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
    let head = relayed_head(&response, session, stamp)?;
    let mut recorder = recorder(record, &response, session, &head, reader);
    session.write_response_header(Box::new(head)).await?;
    loop {
        match response.session.read_response_body().await {
            Ok(Some(chunk)) => {
                reader.observe(&chunk);
                if let Some(r) = recorder.as_mut() {
                    r.push(&chunk);
                }
                match response_complete(&mut response.session) {
                    Ok(true) => {
                        reader.finish();
                        if let Some(r) = recorder.take() {
                            r.commit(reader.verdict());
                        }
                        // Back to the pool before the client has its last byte, so a request
                        // it sends right after finds the connection free instead of opening
                        // another.
                        release(upstream, response).await;
                        session.write_response_body(Some(chunk), false).await?;
                        return session.write_response_body(None, true).await;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        abandon(upstream, response).await;
                        return Err(broken_off(upstream, e));
                    }
                }
                if let Err(e) = session.write_response_body(Some(chunk), false).await {
                    // The client left. Finish reading only if the answer is still worth
                    // storing (or others wait on it); otherwise drop the upstream mid-response.
                    match recorder.filter(|r| r.worth_finishing(reader.verdict())) {
                        Some(r) => finish_without_client(upstream, response, r, reader).await,
                        None => abandon(upstream, response).await,
                    }
                    return Err(e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                abandon(upstream, response).await;
                return Err(broken_off(upstream, e));
            }
        }
    }
    reader.finish();
    if let Some(r) = recorder.take() {
        r.commit(reader.verdict());
    }
    release(upstream, response).await;
    session.write_response_body(None, true).await
}

/// The error of a response broken off after its head: marked as the upstream's doing, with
/// what the log line says about it (see `serve::answer`).
fn broken_off(upstream: &Upstream, e: Box<Error>) -> Box<Error> {
    let why = errors::broke_off(upstream, &e);
    e.more_context(why).into_up()
}

/// The client's head for an upstream response, with what `stamp` adds (`x-promptgate-cache`,
/// `x-ratelimit-*`: per exchange, so never stored with an entry).
fn relayed_head(
    response: &UpstreamResponse,
    session: &Session,
    stamp: Stamp<'_>,
) -> pingora::Result<ResponseHeader> {
    let mut head = client_header(response.header(), session)?;
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
    head: &ResponseHeader,
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
    response: UpstreamResponse,
    session: &Session,
    stamp: Stamp<'_>,
    record: Option<RecordPlan>,
    reader: &mut ResponseReader,
) {
    let recorder = relayed_head(&response, session, stamp)
        .ok()
        .and_then(|head| recorder(record, &response, session, &head, reader));
    match recorder {
        Some(r) => finish_without_client(upstream, response, r, reader).await,
        None => abandon(upstream, response).await,
    }
}

/// Returns a finished upstream connection to the pool (an unfinished HTTP/1.1 one is dropped,
/// closing it; an h2 stream always goes back, freeing its place on the shared connection).
async fn release(upstream: &Upstream, mut response: UpstreamResponse) {
    if response.session.response_done() || matches!(response.session, UpstreamSession::H2(_)) {
        upstream
            .pool
            .release(
                response.session,
                &response.peer,
                upstream.timeouts.pool_idle,
            )
            .await;
    }
}

/// Gives up an unfinished response: closes an HTTP/1.1 connection, resets an h2 stream (its
/// connection goes on carrying the others).
async fn abandon(upstream: &Upstream, mut response: UpstreamResponse) {
    response.session.shutdown().await;
    release(upstream, response).await;
}

/// Reads the rest of the upstream response into `recorder` after the client left, and stores
/// it if it completes.
async fn finish_without_client(
    upstream: &Upstream,
    mut response: UpstreamResponse,
    mut recorder: Recorder,
    reader: &mut ResponseReader,
) {
    loop {
        match response.session.read_response_body().await {
            Ok(Some(chunk)) => {
                reader.observe(&chunk);
                recorder.push(&chunk);
            }
            Ok(None) => break,
            Err(_) => {
                abandon(upstream, response).await;
                return;
            }
        }
    }
    reader.finish();
    recorder.commit(reader.verdict());
    release(upstream, response).await;
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
            "keep-alive",
            "expect",
            "transfer-encoding",
        ] {
            assert!(h(gone).is_none(), "{gone} was forwarded");
        }
    }

    /// A connection that takes at most `limit` bytes per write, vectored or not.
    struct Partial {
        out: Vec<u8>,
        limit: usize,
        writes: usize,
    }

    impl tokio::io::AsyncWrite for Partial {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.out.extend_from_slice(&buf[..n]);
            self.writes += 1;
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.limit - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
            }
            self.writes += 1;
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn head_and_body_go_out_in_one_write_and_whole_after_partial_ones() {
        let head = b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n";
        let body = b"0123456789";
        let whole = [&head[..], &body[..]].concat();
        let mut conn = Partial {
            out: Vec::new(),
            limit: usize::MAX,
            writes: 0,
        };
        write_both(&mut conn, head, body).await.unwrap();
        assert_eq!((conn.out.as_slice(), conn.writes), (whole.as_slice(), 1));
        for limit in [1, 7, head.len(), head.len() + 3] {
            let mut conn = Partial {
                out: Vec::new(),
                limit,
                writes: 0,
            };
            write_both(&mut conn, head, body).await.unwrap();
            assert_eq!(conn.out, whole, "at most {limit} bytes per write");
        }
        // no body: the head alone
        let mut conn = Partial {
            out: Vec::new(),
            limit: 5,
            writes: 0,
        };
        write_both(&mut conn, head, b"").await.unwrap();
        assert_eq!(conn.out, head);
    }

    #[test]
    fn head_and_upgrade_requests_are_written_by_pingora() {
        let post = RequestHeader::build_no_case("POST", b"/v1/chat", None).unwrap();
        assert!(one_write(&post));
        let head = RequestHeader::build_no_case("HEAD", b"/v1/models", None).unwrap();
        assert!(!one_write(&head));
        let mut upgrade = RequestHeader::build_no_case("GET", b"/ws", None).unwrap();
        upgrade.insert_header("upgrade", "websocket").unwrap();
        assert!(!one_write(&upgrade));
    }

    #[test]
    fn get_without_body_has_no_content_length() {
        let client = RequestHeader::build("GET", b"/v1/models", None).unwrap();
        let req = build_request(&client, &upstream(), "/v1/models", 0).unwrap();
        assert!(req.headers.get("content-length").is_none());
    }
}
