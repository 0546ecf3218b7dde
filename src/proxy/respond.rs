//! Responses promptgate writes itself: JSON errors and cache hits.

use super::errors::ProxyError;
use crate::cache::entry::Entry;
use crate::cache::CacheStatus;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Tells the client where the answer came from: `HIT`, `MISS` or `BYPASS`.
pub const CACHE_STATUS_HEADER: &str = "x-promptgate-cache";

/// Writes `{"error":{"type":…,"message":…}}` with the error's status.
pub async fn error(session: &mut Session, e: &ProxyError) -> pingora::Result<()> {
    let body = e.body();
    let mut head = ResponseHeader::build(e.status(), Some(3))?;
    head.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    head.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    session.write_response_header(Box::new(head), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Writes a stored response: its status, kept headers and body (shared, not copied), plus
/// `Age` and `x-promptgate-cache: HIT`.
pub async fn cached(session: &mut Session, entry: &Entry) -> pingora::Result<()> {
    let mut head = ResponseHeader::build(entry.status, Some(entry.headers.len() + 3))?;
    for (name, value) in &entry.headers {
        head.append_header(name.clone(), value.clone())?;
    }
    head.insert_header(http::header::CONTENT_LENGTH, entry.body.len())?;
    head.insert_header(http::header::AGE, entry.age())?;
    head.insert_header(CACHE_STATUS_HEADER, CacheStatus::Hit.as_str())?;
    session.write_response_header(Box::new(head), false).await?;
    let body = (session.req_header().method != http::Method::HEAD).then(|| entry.body.clone());
    session.write_response_body(body, true).await
}
