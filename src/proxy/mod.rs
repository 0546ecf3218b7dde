//! The `ProxyHttp` implementation: every request is answered in `request_filter`.
//!
//! Phase order for one request:
//! 1. `new_ctx` — start the clock.
//! 2. `request_filter` — load the table snapshot, match a route on the head, read the body
//!    (bounded), finish matching on the body's model, rewrite, exchange with the upstream
//!    ([`upstream`]), relay the answer. Returns `Ok(true)`: the response has been sent.
//! 3. `fail_to_proxy` — only for failures after the response head went out: cut the connection.
//! 4. `logging` — the access log line.
//!
//! Pingora's own upstream phases (`upstream_peer` onward) are never reached. See
//! `request_body.rs` for why promptgate owns the upstream exchange.

mod ctx;
mod errors;
mod follow;
mod inbound;
mod request_body;
mod respond;
mod upstream;

pub use ctx::{Ctx, Inflight, InflightGuard};
pub use errors::ProxyError;
// Public for the fuzz targets (fuzz/), which check its header rewriting on hostile input.
pub use upstream::build_request;

use crate::cache::flight::Role;
use crate::cache::key::CacheKey;
use crate::cache::policy;
use crate::cache::record::RecordPlan;
use crate::cache::{Cache, CacheStatus};
use crate::routing::{Route, Table, Target};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use follow::Followed;
use pingora::connectors::http::Connector;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// State shared by every request: the swappable routing table, the response cache and the
/// upstream connection pool.
pub struct Proxy {
    pub table: Arc<ArcSwap<Table>>,
    pub cache: Arc<Cache>,
    pub connector: Connector,
    pub inflight: Arc<Inflight>,
    /// Set on SIGTERM: responses then close their connections so clients move on.
    pub draining: Arc<AtomicBool>,
}

/// Why a request did not complete normally.
enum Failure {
    /// Nothing was sent yet: answer with a JSON error.
    BeforeResponse(ProxyError),
    /// The response was under way: cut the connection.
    AfterResponse(Box<Error>),
}

impl From<ProxyError> for Failure {
    fn from(e: ProxyError) -> Self {
        Failure::BeforeResponse(e)
    }
}

impl Proxy {
    pub fn new(table: Arc<ArcSwap<Table>>, cache: Arc<Cache>, connector: Connector) -> Proxy {
        Proxy {
            table,
            cache,
            connector,
            inflight: Arc::default(),
            draining: Arc::default(),
        }
    }

    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        table: &Table,
    ) -> Result<(), Failure> {
        let path = inbound::vet(session)?;
        let candidates = table.candidates(session.req_header(), &path);
        if candidates.is_empty() {
            return Err(ProxyError::NoRoute {
                method: session.req_header().method.to_string(),
                path,
            }
            .into());
        }
        let body = request_body::read(session, table.max_body_bytes).await?;
        let route = choose_route(&candidates, &body)?.ok_or_else(|| ProxyError::NoRoute {
            method: session.req_header().method.to_string(),
            path: path.clone(),
        })?;
        ctx.route = Some(route.name.clone());

        let (cache_status, record) = match self.decide_cache(session, route, &path, &body)? {
            None => (None, None),
            Some(decision) => match self
                .answer_without_upstream(session, ctx, route, decision)
                .await?
            {
                CacheStep::Answered => return Ok(()),
                CacheStep::GoUpstream { status, record } => (Some(status), record),
            },
        };
        ctx.cache = cache_status;

        let target = &route.targets[0];
        ctx.upstream = Some(target.upstream.name.clone());
        let body = rewrite_model(route, target, body)?;
        let forward = match session.req_header().uri.query() {
            Some(q) => format!("{}?{q}", route.forward_path(&path)),
            None => route.forward_path(&path).to_string(),
        };
        let upstream = &target.upstream;
        let req = upstream::build_request(session.req_header(), upstream, &forward, body.len())?;
        let response = upstream::send(&self.connector, upstream, &req, &body).await?;
        ctx.status = response.header().status.as_u16();
        upstream::relay(
            &self.connector,
            upstream,
            response,
            session,
            cache_status,
            record,
        )
        .await
        .map_err(Failure::AfterResponse)
    }

    /// Answers from the cache, or from an identical request already in flight, when possible;
    /// otherwise says how the upstream answer is to be recorded (and shared, as a leader).
    async fn answer_without_upstream(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        decision: CacheDecision,
    ) -> Result<CacheStep, Failure> {
        let CacheDecision {
            status,
            lookup,
            mut record,
        } = decision;
        let Some(key) = lookup else {
            return Ok(CacheStep::GoUpstream { status, record });
        };
        if let Some(entry) = self.cache.lookup(&route.name, &key).await {
            ctx.cache = Some(CacheStatus::Hit);
            ctx.status = entry.status;
            respond::cached(session, &entry, route.cache.replay)
                .await
                .map_err(Failure::AfterResponse)?;
            return Ok(CacheStep::Answered);
        }
        if let Some(plan) = record.as_mut().filter(|_| route.cache.coalesce) {
            match self.cache.flights().join(key) {
                Role::Leader(leader) => plan.leader = Some(leader),
                Role::Follower(follower) => {
                    let followed = follow::serve(session, follower, route.cache.coalesce_timeout)
                        .await
                        .map_err(Failure::AfterResponse)?;
                    if let Followed::Served(code) = followed {
                        ctx.cache = Some(CacheStatus::Hit);
                        ctx.coalesced = true;
                        ctx.status = code;
                        return Ok(CacheStep::Answered);
                    }
                }
            }
        }
        Ok(CacheStep::GoUpstream { status, record })
    }

    /// The cache's part in this request, or `None` when the route or method is not cached.
    fn decide_cache(
        &self,
        session: &Session,
        route: &Route,
        path: &str,
        body: &Bytes,
    ) -> Result<Option<CacheDecision>, ProxyError> {
        let req = session.req_header();
        if !route.cache.enabled || !policy::cacheable_method(&req.method) {
            return Ok(None);
        }
        let controls = policy::controls(req).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        if !controls.lookup && !controls.store {
            return Ok(Some(CacheDecision {
                status: CacheStatus::Bypass,
                lookup: None,
                record: None,
            }));
        }
        let (key, _) = policy::request_key(req, &route.key_name, &route.cache, path, body);
        Ok(Some(CacheDecision {
            status: if controls.lookup {
                CacheStatus::Miss
            } else {
                CacheStatus::Bypass
            },
            lookup: controls.lookup.then_some(key),
            record: controls.store.then(|| RecordPlan {
                cache: self.cache.clone(),
                route: route.name.clone(),
                key,
                ttl: controls.ttl.unwrap_or(route.cache.ttl),
                limit: route.cache.max_entry_bytes,
                complete_on_disconnect: route.cache.complete_on_disconnect,
                leader: None,
            }),
        }))
    }
}

/// The cache's part in one request, decided before going upstream.
struct CacheDecision {
    /// `x-promptgate-cache` when the answer comes from upstream: MISS, or BYPASS when the
    /// request skipped the lookup.
    status: CacheStatus,
    lookup: Option<CacheKey>,
    record: Option<RecordPlan>,
}

/// Whether the cache answered, or what to do with the upstream's answer.
enum CacheStep {
    Answered,
    GoUpstream {
        status: CacheStatus,
        record: Option<RecordPlan>,
    },
}

/// The first candidate whose model criterion holds. The body is parsed only when some
/// candidate routes on the model.
fn choose_route<'t>(
    candidates: &[&'t Route],
    body: &Bytes,
) -> Result<Option<&'t Route>, ProxyError> {
    let needs_model = candidates.iter().any(|r| r.matcher.model.is_some());
    let model = if needs_model { model_of(body) } else { None };
    Ok(candidates
        .iter()
        .find(|r| r.matcher.matches_model(model.as_deref()))
        .copied())
}

/// The `model` field of a JSON body, if it is a JSON object with a string model.
fn model_of(body: &Bytes) -> Option<String> {
    #[derive(Deserialize)]
    struct ModelOnly {
        model: Option<String>,
    }
    serde_json::from_slice::<ModelOnly>(body).ok()?.model
}

/// Replaces the body's `model` when the target asks for it. Other fields keep their order and
/// values; the body length changes, which `build_request` accounts for.
fn rewrite_model(route: &Route, target: &Target, body: Bytes) -> Result<Bytes, ProxyError> {
    let Some(model) = &target.model else {
        return Ok(body);
    };
    if body.is_empty() {
        return Ok(body);
    }
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|e| {
            ProxyError::MalformedJson(e.to_string(), route.name.clone(), "rewrite its model")
        })?;
    if !object.contains_key("model") {
        return Ok(body);
    }
    object.insert("model".into(), serde_json::Value::String(model.clone()));
    Ok(Bytes::from(
        serde_json::to_vec(&object).expect("a JSON map always serializes"),
    ))
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.inflight = Some(InflightGuard::new(&self.inflight));
        if self.draining.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        let table = self.table.load_full();
        ctx.table = Some(table.clone());
        match self.handle(session, ctx, &table).await {
            Ok(()) => Ok(true),
            Err(Failure::BeforeResponse(e)) => {
                ctx.status = e.status();
                ctx.error = Some(e.kind());
                log::warn!(
                    "{} {}: {e}",
                    session.req_header().method,
                    session.req_header().uri.path()
                );
                respond::error(session, &e).await?;
                Ok(true)
            }
            Err(Failure::AfterResponse(e)) => {
                ctx.error = Some("response_interrupted");
                Err(e)
            }
        }
    }

    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        inbound::summary(session)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "every request is answered in request_filter",
        )
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        // Reached only when the response was under way (see `Failure`), or for Pingora's own
        // early errors. Never write a second head into a started response.
        let code = if session.response_written().is_some() {
            0
        } else {
            let err = ProxyError::Upstream {
                upstream: "-".into(),
                detail: e.etype().as_str().to_string(),
            };
            let _ = respond::error(session, &err).await;
            502
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // The query string is left out on purpose: some providers take the API key there.
        let req = session.req_header();
        log::info!(
            target: "promptgate::access",
            "{} {} status={} route={} upstream={} cache={} ms={:.2}{}",
            req.method,
            req.uri.path(),
            ctx.status,
            ctx.route.as_deref().unwrap_or("-"),
            ctx.upstream.as_deref().unwrap_or("-"),
            match (ctx.cache, ctx.coalesced) {
                (Some(_), true) => "HIT(coalesced)",
                (status, _) => status.map_or("-", CacheStatus::as_str),
            },
            ctx.started.elapsed().as_secs_f64() * 1000.0,
            match (ctx.error, e) {
                (Some(label), _) => format!(" error={label}"),
                (None, Some(e)) => format!(" error={}", e.etype().as_str()),
                (None, None) => String::new(),
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_model_of_json_bodies_only() {
        assert_eq!(
            model_of(&Bytes::from_static(br#"{"messages":[],"model":"gpt-4o"}"#)).as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(model_of(&Bytes::from_static(b"not json")), None);
        assert_eq!(model_of(&Bytes::from_static(br#"{"model":5}"#)), None);
    }
}
