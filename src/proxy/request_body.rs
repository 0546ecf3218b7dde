//! Reading the client's request body: whole, bounded by `limits.max_body_bytes`.
//!
//! promptgate must see the whole body to route on its model and (later) hash it, and must be
//! able to send it again on a retry. So it is read once, here, into one `Bytes`, and every
//! upstream attempt sends that. This is also why promptgate does not use Pingora's stock
//! forwarding path, which loses a body over 64 KiB once it has been read.

use super::errors::ProxyError;
use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use pingora::proxy::Session;

/// How much of an oversized body is read and thrown away so the client can read its 413
/// (clients write the whole body before reading the answer). Past this the connection is cut.
const DRAIN_CAP: usize = 256 * 1024 * 1024;

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

/// Reads the whole body, or fails with 413 past `limit` (after draining what the client sends,
/// so the connection stays usable and the client sees the error rather than a reset).
pub async fn read(session: &mut Session, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = declared_length(session.req_header());
    let continue_expected = expects_continue(session.req_header());
    if declared.is_some_and(|len| len > limit) {
        if !continue_expected {
            drain(session).await;
        } else {
            // The client waits for our go-ahead; without it, it sends nothing and reads the 413.
            session.set_keepalive(None);
        }
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
            drain(session).await;
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

/// Reads and discards the rest of the body, up to [`DRAIN_CAP`]; if that is not the end,
/// marks the connection to close.
async fn drain(session: &mut Session) {
    let mut drained = 0usize;
    while drained <= DRAIN_CAP {
        match session.read_request_body().await {
            Ok(Some(chunk)) => drained += chunk.len(),
            Ok(None) => return,
            Err(_) => break,
        }
    }
    session.set_keepalive(None);
}
