//! The heads promptgate writes, to clients and to upstreams: `http`'s own heads, headers set
//! straight in their `HeaderMap`, made Pingora heads (with no header-case map) only as they
//! are written.
//!
//! Why: Pingora's `insert_header`/`append_header` turn a `HeaderName` back into bytes (its
//! case-preserving name) and parse it again into a `HeaderName`, about 450 instructions a
//! header (callgrind, issue 22: a pass-through 75,490 → 71,757 instructions with the upstream
//! target parsed in place too, a hit 52,994 → 50,200). Without a case map
//! Pingora writes the `HeaderMap` as it is, standard names title-cased
//! (`Content-Length`), others as their lowercase `HeaderName` — the same bytes the case map
//! held for the names promptgate sets, so the wire does not change. (Pingora lets no one
//! change a case-mapped head's map directly, as it writes the case map's names beside the
//! map's values.)

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, IntoHeaderName, MaxSizeReached};
use http::uri::{PathAndQuery, Uri};
use pingora::{Error, ErrorType, OrErr};

/// A response head promptgate writes (`http`'s; Pingora's `ResponseHeader` wraps it, with no
/// case map, only when it is written).
pub type ResponseHead = http::response::Parts;

/// A request head promptgate sends upstream (hyper sends `http`'s as it is).
pub type RequestHead = http::request::Parts;

/// A response head with status `status` and room for `headers` headers. Errors
/// (`InvalidHTTPHeader`) when `status` is not a status code.
pub fn response(
    status: impl TryInto<http::StatusCode>,
    headers: usize,
) -> pingora::Result<ResponseHead> {
    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status = status
        .try_into()
        .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid status")?;
    head.headers = HeaderMap::with_capacity(headers);
    Ok(head)
}

/// A request head for `method` and `target` (origin form: path and query; a fragment is
/// dropped, an empty target is `/`) with room for `headers` headers. Errors
/// (`InvalidHTTPHeader`) when `target` is not a valid path and query.
///
/// `target` is parsed in place (`http`'s own check, the one Pingora's builder runs on a copy).
pub fn request(
    method: http::Method,
    target: String,
    headers: usize,
) -> pingora::Result<RequestHead> {
    let target = if target.is_empty() {
        // As Pingora reads an empty target (a request line needs one).
        PathAndQuery::from_static("/")
    } else {
        PathAndQuery::from_maybe_shared(Bytes::from(target))
            .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid request target")?
    };
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = method;
    head.uri = Uri::from(target);
    head.headers = HeaderMap::with_capacity(headers);
    Ok(head)
}

/// Sets `name` to `value`, replacing any value it had.
///
/// Errors (`InvalidHTTPHeader`) only past `http`'s limit of 32,768 names in one map.
pub fn insert(
    headers: &mut HeaderMap,
    name: impl IntoHeaderName,
    value: HeaderValue,
) -> pingora::Result<()> {
    headers.try_insert(name, value).map(drop).or_else(too_many)
}

/// Adds `value` under `name`, after any value it has. Errors as [`insert`].
pub fn append(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: HeaderValue,
) -> pingora::Result<()> {
    headers.try_append(name, value).map(drop).or_else(too_many)
}

fn too_many(e: MaxSizeReached) -> pingora::Result<()> {
    Error::e_because(ErrorType::InvalidHTTPHeader, "too many headers", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;

    /// What promptgate sets directly is written as Pingora's `insert_header` on a case map
    /// wrote it: title-cased standard names, lowercase others, in insertion order.
    #[test]
    fn a_head_set_directly_is_written_as_with_a_case_map() {
        let value = HeaderValue::from_static;
        let mut direct = response(200, 4).unwrap();
        insert(
            &mut direct.headers,
            http::header::CONTENT_TYPE,
            value("application/json"),
        )
        .unwrap();
        append(
            &mut direct.headers,
            HeaderName::from_static("x-request-id"),
            value("a"),
        )
        .unwrap();
        append(
            &mut direct.headers,
            HeaderName::from_static("x-request-id"),
            value("b"),
        )
        .unwrap();
        insert(&mut direct.headers, "x-promptgate-cache", value("MISS")).unwrap();
        insert(
            &mut direct.headers,
            http::header::CONTENT_LENGTH,
            HeaderValue::from(2usize),
        )
        .unwrap();

        let mut cased = ResponseHeader::build(200, None).unwrap();
        cased
            .insert_header(http::header::CONTENT_TYPE, "application/json")
            .unwrap();
        cased
            .append_header(HeaderName::from_static("x-request-id"), "a")
            .unwrap();
        cased
            .append_header(HeaderName::from_static("x-request-id"), "b")
            .unwrap();
        cased.insert_header("x-promptgate-cache", "MISS").unwrap();
        cased
            .insert_header(http::header::CONTENT_LENGTH, 2)
            .unwrap();

        let direct = ResponseHeader::from(direct);
        let wire = |h: &ResponseHeader| {
            let mut buf = bytes::BytesMut::new();
            h.header_to_h1_wire(&mut buf);
            String::from_utf8(buf.to_vec()).unwrap()
        };
        assert_eq!(wire(&direct), wire(&cased));
        assert_eq!(
            wire(&direct),
            "Content-Type: application/json\r\nx-request-id: a\r\nx-request-id: b\r\n\
             x-promptgate-cache: MISS\r\nContent-Length: 2\r\n"
        );
    }

    /// A target reads as Pingora's builder reads it (the check promptgate used before): the
    /// same request line, the same targets refused.
    #[test]
    fn a_request_target_reads_as_pingora_reads_it() {
        let targets = [
            "/v1/chat/completions",
            "/v1/chat?x=1&y=%20",
            "/a#fragment",
            "/a?q#f",
            "",
            "?only",
            "/with space",
            "/quote\"",
            "/ü",
            "/tab\t",
            "/%2e%2e/x",
        ];
        for target in targets {
            // What goes on the request line.
            let line = |uri: &Uri| uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            let ours = request(http::Method::POST, target.to_string(), 0).map(|h| line(&h.uri));
            let pingora =
                pingora::http::RequestHeader::build_no_case("POST", target.as_bytes(), None)
                    .map(|h| line(&h.uri));
            match (ours, pingora) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{target:?}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{target:?}: ours {a:?}, Pingora's {b:?}"),
            }
        }
    }

    #[test]
    fn past_the_map_limit_is_an_error_not_a_panic() {
        let mut head = response(200, 0).unwrap();
        // Distinct names: more values under one name are not entries of their own.
        let full = (0..1 << 16).find_map(|i| {
            let name = HeaderName::try_from(format!("x-{i}")).unwrap();
            append(&mut head.headers, name, HeaderValue::from_static("1")).err()
        });
        assert_eq!(full.unwrap().etype(), &ErrorType::InvalidHTTPHeader);
        let full = insert(
            &mut head.headers,
            "x-one-more",
            HeaderValue::from_static("1"),
        );
        assert_eq!(full.unwrap_err().etype(), &ErrorType::InvalidHTTPHeader);
    }
}
