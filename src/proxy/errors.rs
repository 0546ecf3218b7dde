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
    /// The client closed its connection before the response started: nothing is sent; logged
    /// as 499 (nginx's convention).
    #[error("the client closed its connection before the answer")]
    ClientClosed,
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
            ProxyError::ClientClosed => 499,
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
            ProxyError::ClientClosed => "client_closed",
            ProxyError::Exhausted { last, .. } => last.kind(),
        }
    }

    /// `{"error":{"type":…,"message":…}}`, the shape the provider SDKs already parse.
    pub fn body(&self) -> Bytes {
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
    fn timeouts_map_to_504() {
        let e = PingoraError::new(ErrorType::ReadTimedout);
        let p = ProxyError::from_upstream("openai", &e);
        assert_eq!((p.status(), p.kind()), (504, "upstream_timeout"));
        let e = PingoraError::new(ErrorType::ConnectRefused);
        assert_eq!(ProxyError::from_upstream("openai", &e).status(), 502);
    }
}
