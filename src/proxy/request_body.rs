//! Reading the client's request body: whole, bounded by `limits.max_body_bytes`.
//!
//! promptgate must see the whole body to route on its model and (later) hash it, and must be
//! able to send it again on a retry. So it is read once, here, into one `Bytes`, and every
//! upstream attempt sends that. This is also why promptgate does not use Pingora's stock
//! forwarding path, which loses a body over 64 KiB once it has been read.

use super::errors::ProxyError;
use super::session::Session;
use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use std::time::Duration;

/// After a 413, what the client still sends is read and thrown away for at most this long and
/// this many bytes (nginx's lingering close), so that closing the connection does not reset it
/// before the client has read the answer. Then the connection closes.
const LINGER_TIME: Duration = Duration::from_secs(3);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

fn declared_length(req: &RequestHeader) -> Option<usize> {
    req.headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads the whole body, or fails with 413 past `limit`: at once when the declared length is
/// over it, without reading the body (a client that sent `Expect: 100-continue` gets no
/// go-ahead, so it sends nothing). The connection then closes after the answer: call
/// [`linger`] once the 413 is written.
pub async fn read(session: &mut Session, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = declared_length(session.req_header());
    let continue_expected = expects_continue(session.req_header());
    if declared.is_some_and(|len| len > limit) {
        session.set_keepalive(None);
        return Err(ProxyError::BodyTooLarge { limit });
    }
    if continue_expected {
        session
            .write_continue_response()
            .await
            .map_err(|e| ProxyError::ClientBody(e.etype().as_str().to_string()))?;
    }
    // One chunk (the common case for small prompts) is used as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        let chunk = match session.read_request_body().await {
            Ok(chunk) => chunk,
            Err(e) => {
                // Bad framing (a malformed chunk size, say): where this body ends is unknown,
                // so nothing after it on this connection may be read as a request.
                session.set_keepalive(None);
                return Err(ProxyError::ClientBody(e.etype().as_str().to_string()));
            }
        };
        let Some(chunk) = chunk else { break };
        let so_far = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if so_far + chunk.len() > limit {
            session.set_keepalive(None);
            return Err(ProxyError::BodyTooLarge { limit });
        }
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            None => buf.extend_from_slice(&chunk),
            Some(f) => {
                buf.reserve(declared.unwrap_or(0).max(f.len() + chunk.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Once a 413 has been written: reads and discards what the client still sends, for at most
/// [`LINGER_TIME`] and [`LINGER_BYTES`], or until it stops or closes. A client that writes its
/// whole body before reading then finds the answer instead of a reset connection; one that
/// sends gigabytes costs a few MiB. The connection closes after this.
pub async fn linger(session: &mut Session) {
    let drain = async {
        let mut drained = 0usize;
        while drained < LINGER_BYTES {
            match session.read_request_body().await {
                Ok(Some(chunk)) => drained += chunk.len(),
                Ok(None) | Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    session.set_keepalive(None);
}
