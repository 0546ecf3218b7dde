//! The server loop: accepts connections, serves requests one after another on each
//! (keep-alive), and writes every reply with the request's fault controls applied.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::dates::{http_date, unix_now};
use super::faults::{error_reply, forced_status, Controls, Encoding, Fault};
use super::http::{chunk, read_request, reason, LAST_CHUNK};
use super::providers;
use super::reply::{Body, Reply};
use super::websocket;
use super::{RecordedRequest, Shared};

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    conns.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // e.g. EMFILE: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// What to do with the connection after a response.
enum After {
    KeepAlive,
    Close,
    Reset,
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let Ok(Some((req, client_close))) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let hit = shared.record(req.clone());
        if websocket::is_upgrade(&req) {
            let _ = websocket::serve(&mut stream, &mut buf, &req).await;
            return;
        }
        match respond(&mut stream, &shared, &req, hit, client_close).await {
            Ok(After::KeepAlive) => {}
            Ok(After::Close) => {
                let _ = stream.shutdown().await;
                return;
            }
            Ok(After::Reset) => {
                // SO_LINGER 0: dropping the socket sends RST instead of FIN.
                let _ = stream.set_zero_linger();
                return;
            }
            Err(_) => return,
        }
    }
}

/// Answers one request. Faults act in this order: delay, reset, forced status, then while
/// writing: hold, chunk delay, truncation, close.
async fn respond(
    stream: &mut TcpStream,
    shared: &Shared,
    req: &RecordedRequest,
    hit: usize,
    client_close: bool,
) -> io::Result<After> {
    let ctl = Controls::from_request(req, shared);
    if !ctl.delay.is_zero() {
        // A client that gives up meanwhile is noticed at once, as a real provider would stop
        // generating for it.
        tokio::select! {
            () = tokio::time::sleep(ctl.delay) => {}
            () = peer_closed(stream) => {
                shared.record_abandoned();
                return Ok(After::Close);
            }
        }
    }
    if ctl.fault == Some(Fault::Reset) {
        return Ok(After::Reset);
    }
    let reply = match forced_status(req, shared) {
        Some(status) => error_reply(req, status),
        None => providers::answer(req, hit, ctl.events, ctl.outcome, &shared.providers),
    };
    let reply = match ctl.encoding {
        Some(encoding) => encode(reply, encoding),
        None => reply,
    };
    let truncate = ctl.fault == Some(Fault::Truncate);
    let close = client_close || ctl.fault == Some(Fault::Close);

    let mut head = response_head(&reply, hit, close);
    head.push_str(&caching_headers(req));
    match reply.body {
        Body::Full(body) => {
            if ctl.hold {
                shared.wait_release().await;
            }
            // Truncation advertises the full length but sends only half of the bytes.
            let sent = if truncate { body.len() / 2 } else { body.len() };
            let sent = if req.method == "HEAD" { 0 } else { sent };
            head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            let mut out = head.into_bytes();
            out.extend_from_slice(&body[..sent]);
            stream.write_all(&out).await?;
            stream.flush().await?;
        }
        Body::Stream(events) => {
            head.push_str("transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            let end = if truncate {
                (events.len() / 2).max(1)
            } else {
                events.len()
            };
            write_events(stream, shared, &ctl, &events[..end]).await?;
            if !truncate {
                stream.write_all(LAST_CHUNK).await?;
                stream.flush().await?;
                shared.completed_streams.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    Ok(if truncate || close {
        After::Close
    } else {
        After::KeepAlive
    })
}

/// The caching headers a request asks for: like a CORS-aware server, a request with `Origin`
/// gets `Vary: Origin` and its own `Access-Control-Allow-Origin` (one without gets neither);
/// `x-mock-vary` and `x-mock-cache-control` set those headers.
fn caching_headers(req: &RecordedRequest) -> String {
    let mut head = String::new();
    if let Some(origin) = req.header("origin") {
        head.push_str(&format!(
            "vary: Origin\r\naccess-control-allow-origin: {origin}\r\n"
        ));
    }
    if let Some(vary) = req.header("x-mock-vary") {
        head.push_str(&format!("vary: {vary}\r\n"));
    }
    if let Some(cc) = req.header("x-mock-cache-control") {
        head.push_str(&format!("cache-control: {cc}\r\n"));
    }
    head
}

/// The reply with its body encoded (`x-mock-encoding`): a stream is encoded whole and cut into
/// as many chunks as it had events.
fn encode(mut reply: Reply, encoding: Encoding) -> Reply {
    reply.body = match reply.body {
        Body::Full(body) => Body::Full(encoding.encode(&body)),
        Body::Stream(events) => {
            let encoded = Bytes::from(encoding.encode(&events.concat()));
            let size = encoded.len().div_ceil(events.len().max(1)).max(1);
            Body::Stream(
                (0..encoded.len())
                    .step_by(size)
                    .map(|at| encoded.slice(at..(at + size).min(encoded.len())))
                    .collect(),
            )
        }
    };
    reply
        .extra_headers
        .push(("content-encoding", encoding.name().to_owned()));
    reply
}

/// Resolves when the client closes the connection (or it breaks) before the answer; stays
/// pending if it sends anything instead (it should not, while waiting for an answer).
async fn peer_closed(stream: &mut TcpStream) {
    let mut probe = [0u8; 1];
    match stream.read(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Status line and headers, without the framing headers and the blank line that ends them.
fn response_head(reply: &Reply, hit: usize, close: bool) -> String {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\nx-mock-hit: {hit}\r\nx-request-id: req-{hit}\r\n\
         date: {}\r\nx-ratelimit-remaining-requests: 99\r\nserver: mock-upstream\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        http_date(unix_now()),
    );
    for (name, value) in &reply.extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head
}

/// One chunk per event, flushed each, paced by `x-mock-chunk-delay-ms` and held after the
/// first by `x-mock-hold`.
async fn write_events(
    stream: &mut TcpStream,
    shared: &Shared,
    ctl: &Controls,
    events: &[Bytes],
) -> io::Result<()> {
    for (i, event) in events.iter().enumerate() {
        if i > 0 && !ctl.chunk_delay.is_zero() {
            tokio::time::sleep(ctl.chunk_delay).await;
        }
        stream.write_all(&chunk(event)).await?;
        stream.flush().await?;
        if i == 0 && ctl.hold {
            shared.wait_release().await;
        }
    }
    Ok(())
}
