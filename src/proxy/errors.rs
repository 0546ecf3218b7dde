//! Every request-time failure: its HTTP status, its JSON error body and a short label.
//!
//! Messages name routes, upstreams (with their address) and limits, never credentials or query
//! strings. The same text is the client's `error.message` and the log line.

use crate::json_error;
use crate::routing::upstream::Upstream;
use bytes::Bytes;
use pingora::{Error as PingoraError, ErrorType};
use std::fmt;
use std::time::Duration;

/// The context of an upstream error whose response head hyper could not read (not HTTP, a bad
/// status line or header field, or over hyper's limits); the exchange sets it.
pub(crate) const RESPONSE_HEAD: &str = "reading the response head";

/// An upstream as messages name it: `openai (api.openai.com:443)`. The address is the
/// configured host and port, never the URL's userinfo, path or query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    /// `host:port`.
    pub address: String,
}

impl Named {
    pub fn of(upstream: &Upstream) -> Named {
        Named {
            name: upstream.name.clone(),
            address: format!("{}:{}", upstream.host, upstream.port),
        }
    }
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.address)
    }
}

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
    Resolve { upstream: Named, detail: String },
    #[error("cannot connect to upstream {upstream}: {detail}")]
    Connect { upstream: Named, detail: String },
    #[error("upstream {upstream} timed out after {} ({phase} timeout)", humantime::format_duration(*after))]
    Timeout {
        upstream: Named,
        /// Which timeout: `connect`, `first_byte` or `write`.
        phase: &'static str,
        /// Its configured length.
        after: Duration,
    },
    #[error("upstream {upstream} closed the connection before answering")]
    Reset { upstream: Named },
    #[error("upstream {upstream} failed: {detail}")]
    Upstream { upstream: Named, detail: String },
    #[error("upstream {upstream} is at its {limit} limit")]
    Busy {
        upstream: Named,
        /// The full setting: `max_concurrent` or `pool.max_connections`.
        limit: &'static str,
    },
    /// Something went wrong in promptgate itself, not at an upstream.
    #[error("internal error: {0}")]
    Internal(String),
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
            | ProxyError::Upstream { .. }
            | ProxyError::Internal(_) => 502,
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
            ProxyError::Internal(_) => "internal_error",
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

    /// Classifies an error from talking to `upstream` before its response head (a read
    /// timeout then is the `first_byte` timeout). The exchange (on hyper) reports its failures
    /// as Pingora error kinds, which the server side shares.
    pub fn from_upstream(upstream: &Upstream, e: &PingoraError) -> ProxyError {
        let named = Named::of(upstream);
        let timeouts = &upstream.timeouts;
        let timeout = |phase, after| ProxyError::Timeout {
            upstream: named.clone(),
            phase,
            after,
        };
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => {
                timeout("connect", timeouts.connect)
            }
            ErrorType::ReadTimedout => timeout("first_byte", timeouts.first_byte),
            ErrorType::WriteTimedout => timeout("write", timeouts.write),
            ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError
            | ErrorType::SocketError => {
                let detail = connect_detail(e);
                let hint = certificate_hint(&upstream.name, &detail);
                ProxyError::Connect {
                    detail: format!("{detail}{hint}"),
                    upstream: named,
                }
            }
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                ProxyError::Reset { upstream: named }
            }
            ErrorType::InvalidHTTPHeader
                if e.context
                    .as_ref()
                    .is_some_and(|c| c.as_str() == RESPONSE_HEAD) =>
            {
                ProxyError::Upstream {
                    detail: unreadable_head(e),
                    upstream: named,
                }
            }
            _ => ProxyError::Upstream {
                detail: e.etype().as_str().to_string(),
                upstream: named,
            },
        }
    }
}

/// Why an upstream's response head could not be read, in hyper's words (`invalid HTTP
/// status-code parsed`), and for one over hyper's limits which they are: 100 header fields and
/// 408 KiB of head (hyper 1's `DEFAULT_MAX_HEADERS` and `DEFAULT_MAX_BUFFER_SIZE`, kept: a
/// larger field count puts every response's field index on the heap). No byte of the head is
/// quoted: only hyper's description of what was wrong.
fn unreadable_head(e: &PingoraError) -> String {
    match pingora_reason(e) {
        Some(r) if r == "message head is too large" => {
            "its response head is too large (over 100 header fields or 408 KiB)".into()
        }
        Some(r) => format!("its response head is not valid HTTP/1.1: {r}"),
        None => "its response head is not valid HTTP/1.1".into(),
    }
}

/// Why a connection could not be made, in words: `connection refused`, `TLS handshake failed:
/// received corrupt message of type InvalidContentType, SNI: api.example.com`. Pingora's reason
/// is about the peer (an I/O or TLS error), which holds no credential: none has been sent yet.
fn connect_detail(e: &PingoraError) -> String {
    let what = match e.etype() {
        ErrorType::ConnectRefused => return "connection refused".into(),
        ErrorType::ConnectNoRoute => return "no route to host".into(),
        ErrorType::TLSHandshakeFailure => "TLS handshake failed",
        ErrorType::InvalidCert => "the TLS certificate is not valid",
        ErrorType::HandshakeError => "handshake failed",
        ErrorType::SocketError => "socket error",
        _ => "connection failed",
    };
    match pingora_reason(e) {
        // A handshake's reason comes as a whole chain flattened into one context: "TLS
        // connect() failed:  TLSHandshakeFailure context: … cause: <rustls' reason>, SNI: …".
        Some(reason) => {
            let last = reason.rsplit(" cause: ").next().unwrap_or(&reason);
            format!(
                "{what}: {}",
                last.trim_start_matches("TLS connect() failed: ")
            )
        }
        None => what.to_string(),
    }
}

/// For a certificate the handshake refused, which setting fixes it: `tls.ca_file` for one it
/// does not trust (a private CA, a self-signed certificate), `tls.sni` for one issued for
/// another name.
fn certificate_hint(upstream: &str, detail: &str) -> String {
    if detail.contains("UnknownIssuer") {
        format!(
            "; if it uses a private CA or a self-signed certificate, list it in \
             upstreams.{upstream}.tls.ca_file"
        )
    } else if detail.contains("not valid for name") || detail.contains("NotValidForName") {
        format!("; upstreams.{upstream}.tls.sni can name the host the certificate is for")
    } else {
        String::new()
    }
}

/// What Pingora says about why `e` happened: the error at the bottom of its chain (an I/O or
/// TLS error), else the innermost context it wrote. Not the local address Pingora attaches for
/// its own bookkeeping.
fn pingora_reason(e: &PingoraError) -> Option<String> {
    let mut context = None;
    let mut bottom = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        // Pingora's errors travel boxed, sometimes boxed twice (inside its own wrappers).
        let pingora = err
            .downcast_ref::<PingoraError>()
            .or_else(|| err.downcast_ref::<Box<PingoraError>>().map(|b| &**b));
        next = match pingora {
            Some(pe) => {
                if let Some(c) = &pe.context {
                    context = Some(c.to_string());
                }
                pe.cause
                    .as_deref()
                    .map(|c| c as &(dyn std::error::Error + 'static))
            }
            // A wrapper of Pingora's: look beneath it.
            None if err.source().is_some() => err.source(),
            None => {
                bottom = Some(err.to_string());
                None
            }
        };
    }
    bottom
        .filter(|b| !b.is_empty() && !b.starts_with("local address"))
        .or(context)
        .filter(|r| !r.is_empty())
}

/// What the log says when an upstream's answer breaks off after its head went to the client
/// (too late for a JSON error: the connection is cut): `upstream openai (api.openai.com:443)
/// sent nothing for 30s (idle timeout)`, or `… broke off the response (connection closed)`.
pub fn broke_off(upstream: &Upstream, e: &PingoraError) -> String {
    let named = Named::of(upstream);
    match e.etype() {
        ErrorType::ReadTimedout => format!(
            "upstream {named} sent nothing for {} (idle timeout)",
            humantime::format_duration(upstream.timeouts.idle)
        ),
        other => format!(
            "upstream {named} broke off the response ({})",
            match other {
                ErrorType::ConnectionClosed => "connection closed".to_string(),
                ErrorType::ReadError => "read error".to_string(),
                other => other.as_str().to_string(),
            }
        ),
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

    fn upstream(host: &str, port: u16) -> Upstream {
        let spec = crate::config::spec::Upstream {
            provider: crate::config::schema::Provider::Ollama,
            tls: false,
            host: host.into(),
            port,
            base_path: String::new(),
            host_header: http::HeaderValue::from_static("x"),
            headers: Vec::new(),
            timeouts: crate::config::schema::TimeoutsSpec::default(),
            health: Default::default(),
            max_concurrent: 0,
            queue_timeout: Duration::from_secs(5),
            pool: Default::default(),
            http_version: Default::default(),
            ca: None,
            sni: None,
        };
        Upstream::new("ollama".into(), &spec)
    }

    #[test]
    fn upstream_errors_name_the_upstream_and_its_address() {
        let up = upstream("127.0.0.1", 11434);
        let e = PingoraError::new(ErrorType::ReadTimedout);
        let p = ProxyError::from_upstream(&up, &e);
        assert_eq!((p.status(), p.kind()), (504, "upstream_timeout"));
        assert_eq!(
            p.to_string(),
            format!(
                "upstream ollama (127.0.0.1:11434) timed out after {} (first_byte timeout)",
                humantime::format_duration(up.timeouts.first_byte)
            )
        );
        let e = PingoraError::new(ErrorType::ConnectRefused);
        let p = ProxyError::from_upstream(&up, &e);
        assert_eq!(p.status(), 502);
        assert_eq!(
            p.to_string(),
            "cannot connect to upstream ollama (127.0.0.1:11434): connection refused"
        );
        // As Pingora 0.9's rustls connector words it.
        let e = PingoraError::explain(
            ErrorType::TLSHandshakeFailure,
            "TLS connect() failed:  TLSHandshakeFailure context: tls connect error cause: bad record mac, SNI: localhost",
        );
        assert_eq!(
            ProxyError::from_upstream(&up, &e).to_string(),
            "cannot connect to upstream ollama (127.0.0.1:11434): TLS handshake failed: bad record mac, SNI: localhost"
        );
        // A certificate it does not trust, or one for another name: the setting that fixes it.
        let e = PingoraError::explain(
            ErrorType::TLSHandshakeFailure,
            "TLS connect() failed:  TLSHandshakeFailure context: tls connect error cause: invalid peer certificate: UnknownIssuer, SNI: localhost",
        );
        assert_eq!(
            ProxyError::from_upstream(&up, &e).to_string(),
            "cannot connect to upstream ollama (127.0.0.1:11434): TLS handshake failed: invalid \
             peer certificate: UnknownIssuer, SNI: localhost; if it uses a private CA or a \
             self-signed certificate, list it in upstreams.ollama.tls.ca_file"
        );
        let e = PingoraError::explain(
            ErrorType::TLSHandshakeFailure,
            "TLS connect() failed:  TLSHandshakeFailure context: tls connect error cause: invalid peer certificate: certificate not valid for name \"x.example\"; certificate is only valid for DnsName(\"localhost\"), SNI: x.example",
        );
        assert!(ProxyError::from_upstream(&up, &e).to_string().ends_with(
            "SNI: x.example; upstreams.ollama.tls.sni can name the host the certificate is for"
        ));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let e = PingoraError::because(ErrorType::ConnectError, "Fail to connect", io);
        assert_eq!(
            ProxyError::from_upstream(&up, &e).to_string(),
            "cannot connect to upstream ollama (127.0.0.1:11434): connection failed: connection reset"
        );
        let v6 = upstream("[::1]", 8080);
        let e = PingoraError::new(ErrorType::ConnectionClosed);
        assert_eq!(
            ProxyError::from_upstream(&v6, &e).to_string(),
            "upstream ollama ([::1]:8080) closed the connection before answering"
        );
        assert_eq!(
            broke_off(&v6, &PingoraError::new(ErrorType::ReadTimedout)),
            format!(
                "upstream ollama ([::1]:8080) sent nothing for {} (idle timeout)",
                humantime::format_duration(v6.timeouts.idle)
            )
        );
    }
}
