//! WebSocket (and any other HTTP/1.1 `Upgrade`) tunnels: the upgrade request goes to the routed
//! upstream with its `Upgrade` and `Connection` headers; after the upstream's `101 Switching
//! Protocols` the bytes are copied both ways, untouched, until either side closes. Never cached.

use super::ctx::Stamp;
use super::exchange::UpstreamResponse;
use super::heads::{self, ResponseHead};
use super::session::Session;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pingora::{ErrorType, OrErr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes copied through a tunnel, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tunnelled {
    /// From the client to the upstream.
    pub sent: u64,
    /// From the upstream to the client.
    pub received: u64,
}

/// The `Upgrade` header of an HTTP/1.1 request to switch to WebSocket, if this is one.
/// HTTP/2 has no `Upgrade`. Other upgrades (`h2c`, …) are served as ordinary requests: a
/// server may ignore `Upgrade`, and their `Upgrade` header is not forwarded.
pub fn websocket(session: &Session) -> Option<&http::HeaderValue> {
    if session.as_http1().is_none() || !session.is_upgrade_req() {
        return None;
    }
    session
        .req_header()
        .headers
        .get(header::UPGRADE)
        .filter(|v| {
            v.to_str().unwrap_or("").split(',').any(|p| {
                p.trim()
                    .split('/')
                    .next()
                    .is_some_and(|name| name.eq_ignore_ascii_case("websocket"))
            })
        })
}

/// The client's `101` head: the upstream's end-to-end headers, plus the `Upgrade` it agreed to
/// and `Connection: upgrade` (hop-by-hop headers, which the relay of ordinary responses drops).
fn switching_head(upstream: &ResponseHead) -> pingora::Result<ResponseHead> {
    let mut head = heads::response(101, 0)?;
    head.headers = upstream.headers.clone();
    super::exchange::remove_hop_by_hop(&mut head.headers);
    if let Some(upgrade) = upstream.headers.get(header::UPGRADE) {
        heads::insert(&mut head.headers, header::UPGRADE, upgrade.clone())?;
    }
    let upgrade = HeaderValue::from_static("upgrade");
    heads::insert(&mut head.headers, header::CONNECTION, upgrade)?;
    Ok(head)
}

/// Sends the client the upstream's `101`, then copies bytes both ways until one side closes
/// or fails. `counted` is kept up to date as bytes pass, so it is right however this ends.
/// `extra` headers (a rate-limited route's `x-ratelimit-*`) are added to the `101`.
///
/// The client's side stays in Pingora's hands (after a `101` its body reader and writer
/// switch to "until close", and bytes it had read past the head are handed out first); the
/// upstream's is hyper's upgraded connection (with any bytes read past the `101`).
pub async fn run(
    session: &mut Session,
    response: UpstreamResponse,
    counted: &mut Tunnelled,
    stamp: Stamp<'_>,
) -> pingora::Result<()> {
    let mut head = switching_head(response.header())?;
    super::respond::add(&mut head, stamp)?;
    let mut upstream = TokioIo::new(response.upgraded().await?);
    // A tunnel may sit idle for as long as its two ends like (WebSocket pings are theirs):
    // the client's read timeout (Pingora's 60 s default) may not cut it; the upstream's side
    // has none.
    session.set_read_timeout(None);
    session.write_response_header(head).await?;
    let result = copy_both_ways(session, &mut upstream, counted).await;
    // Not returned to the pool: the connection now speaks another protocol.
    let _ = upstream.shutdown().await;
    result
}

async fn copy_both_ways(
    session: &mut Session,
    upstream: &mut TokioIo<Upgraded>,
    counted: &mut Tunnelled,
) -> pingora::Result<()> {
    let mut buf = BytesMut::with_capacity(16 << 10);
    loop {
        // Both reads are cancel-safe: the one not chosen has consumed nothing.
        tokio::select! {
            from_client = session.read_request_body() => match from_client? {
                Some(bytes) => {
                    counted.sent += bytes.len() as u64;
                    upstream
                        .write_all(&bytes)
                        .await
                        .or_err(ErrorType::WriteError, "writing to the upstream")?;
                }
                // The client closed: the upstream connection is closed after us.
                None => return Ok(()),
            },
            from_upstream = upstream.read_buf(&mut buf) => {
                match from_upstream.or_err(ErrorType::ReadError, "reading from the upstream")? {
                    0 => return session.write_response_body(None::<Bytes>, true).await,
                    n => {
                        counted.received += n as u64;
                        let bytes = buf.split().freeze();
                        session.write_response_body(Some(bytes), false).await?;
                        buf.reserve(16 << 10);
                    }
                }
            }
        }
    }
}
