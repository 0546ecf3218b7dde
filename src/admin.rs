//! The admin listener: `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /cache/stats`,
//! `POST /cache/purge`, `GET /limits`, `GET /config`, `POST /reload`, the dashboard (`GET /`)
//! and its data (`GET /stats`).
//! It binds to localhost by default and is never reachable through the proxy port. With
//! `admin_token` set, the mutating endpoints (`POST`) and `GET /stats` require
//! `Authorization: Bearer <token>`.

use crate::cache::redis::RedisState;
use crate::cache::{Cache, Purge};
use crate::config::schema::{CacheBackend, LimitKey};
use crate::config::ConfigError;
use crate::dashboard;
use crate::json_error;
use crate::limits::gcra::{Kind, DAY_US};
use crate::limits::{BucketUsage, Limiter, RouteLimit};
use crate::metrics::{self, LookupCounts, Metrics, Savings};
use crate::server::inflight::Inflight;
use crate::server::reload::{Reloader, Trigger};
use crate::stats;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Largest admin request body read (a purge selector is a few bytes).
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// Longest a readiness check waits for the proxy port to accept a connection.
const LISTENER_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Admin {
    pub reloader: Arc<Reloader>,
    pub metrics: Arc<Metrics>,
    pub cache: Arc<Cache>,
    pub inflight: Arc<Inflight>,
    pub limiter: Arc<Limiter>,
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    respond(status, "application/json", body.to_string().into_bytes())
}

fn error(status: StatusCode, kind: &str, message: String) -> Response<Vec<u8>> {
    json(status, json_error::value(kind, &message))
}

fn method_not_allowed(path: &str, allow: &'static str) -> Response<Vec<u8>> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{path} accepts {allow} only"),
    );
    resp.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    resp
}

/// `POST /cache/purge`'s body: exactly one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    route: Option<String>,
    prefix: Option<String>,
}

fn lookup_json(c: &LookupCounts) -> serde_json::Value {
    serde_json::json!({
        "hits": c.hits,
        "misses": c.misses,
        "bypasses": c.bypasses,
        "coalesced": c.coalesced,
        "errors": c.errors,
        "semantic_hits": c.semantic_hits,
        "hit_ratio": c.hit_ratio(),
    })
}

/// `{"response_cache": USD, "prompt_cache": USD}`.
fn savings_json(s: &Savings) -> serde_json::Value {
    serde_json::json!({"response_cache": s.response_cache, "prompt_cache": s.prompt_cache})
}

/// True when `given` is the configured token. Both sides are hashed first and blake3's hash
/// comparison is constant-time, so the answer's timing tells nothing about the token.
fn token_matches(given: &str, token: &str) -> bool {
    blake3::hash(given.as_bytes()) == blake3::hash(token.as_bytes())
}

/// A loopback address to reach a listener bound to `addr` (a wildcard bind accepts there too).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

impl Admin {
    /// `None` when the request may proceed, else the 401 to send.
    fn unauthorized(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
        let runtime = self.reloader.runtime().load();
        let token = runtime.admin_token.as_ref()?;
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if given.is_some_and(|g| token_matches(g, token.expose())) {
            return None;
        }
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs Authorization: Bearer <admin_token>".into(),
        );
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        Some(resp)
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        self.metrics.sample(&self.cache, self.inflight.count());
        self.metrics
            .log_lines_dropped(crate::logging::dropped_lines());
        respond(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            self.metrics.render().into_bytes(),
        )
    }

    /// Ready when a config is in force (always, once running), the proxy port accepts
    /// connections, and — with `cache.require_redis` on a Redis backend — Redis answers.
    async fn ready(&self) -> Response<Vec<u8>> {
        let runtime = self.reloader.runtime().load_full();
        let listener = matches!(
            tokio::time::timeout(
                LISTENER_CHECK_TIMEOUT,
                tokio::net::TcpStream::connect(reachable(runtime.listen))
            )
            .await,
            Ok(Ok(_))
        );
        let mut checks =
            serde_json::json!({"config": "ok", "listener": if listener { "ok" } else { "down" }});
        let mut ready = listener;
        if runtime.cache.backend == CacheBackend::Redis && runtime.cache.require_redis {
            let redis = match self.cache.redis() {
                Some(r) => r.ping().await.is_ok(),
                None => false,
            };
            checks["redis"] = (if redis { "ok" } else { "down" }).into();
            ready &= redis;
        }
        let (status, word) = if ready {
            (StatusCode::OK, "ready")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        };
        json(
            status,
            serde_json::json!({"status": word, "checks": checks}),
        )
    }

    /// `GET /stats`: the dashboard's data (see [`stats::Snapshot`]).
    fn stats(&self) -> Response<Vec<u8>> {
        let runtime = self.reloader.runtime().load_full();
        let snapshot = stats::snapshot(&stats::Sources {
            metrics: &self.metrics,
            runtime: &runtime,
            cache: &self.cache,
            inflight: self.inflight.count(),
            last_reload: self.reloader.last(),
        });
        match serde_json::to_vec(&snapshot) {
            Ok(body) => {
                let mut resp = respond(StatusCode::OK, "application/json", body);
                resp.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-store"),
                );
                resp
            }
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot encode the stats: {e}"),
            ),
        }
    }

    fn cache_stats(&self) -> Response<Vec<u8>> {
        let (total, per_route) = self.metrics.lookup_counts();
        let (saved, saved_per_route) = self.metrics.savings();
        let (entries, bytes) = self.cache.memory_usage();
        let mut body = lookup_json(&total);
        body["saved_usd"] = savings_json(&saved);
        let mut routes: serde_json::Map<String, serde_json::Value> = per_route
            .iter()
            .map(|(name, c)| (name.clone(), lookup_json(c)))
            .collect();
        for (name, s) in &saved_per_route {
            let route = routes
                .entry(name.clone())
                .or_insert_with(|| lookup_json(&LookupCounts::default()));
            route["saved_usd"] = savings_json(s);
        }
        for route in routes.values_mut() {
            if route.get("saved_usd").is_none() {
                route["saved_usd"] = savings_json(&Savings::default());
            }
        }
        body["routes"] = routes.into();
        body["memory"] = serde_json::json!({"entries": entries, "bytes": bytes});
        body["redis"] = match self.cache.redis() {
            None => serde_json::Value::Null,
            Some(r) => serde_json::json!({
                "state": match r.state() {
                    RedisState::Up => "up",
                    RedisState::CircuitOpen => "circuit_open",
                },
                "errors": r.error_count(),
            }),
        };
        json(StatusCode::OK, body)
    }

    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
        };
        let selector = match serde_json::from_slice::<PurgeRequest>(&body) {
            Ok(PurgeRequest {
                route: Some(r),
                prefix: None,
            }) if !r.is_empty() => Purge::Route(r),
            Ok(PurgeRequest {
                route: None,
                prefix: Some(p),
            }) if !p.is_empty() => Purge::Prefix(p),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    r#"expected a JSON body {"route": "NAME"} or {"prefix": "KEY_PREFIX"}"#.into(),
                )
            }
        };
        // A route the config no longer names may still have entries (in Redis until they
        // expire), so its purge goes ahead; the answer says so, which also shows a misspelt name.
        let configured = match &selector {
            Purge::Route(r) => {
                let runtime = self.reloader.runtime().load_full();
                Some(runtime.routes.iter().any(|route| route.name == *r))
            }
            Purge::Prefix(_) => None,
        };
        match self.cache.purge(&selector).await {
            Ok(purged) => {
                log::info!("cache purge {selector:?}: {purged:?}");
                if configured == Some(false) {
                    log::warn!("cache purge {selector:?}: no configured route has that name");
                }
                let mut body =
                    serde_json::json!({"purged": {"memory": purged.memory, "redis": purged.redis}});
                if let Some(configured) = configured {
                    body["route_configured"] = configured.into();
                }
                json(StatusCode::OK, body)
            }
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                "redis_error",
                format!("the memory store was purged, Redis was not: {e}"),
            ),
        }
    }

    /// `GET /limits`: each rate-limited route's limits and the usage of its buckets that hold
    /// state (credentials as their hashes only). With Redis, the buckets this process has used,
    /// read from Redis (so they include other sidecars' requests).
    async fn limits(&self) -> Response<Vec<u8>> {
        let runtime = self.reloader.runtime().load_full();
        let limited: Vec<(&str, &RouteLimit)> = runtime
            .routes
            .iter()
            .filter_map(|r| Some((r.name.as_str(), &**r.rate_limit.as_ref()?)))
            .collect();
        let usage = match self.limiter.usage(&limited).await {
            Ok(u) => u,
            Err(e) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "redis_error",
                    format!("cannot read the rate-limit counters: {e}"),
                )
            }
        };
        let mut routes = serde_json::Map::new();
        for (name, limit) in &limited {
            let buckets: Vec<serde_json::Value> = usage
                .iter()
                .filter(|b| b.route == *name)
                .map(|b| bucket_json(limit, b))
                .collect();
            let limits: serde_json::Map<String, serde_json::Value> = limit
                .kinds()
                .map(|k| (k.as_str().to_string(), limit.value(k).into()))
                .collect();
            routes.insert(
                name.to_string(),
                serde_json::json!({
                    "key": limit.key,
                    "count_hits": limit.count_hits,
                    "on_store_error": limit.on_store_error,
                    "limits": limits,
                    "buckets": buckets,
                }),
            );
        }
        json(
            StatusCode::OK,
            serde_json::json!({
                "backend": self.limiter.backend().as_str(),
                "store_errors": self.limiter.store_errors(),
                "routes": routes,
            }),
        )
    }

    fn config(&self) -> Response<Vec<u8>> {
        let runtime = self.reloader.runtime().load_full();
        match serde_json::to_value(&*runtime.sections) {
            Ok(v) => json(StatusCode::OK, v),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot show the config: {e}"),
            ),
        }
    }

    fn reload(&self) -> Response<Vec<u8>> {
        match self.reloader.reload(Trigger::AdminApi) {
            Ok(done) => {
                let mut body = serde_json::json!({"status": "reloaded", "routes": done.routes});
                if !done.needs_restart.is_empty() {
                    body["needs_restart"] = done
                        .needs_restart
                        .iter()
                        .map(|n| serde_json::Value::from(n.field))
                        .collect();
                }
                json(StatusCode::OK, body)
            }
            Err(e) => reload_failed(&e),
        }
    }
}

/// One bucket of `GET /limits`: per limit set, its value, what is left, and when it is full again.
fn bucket_json(limit: &RouteLimit, b: &BucketUsage) -> serde_json::Value {
    let o = &b.outcome;
    let seconds = |us: i64| us.max(0) as f64 / 1e6;
    let mut v = serde_json::json!({});
    if limit.key == LimitKey::Credential {
        v["credential"] = b.who.clone().into();
    }
    if limit.params.rpm > 0 {
        v["requests"] = serde_json::json!({
            "limit": limit.params.rpm,
            "remaining": o.requests_remaining,
            "reset_seconds": seconds(o.requests_reset_us),
        });
    }
    if limit.params.tpm > 0 {
        v["tokens"] = serde_json::json!({
            "limit": limit.params.tpm,
            "remaining": o.tokens_remaining,
            "reset_seconds": seconds(o.tokens_reset_us),
        });
    }
    if limit.params.budget_nano_usd > 0 {
        let budget = limit.params.budget_nano_usd as i64;
        v["usd"] = serde_json::json!({
            "limit": limit.value(Kind::Usd),
            "spent": o.usd_spent as f64 / 1e9,
            "remaining": (budget - o.usd_spent).max(0) as f64 / 1e9,
            "reset_seconds": seconds(DAY_US - o.now.rem_euclid(DAY_US)),
        });
    }
    v
}

/// The reload failed and nothing changed. An invalid file is the caller's to fix (422, with
/// each problem also as data); an unreadable one is the server's side (500).
fn reload_failed(e: &ConfigError) -> Response<Vec<u8>> {
    match e {
        ConfigError::Invalid { problems, .. } => {
            let problems: Vec<_> = problems
                .iter()
                .map(|p| serde_json::json!({"line": p.line, "path": p.path, "message": p.message}))
                .collect();
            let mut body = json_error::value("invalid_config", &e.to_string());
            body["error"]["problems"] = problems.into();
            json(StatusCode::UNPROCESSABLE_ENTITY, body)
        }
        ConfigError::Read { source, .. } => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "config_unreadable",
            format!("{e}: {source}"),
        ),
    }
}

/// The request body, up to [`MAX_ADMIN_BODY`].
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ADMIN_BODY {
                    return Err(format!("body larger than {MAX_ADMIN_BODY} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("cannot read the body: {}", e.etype().as_str())),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.as_str().to_owned();
        let path = session.req_header().uri.path().to_owned();
        match (path.as_str(), method.as_str()) {
            ("/healthz", "GET") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            ("/healthz", _) => method_not_allowed(&path, "GET"),
            ("/readyz", "GET") => self.ready().await,
            ("/readyz", _) => method_not_allowed(&path, "GET"),
            ("/metrics", "GET") => self.metrics(),
            ("/metrics", _) => method_not_allowed(&path, "GET"),
            ("/cache/stats", "GET") => self.cache_stats(),
            ("/cache/stats", _) => method_not_allowed(&path, "GET"),
            ("/limits", "GET") => self.limits().await,
            ("/limits", _) => method_not_allowed(&path, "GET"),
            ("/config", "GET") => self.config(),
            ("/config", _) => method_not_allowed(&path, "GET"),
            ("/cache/purge", "POST") => match self.unauthorized(session) {
                Some(denied) => {
                    let _ = session.drain_request_body().await;
                    denied
                }
                None => self.purge(session).await,
            },
            ("/cache/purge", _) => method_not_allowed(&path, "POST"),
            ("/reload", "POST") => {
                // Any body is ignored; read it off the connection so keep-alive stays in sync.
                let _ = session.drain_request_body().await;
                match self.unauthorized(session) {
                    Some(denied) => denied,
                    None => self.reload(),
                }
            }
            ("/reload", _) => method_not_allowed(&path, "POST"),
            ("/stats", "GET") => match self.unauthorized(session) {
                Some(denied) => denied,
                None => self.stats(),
            },
            ("/stats", _) => method_not_allowed(&path, "GET"),
            _ => match (dashboard::asset(&path), method.as_str()) {
                (Some(asset), "GET") => dashboard_file(asset),
                (Some(_), _) => method_not_allowed(&path, "GET"),
                (None, _) => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no admin endpoint {path}"),
                ),
            },
        }
    }
}

/// A dashboard file, with headers that keep the page to its own files and out of frames.
fn dashboard_file(asset: dashboard::Asset) -> Response<Vec<u8>> {
    let mut resp = respond(StatusCode::OK, asset.content_type, asset.body.to_vec());
    let headers = resp.headers_mut();
    for (name, value) in [
        (
            http::header::CONTENT_SECURITY_POLICY,
            dashboard::CONTENT_SECURITY_POLICY,
        ),
        (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (http::header::REFERRER_POLICY, "no-referrer"),
        (http::header::X_FRAME_OPTIONS, "DENY"),
        // Embedded in the binary: an upgrade may change them, so always revalidate.
        (http::header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_value() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn wildcard_listeners_are_checked_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            reachable("10.1.2.3:80".parse().unwrap()),
            "10.1.2.3:80".parse::<SocketAddr>().unwrap()
        );
    }
}
