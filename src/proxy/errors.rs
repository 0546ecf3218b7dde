//! Every request-time failure: its HTTP status, its JSON error body and a short label.
//!
//! Messages name routes, upstreams and limits, never credentials or query strings.

use crate::json_error;
use bytes::Bytes;
use pingora::{Error as PingoraError, ErrorType};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("request body is larger than the limit of {limit} bytes (limits.max_body_bytes)")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    ClientBody(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("cannot resolve upstream {upstream}: {detail}")]
    Resolve { upstream: String, detail: String },
    #[error("cannot connect to upstream {upstream}: {detail}")]
    Connect { upstream: String, detail: String },
    #[error("upstream {upstream} timed out ({phase} timeout)")]
    Timeout {
        upstream: String,
        phase: &'static str,
    },
    #[error("upstream {upstream} closed the connection before answering")]
    Reset { upstream: String },
    #[error("upstream {upstream} failed: {detail}")]
    Upstream { upstream: String, detail: String },
    #[error("upstream {upstream} is at its max_concurrent limit")]
    Busy { upstream: String },
    #[error("{priority}")]
    Priority {
        priority: crate::routing::balance::PriorityError,
    },
    #[error("route {route} does not allow WebSocket upgrades (its websocket option is false)")]
    WebSocketRefused { route: String },
    /// The client closed its connection before the response started: nothing is sent; logged
    /// as 499 (nginx's convention).
    #[error("the client closed its connection before the answer")]
    ClientClosed,
    /// Over a `rate_limit` of the route.
    #[error(
        "route {route} is over its {} limit of {}{}; retry in {} s",
        kind.as_str(),
        value,
        if *per_credential { " for this credential" } else { "" },
        crate::limits::headers::retry_after_secs(retry_after.as_micros() as i64)
    )]
    RateLimited {
        route: String,
        kind: crate::limits::gcra::Kind,
        /// The configured limit (requests, tokens or US dollars).
        value: f64,
        per_credential: bool,
        retry_after: std::time::Duration,
    },
    /// The rate-limit counters could not be read and the route says `on_store_error: deny`.
    #[error("route {route}: the rate-limit store is unavailable (on_store_error: deny)")]
    LimitStoreDown { route: String },
    /// Every attempt failed; `last` says how the final one did, `tried` lists them all.
    #[error("{last} (route {route} tried: {tried})")]
    Exhausted {
        last: Box<ProxyError>,
        route: String,
        tried: String,
    },
}

impl ProxyError {
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::NoRoute { .. } => 404,
            ProxyError::BodyTooLarge { .. } => 413,
            ProxyError::ClientBody(_) | ProxyError::BadRequest(_) => 400,
            ProxyError::Timeout { .. } => 504,
            ProxyError::Resolve { .. }
            | ProxyError::Connect { .. }
            | ProxyError::Reset { .. }
            | ProxyError::Upstream { .. } => 502,
            ProxyError::Busy { .. } => 503,
            ProxyError::Priority { .. } => 400,
            ProxyError::WebSocketRefused { .. } => 403,
            ProxyError::ClientClosed => 499,
            ProxyError::RateLimited { .. } => 429,
            ProxyError::LimitStoreDown { .. } => 503,
            ProxyError::Exhausted { last, .. } => last.status(),
        }
    }

    /// The `error.type` of the JSON body; also the label used in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::ClientBody(_) | ProxyError::BadRequest(_) => "bad_request",
            ProxyError::Resolve { .. } => "upstream_unresolvable",
            ProxyError::Connect { .. } => "upstream_unreachable",
            ProxyError::Timeout { .. } => "upstream_timeout",
            ProxyError::Reset { .. } | ProxyError::Upstream { .. } => "upstream_error",
            ProxyError::Busy { .. } => "upstream_busy",
            ProxyError::Priority { .. } => "bad_priority",
            ProxyError::WebSocketRefused { .. } => "websocket_refused",
            ProxyError::ClientClosed => "client_closed",
            ProxyError::RateLimited { .. } => "rate_limit_exceeded",
            ProxyError::LimitStoreDown { .. } => "rate_limit_unavailable",
            ProxyError::Exhausted { last, .. } => last.kind(),
        }
    }

    /// `{"error":{"type":…,"message":…}}`, the shape the provider SDKs already parse. A rate
    /// limit adds OpenAI's `code` and the `limit` that refused (e.g. `requests_per_minute`).
    pub fn body(&self) -> Bytes {
        if let ProxyError::RateLimited { kind, .. } = self {
            let mut v = json_error::value(self.kind(), &self.to_string());
            v["error"]["code"] = self.kind().into();
            v["error"]["limit"] = kind.as_str().into();
            return Bytes::from(v.to_string());
        }
        Bytes::from(json_error::body(self.kind(), &self.to_string()))
    }

    /// Classifies a Pingora error from talking to `upstream` before its response head (a read
    /// timeout then is the `first_byte` timeout).
    pub fn from_upstream(upstream: &str, e: &PingoraError) -> ProxyError {
        let upstream = upstream.to_string();
        let timeout = |phase| ProxyError::Timeout {
            upstream: upstream.clone(),
            phase,
        };
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => timeout("connect"),
            ErrorType::ReadTimedout => timeout("first_byte"),
            ErrorType::WriteTimedout => timeout("write"),
            ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError
            | ErrorType::SocketError => ProxyError::Connect {
                detail: e.etype().as_str().to_string(),
                upstream,
            },
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                ProxyError::Reset { upstream }
            }
            _ => ProxyError::Upstream {
                detail: e.etype().as_str().to_string(),
                upstream,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_type_and_message() {
        let e = ProxyError::BodyTooLarge { limit: 10 };
        assert_eq!(e.status(), 413);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "request_too_large");
        assert!(v["error"]["message"].as_str().unwrap().contains("10 bytes"));
    }

    #[test]
    fn rate_limits_are_429_with_the_limit_named() {
        let e = ProxyError::RateLimited {
            route: "openai".into(),
            kind: crate::limits::gcra::Kind::Requests,
            value: 6.0,
            per_credential: true,
            retry_after: std::time::Duration::from_millis(9_500),
        };
        assert_eq!(e.status(), 429);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_exceeded");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["limit"], "requests_per_minute");
        assert_eq!(
            v["error"]["message"],
            "route openai is over its requests_per_minute limit of 6 for this credential; retry in 10 s"
        );
    }

    #[test]
    fn timeouts_map_to_504() {
        let e = PingoraError::new(ErrorType::ReadTimedout);
        let p = ProxyError::from_upstream("openai", &e);
        assert_eq!((p.status(), p.kind()), (504, "upstream_timeout"));
        let e = PingoraError::new(ErrorType::ConnectRefused);
        assert_eq!(ProxyError::from_upstream("openai", &e).status(), 502);
    }
}
