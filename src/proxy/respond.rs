//! Responses promptgate writes itself: JSON errors and cache hits.

use super::ctx::Stamp;
use super::errors::ProxyError;
use super::heads::{self, ResponseHead};
use super::session::Session;
use crate::cache::entry::Entry;
use crate::cache::CacheStatus;
use crate::config::schema::Replay;
use http::{HeaderName, HeaderValue};
use std::time::Duration;

/// Tells the client where the answer came from: `HIT`, `MISS` or `BYPASS`.
pub const CACHE_STATUS_HEADER: HeaderName = HeaderName::from_static("x-promptgate-cache");

/// Sets what `stamp` says every response of the request carries on `head`, replacing any
/// value of the same name (an upstream's own `x-ratelimit-*` say nothing about promptgate's
/// limits). Every response head promptgate writes goes through here.
pub fn add(head: &mut ResponseHead, stamp: Stamp<'_>) -> pingora::Result<()> {
    for (name, value) in stamp.limit {
        heads::insert(&mut head.headers, name, value.clone())?;
    }
    if let Some(status) = stamp.cache {
        let status = HeaderValue::from_static(status.as_str());
        heads::insert(&mut head.headers, CACHE_STATUS_HEADER, status)?;
    }
    Ok(())
}

/// Writes `{"error":{"type":…,"message":…}}` with the error's status, and what `stamp` adds
/// (`x-promptgate-cache` on a cached route, a rate-limited route's headers).
pub async fn error(session: &mut Session, e: &ProxyError, stamp: Stamp<'_>) -> pingora::Result<()> {
    let body = e.body();
    let mut head = heads::response(e.status(), 4 + stamp.limit.len())?;
    add(&mut head, stamp)?;
    let json = HeaderValue::from_static("application/json");
    heads::insert(&mut head.headers, http::header::CONTENT_TYPE, json)?;
    heads::insert(
        &mut head.headers,
        http::header::CONTENT_LENGTH,
        body.len().into(),
    )?;
    session.write_response_header(head).await?;
    session.write_response_body(Some(body), true).await
}

/// The head of a response served without an upstream call (a hit, or a coalesced request):
/// the stored status and headers, `x-promptgate-cache: HIT`, and framing — `Content-Length`
/// for a plain body, chunked for a stream (so a replayed stream is still a stream). What
/// `stamp` adds (a rate-limited route's headers) replaces stored headers of the same name.
pub fn replay_head(
    session: &Session,
    status: u16,
    headers: &[(http::HeaderName, http::HeaderValue)],
    body_len: Option<usize>,
    stamp: Stamp<'_>,
) -> pingora::Result<ResponseHead> {
    let mut head = heads::response(status, headers.len() + stamp.limit.len() + 3)?;
    for (name, value) in headers {
        heads::append(&mut head.headers, name.clone(), value.clone())?;
    }
    // A replay is a hit, whatever the request expected.
    add(
        &mut head,
        Stamp {
            cache: Some(CacheStatus::Hit),
            ..stamp
        },
    )?;
    match body_len {
        Some(len) => heads::insert(&mut head.headers, http::header::CONTENT_LENGTH, len.into())?,
        None if !session.is_http2() => heads::insert(
            &mut head.headers,
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        )?,
        None => {}
    }
    Ok(head)
}

/// What every hit on `entry` answers with before its request's own headers: the stored status
/// and headers, `x-promptgate-cache: HIT`, and a plain body's `Content-Length` (what
/// [`replay_head`] gives without a stamp, less a stream's framing, which depends on the
/// connection).
fn hit_head(entry: &Entry) -> pingora::Result<ResponseHead> {
    let mut head = heads::response(entry.status, entry.headers.len() + 5)?;
    for (name, value) in &entry.headers {
        heads::append(&mut head.headers, name.clone(), value.clone())?;
    }
    let hit = HeaderValue::from_static(CacheStatus::Hit.as_str());
    heads::insert(&mut head.headers, CACHE_STATUS_HEADER, hit)?;
    if !entry.is_stream() {
        let len = entry.body.len().into();
        heads::insert(&mut head.headers, http::header::CONTENT_LENGTH, len)?;
    }
    Ok(head)
}

/// Writes a stored response with its `Age`: a plain body in one write (shared, not copied);
/// a stream at once, or at its recorded pace with `Replay::Original`.
pub async fn cached(
    session: &mut Session,
    entry: &Entry,
    replay: Replay,
    stamp: Stamp<'_>,
) -> pingora::Result<()> {
    // Built once per entry (its stored headers, `x-promptgate-cache: HIT`, its length) and
    // copied for each hit: only what differs per request is added to the copy.
    let mut head = match entry.head.get() {
        Some(head) => head.clone(),
        None => {
            let head = hit_head(entry)?;
            entry.head.keep(head.clone());
            head
        }
    };
    for (name, value) in stamp.limit {
        heads::insert(&mut head.headers, name, value.clone())?;
    }
    if entry.is_stream() && !session.is_http2() {
        let chunked = HeaderValue::from_static("chunked");
        heads::insert(&mut head.headers, http::header::TRANSFER_ENCODING, chunked)?;
    }
    heads::insert(&mut head.headers, http::header::AGE, entry.age().into())?;
    session.write_response_header(head).await?;
    if session.req_header().method == http::Method::HEAD {
        return session.write_response_body(None, true).await;
    }
    if entry.is_stream() && replay == Replay::Original {
        let start = tokio::time::Instant::now();
        let mut from = 0;
        for mark in &entry.chunks {
            tokio::time::sleep_until(start + Duration::from_millis(mark.at_ms.into())).await;
            let end = mark.end as usize;
            session
                .write_response_body(Some(entry.body.slice(from..end)), false)
                .await?;
            from = end;
        }
        return session.write_response_body(None, true).await;
    }
    session
        .write_response_body(Some(entry.body.clone()), true)
        .await
}
