//! The checks every request passes before it is routed: unambiguous framing and a normalised
//! path. A request that fails them is answered 400 and its connection closed.

use super::errors::ProxyError;
use super::session::Session;
use super::{request_framing, request_path};

/// The normalised request path to route, cache and forward on, or a 400.
///
/// The connection is closed on refusal: the body of such a request is left unread, and its
/// bytes must never be taken for the next request on the connection.
pub(super) fn vet(session: &mut Session) -> Result<String, ProxyError> {
    let verdict = check(session);
    if verdict.is_err() {
        session.set_keepalive(None);
    }
    verdict
}

fn check(session: &Session) -> Result<String, ProxyError> {
    // HTTP/2 frames bodies itself (and the h2 codec refuses Transfer-Encoding); only HTTP/1
    // has a raw head whose framing headers can disagree.
    if let Some(h1) = session.as_http1() {
        let verdict = request_framing::check_parsed(&session.req_header().headers)
            .unwrap_or_else(|| request_framing::check(&h1.get_headers_raw_bytes()));
        verdict.map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    }
    request_path::normalise(session.req_header().uri.path())
        .map_err(|e| ProxyError::BadRequest(e.to_string()))
}

/// How Pingora's own error log lines name a request: method, path and host — never the query
/// string, where some providers (Gemini's `?key=`) take the API key. Pingora's default prints
/// the whole request target.
pub(super) fn summary(session: &Session) -> String {
    let req = session.req_header();
    let host = req
        .headers
        .get(http::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    format!(
        "{} {}, Host: {}",
        req.method,
        req.uri.path(),
        host.as_deref().unwrap_or("-")
    )
}
