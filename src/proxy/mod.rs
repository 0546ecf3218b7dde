//! The `ProxyHttp` implementation: every request is answered in `request_filter`.
//!
//! Phase order for one request:
//! 1. `new_ctx` — start the clock.
//! 2. `request_filter` — load the table snapshot, match a route on the head, read the body
//!    (bounded), finish matching on the body's model, rewrite, exchange with the upstream
//!    ([`exchange`]), relay the answer. Returns `Ok(true)`: the response has been sent.
//! 3. `fail_to_proxy` — only for failures after the response head went out: cut the connection.
//! 4. `logging` — metrics and the access log line, from the ctx.
//!
//! Pingora's own upstream phases (`upstream_peer` onward) are never reached. See
//! `request_body.rs` for why promptgate owns the upstream exchange.

mod ctx;
mod embed;
mod errors;
mod exchange;
mod failover;
mod follow;
mod inbound;
mod request_body;
pub mod request_framing;
pub mod request_path;
mod respond;
pub mod semantic;

pub use ctx::Ctx;
pub use errors::ProxyError;
// Public for the fuzz targets (fuzz/), which check its header rewriting on hostile input.
pub use exchange::build_request;

use crate::cache::flight::Role;
use crate::cache::key::CacheKey;
use crate::cache::policy;
use crate::cache::record::RecordPlan;
use crate::cache::{Cache, CacheStatus, Lookup};
use crate::logging::{self, Access};
use crate::metrics::{CacheLabel, LookupResult, Metrics, RequestRecord};
use crate::providers::UsageObserver;
use crate::routing::balance;
use crate::routing::Route;
use crate::runtime::Runtime;
use crate::server::inflight::{Inflight, InflightGuard};
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
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub cache: Arc<Cache>,
    pub connector: Connector,
    pub inflight: Arc<Inflight>,
    /// Set on SIGTERM: responses then close their connections so clients move on.
    pub draining: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
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
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        cache: Arc<Cache>,
        connector: Connector,
        metrics: Arc<Metrics>,
    ) -> Proxy {
        Proxy {
            runtime,
            cache,
            connector,
            inflight: Arc::default(),
            draining: Arc::default(),
            metrics,
        }
    }

    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        runtime: &Runtime,
    ) -> Result<(), Failure> {
        let path = inbound::vet(session)?;
        let candidates = runtime.candidates(session.req_header(), &path);
        if candidates.is_empty() {
            return Err(ProxyError::NoRoute {
                method: session.req_header().method.to_string(),
                path,
            }
            .into());
        }
        let body = request_body::read(session, runtime.max_body_bytes).await?;
        // The body is parsed for its model at most once, and only when some candidate routes
        // on the model or picks a priority group by a model alias.
        let needs_model = candidates
            .iter()
            .any(|r| r.matcher.model.is_some() || !r.groups.is_empty());
        let model = if needs_model { model_of(&body) } else { None };
        let route =
            choose_route(&candidates, model.as_deref()).ok_or_else(|| ProxyError::NoRoute {
                method: session.req_header().method.to_string(),
                path: path.clone(),
            })?;
        ctx.route = Some(route.name.clone());
        let group = if route.groups.is_empty() {
            None
        } else {
            let header = session
                .req_header()
                .headers
                .get(balance::PRIORITY_HEADER)
                .and_then(|v| v.to_str().ok());
            balance::requested_group(route, header, model.as_deref())
                .map_err(|priority| ProxyError::Priority { priority })?
        };

        let (cache_status, record) = match self.decide_cache(session, route, &path, &body)? {
            None => (None, None),
            Some(decision) => match self
                .answer_without_upstream(session, ctx, route, decision, &path, &body)
                .await?
            {
                CacheStep::Answered => return Ok(()),
                CacheStep::GoUpstream { status, record } => (Some(status), record),
            },
        };
        ctx.cache = cache_status;

        let targets = balance::order(route, group);
        let forward = match session.req_header().uri.query() {
            Some(q) => format!("{}?{q}", route.forward_path(&path)),
            None => route.forward_path(&path).to_string(),
        };
        let answer = failover::exchange(
            &self.connector,
            route,
            &targets,
            session.req_header(),
            &forward,
            &body,
            ctx,
        )
        .await?;
        ctx.upstream = Some(answer.target.upstream.name.clone());
        ctx.status = answer.response.header().status.as_u16();
        let mut usage = UsageObserver::for_content_type(
            answer
                .response
                .header()
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        );
        let relayed = exchange::relay(
            &self.connector,
            &answer.target.upstream,
            answer.response,
            session,
            cache_status,
            record,
            &mut usage,
        )
        .await;
        drop(answer.slot);
        // Counted even when the client left early: the upstream call was made (and billed).
        ctx.usage = usage.finish();
        relayed.map_err(Failure::AfterResponse)
    }

    /// Answers from the cache, or from an identical request already in flight, when possible;
    /// otherwise says how the upstream answer is to be recorded (and shared, as a leader).
    async fn answer_without_upstream(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        decision: CacheDecision,
        path: &str,
        body: &Bytes,
    ) -> Result<CacheStep, Failure> {
        let CacheDecision {
            status,
            lookup,
            mut record,
        } = decision;
        let Some(key) = lookup else {
            ctx.lookup = Some(LookupResult::Bypass);
            return Ok(CacheStep::GoUpstream { status, record });
        };
        match self.cache.lookup_traced(&route.name, &key).await {
            Lookup::Hit(entry) => {
                ctx.lookup = Some(LookupResult::Hit);
                ctx.cache = Some(CacheStatus::Hit);
                ctx.status = entry.status;
                ctx.hit_entry = Some(entry.clone());
                respond::cached(session, &entry, route.cache.replay)
                    .await
                    .map_err(Failure::AfterResponse)?;
                return Ok(CacheStep::Answered);
            }
            Lookup::Miss => ctx.lookup = Some(LookupResult::Miss),
            Lookup::Error => ctx.lookup = Some(LookupResult::Error),
        }
        let request = semantic::Request {
            route,
            path,
            body,
            key,
        };
        match semantic::lookup(&self.cache, &self.connector, session, ctx, request).await? {
            semantic::Step::Answered => return Ok(CacheStep::Answered),
            semantic::Step::Miss(indexing) => {
                if let Some(plan) = record.as_mut() {
                    plan.semantic = indexing;
                }
            }
        }
        if let Some(plan) = record.as_mut().filter(|_| route.cache.coalesce) {
            match self.cache.flights().join(key) {
                Role::Leader(leader) => plan.leader = Some(leader),
                Role::Follower(follower) => {
                    let followed = follow::serve(session, follower, route.cache.coalesce_timeout)
                        .await
                        .map_err(Failure::AfterResponse)?;
                    if let Followed::Served(code, usage) = followed {
                        ctx.lookup = Some(LookupResult::Coalesced);
                        ctx.cache = Some(CacheStatus::Hit);
                        ctx.coalesced = true;
                        ctx.status = code;
                        ctx.usage = usage;
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
                semantic: None,
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

/// The first candidate whose model criterion holds.
fn choose_route<'t>(candidates: &[&'t Route], model: Option<&str>) -> Option<&'t Route> {
    candidates
        .iter()
        .find(|r| r.matcher.matches_model(model))
        .copied()
}

/// The `model` field of a JSON body, if it is a JSON object with a string model.
fn model_of(body: &Bytes) -> Option<String> {
    #[derive(Deserialize)]
    struct ModelOnly {
        model: Option<String>,
    }
    serde_json::from_slice::<ModelOnly>(body).ok()?.model
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
        let runtime = self.runtime.load_full();
        ctx.runtime = Some(runtime.clone());
        match self.handle(session, ctx, &runtime).await {
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
        let duration = ctx.started.elapsed();
        let route = ctx.route.as_deref();
        let cache = match ctx.cache {
            Some(CacheStatus::Hit) => CacheLabel::Hit,
            Some(CacheStatus::Miss) => CacheLabel::Miss,
            Some(CacheStatus::Bypass) => CacheLabel::Bypass,
            None => CacheLabel::None,
        };
        // A hit's usage is read from its entry here, after the answer went out.
        let usage = ctx
            .usage
            .as_ref()
            .or_else(|| ctx.hit_entry.as_ref().and_then(|entry| entry.usage()));
        if let (Some(route), Some(lookup)) = (route, ctx.lookup) {
            self.metrics.cache_lookup(route, lookup);
        }
        if let (Some(route), Some(report)) = (route, &ctx.semantic) {
            self.metrics.semantic(route, report);
        }
        if let Some(route) = route {
            for _ in 0..ctx.retries {
                self.metrics.upstream_retry(route);
            }
            for _ in 0..ctx.failovers {
                self.metrics.upstream_failover(route);
            }
        }
        self.metrics.request_done(&RequestRecord {
            route,
            upstream: ctx.upstream.as_deref(),
            status: ctx.status,
            cache,
            duration,
            ttfb: ctx.ttfb,
            usage,
            pricing: ctx.runtime.as_deref().map(|t| &*t.pricing),
        });
        let req = session.req_header();
        let error = match (ctx.error, e) {
            (Some(label), _) => Some(label),
            (None, Some(e)) => Some(e.etype().as_str()),
            (None, None) => None,
        };
        logging::access(&Access {
            method: req.method.as_str(),
            // The query string is left out on purpose: some providers take the API key there.
            path: req.uri.path(),
            status: ctx.status,
            route,
            upstream: ctx.upstream.as_deref(),
            cache: ctx.cache.map(CacheStatus::as_str),
            coalesced: ctx.coalesced,
            duration_ms: duration.as_secs_f64() * 1000.0,
            input_tokens: usage.map(|u| u.input),
            output_tokens: usage.map(|u| u.output),
            retries: ctx.retries,
            failovers: ctx.failovers,
            error,
        });
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
