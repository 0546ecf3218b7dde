//! The cache's part in a request, before any upstream call: bypass, lookup (hit or miss), and
//! single-flight (follow an identical request in flight, or lead one).

use super::client_gone::Waiting;
use super::ctx::Ctx;
use super::errors::ProxyError;
use super::follow::{self, Followed};
use super::session::Session;
use super::{respond, semantic, Failure};
use crate::body::ParsedBody;
use crate::cache::flight::Role;
use crate::cache::key::CacheKey;
use crate::cache::record::RecordPlan;
use crate::cache::{operations, policy};
use crate::cache::{Cache, CacheStatus, Lookup};
use crate::limits::Limiter;
use crate::routing::Route;
use pingora::http::RequestHeader;
use std::sync::Arc;

/// The cache's part in one request, decided before going upstream.
pub(super) struct CacheDecision {
    /// `x-promptgate-cache` when the answer comes from upstream: MISS, or BYPASS when the
    /// request skipped the lookup.
    status: CacheStatus,
    lookup: Option<CacheKey>,
    record: Option<RecordPlan>,
    /// False for a request that is not a cacheable operation: the cache had no part in it,
    /// so no lookup is counted (its answer still says `BYPASS`).
    counted: bool,
}

/// Whether the cache answered, or what to do with the upstream's answer.
pub(super) enum CacheStep {
    Answered,
    GoUpstream {
        status: CacheStatus,
        record: Option<RecordPlan>,
    },
}

/// `x-promptgate-cache` for an answer on one of `routes` (the route, or before the body chose
/// it, its candidates) that the cache step has not decided — an error on the way: `MISS` when
/// the request is a cache candidate (one of the route's cacheable operations, no request control
/// skipping the lookup), `BYPASS` when it is not; none unless every one of `routes` is cached.
/// Without the `body` (not read yet), an operation's body condition is taken as met.
pub(super) fn unreached(
    routes: &[&Route],
    req: &RequestHeader,
    path: &str,
    body: Option<&ParsedBody<'_>>,
) -> Option<CacheStatus> {
    if routes.is_empty() || !routes.iter().all(|r| r.cache.enabled) {
        return None;
    }
    let operation = |route: &&Route| {
        let (ops, forward) = (&route.cache.operations, route.forward_path(path));
        match body {
            Some(body) => operations::cacheable(ops, &req.method, forward, body),
            None => operations::named(ops, &req.method, forward),
        }
    };
    let candidate = routes.iter().all(operation) && policy::controls(req).is_ok_and(|c| c.lookup);
    Some(if candidate {
        CacheStatus::Miss
    } else {
        CacheStatus::Bypass
    })
}

/// What the request says of the cache on its (chosen) route, judged once for both its
/// `x-promptgate-cache` before the lookup ([`Judged::unreached`]) and the lookup itself
/// ([`decide`]).
pub(super) struct Judged {
    /// One of the route's cacheable operations (its body condition met).
    cacheable: bool,
    /// The request's own cache controls; read only for a cacheable operation.
    controls: Option<Result<policy::RequestControls, policy::BadTtl>>,
}

/// Judges the request on `route`; `None` when the route is not cached.
pub(super) fn judge(
    route: &Route,
    req: &RequestHeader,
    path: &str,
    body: &ParsedBody<'_>,
) -> Option<Judged> {
    if !route.cache.enabled {
        return None;
    }
    let cacheable = operations::cacheable(
        &route.cache.operations,
        &req.method,
        route.forward_path(path),
        body,
    );
    Some(Judged {
        cacheable,
        controls: cacheable.then(|| policy::controls(req)),
    })
}

impl Judged {
    /// What [`unreached`] says of the request on its route alone, with its body.
    pub(super) fn unreached(&self) -> CacheStatus {
        let lookup = matches!(self.controls, Some(Ok(c)) if c.lookup);
        if self.cacheable && lookup {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        }
    }
}

/// The cache's part in this request, or `None` when the route is not cached (`judged`, from
/// [`judge`] on the same route).
pub(super) fn decide(
    cache: &Arc<Cache>,
    session: &Session,
    route: &Route,
    path: &str,
    body: &ParsedBody<'_>,
    judged: Option<Judged>,
) -> Result<Option<CacheDecision>, ProxyError> {
    let req = session.req_header();
    let Some(judged) = judged else {
        return Ok(None);
    };
    // Only pure generations are cached; state reads and calls that create, change or delete
    // something are forwarded untouched (no lookup to count, nothing stored).
    let Some(controls) = judged.controls else {
        return Ok(Some(CacheDecision {
            status: CacheStatus::Bypass,
            lookup: None,
            record: None,
            counted: false,
        }));
    };
    // Looked up in the key memo before the body is parsed: a body seen recently is known to
    // parse (or not) without parsing it again. Not when the controls skip both the lookup and
    // the store (no key is needed).
    let inputs = policy::KeyInputs::new(req, &route.key_name, &route.cache, path, body);
    let probe = controls
        .as_ref()
        .is_ok_and(|c| c.lookup || c.store)
        .then(|| inputs.probe(cache.key_memo()));
    // A body sent as JSON that does not parse as a JSON object or array: the upstream's answer
    // to it is an error or something promptgate cannot judge, so it is never stored or served.
    if declared_json(req)
        && !body.raw().trim_ascii().is_empty()
        && !probe
            .as_ref()
            .and_then(|p| p.parses())
            .unwrap_or_else(|| body.tree().is_some())
    {
        return Ok(Some(CacheDecision {
            status: CacheStatus::Bypass,
            lookup: None,
            record: None,
            counted: false,
        }));
    }
    let controls = controls.map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    let Some(probe) = probe else {
        // Neither lookup nor store (`probe` is there whenever the controls allow either).
        return Ok(Some(CacheDecision {
            status: CacheStatus::Bypass,
            lookup: None,
            record: None,
            counted: true,
        }));
    };
    let key = inputs.key(cache.key_memo(), probe);
    Ok(Some(CacheDecision {
        status: if controls.lookup {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        },
        lookup: controls.lookup.then_some(key),
        counted: true,
        record: controls.store.then(|| RecordPlan {
            cache: cache.clone(),
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

/// Whether the request's `Content-Type` says JSON (`application/json`, or any `…+json`).
fn declared_json(req: &RequestHeader) -> bool {
    let Some(value) = req.headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let essence = value
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    let essence = essence.trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// The request as the cache step reads it.
pub(super) struct Asked<'r, 'b> {
    pub route: &'r Route,
    /// The request path, as the cache key has it.
    pub path: &'r str,
    pub body: &'r ParsedBody<'b>,
    /// Asked before an embedding call (see `semantic::lookup`).
    pub limiter: &'r Limiter,
}

/// Answers from the cache, or from an identical request already in flight, when possible;
/// otherwise says how the upstream answer is to be recorded (and shared, as a leader).
pub(super) async fn answer(
    cache: &Cache,
    session: &mut Session,
    ctx: &mut Ctx,
    asked: Asked<'_, '_>,
    decision: CacheDecision,
) -> Result<CacheStep, Failure> {
    let Asked {
        route,
        path,
        body,
        limiter,
    } = asked;
    let CacheDecision {
        status,
        lookup,
        mut record,
        counted,
    } = decision;
    let Some(key) = lookup else {
        ctx.lookup = counted.then_some(Lookup::Bypass);
        return Ok(CacheStep::GoUpstream { status, record });
    };
    let found = cache
        .lookup_traced(&route.name, &key, &session.req_header().headers)
        .await;
    if let Lookup::Hit(entry) = &found {
        ctx.cache = Some(CacheStatus::Hit);
        ctx.status = entry.status;
        let replayed = respond::cached(session, entry, route.cache.replay, ctx.stamp()).await;
        // Kept in the ctx: the entry's usage is what the hit saved (read in `logging`).
        ctx.lookup = Some(found);
        replayed.map_err(Failure::AfterResponse)?;
        return Ok(CacheStep::Answered);
    }
    ctx.lookup = Some(found);
    if route.cache.semantic.is_some() {
        let request = semantic::Request {
            route,
            path,
            body: body.raw(),
            limiter,
            key,
            store_for: record.as_ref().map(|plan| plan.ttl),
        };
        // Boxed: the embedding call's state is large; inline it would make every request's
        // future (exact hits included) that large.
        match Box::pin(semantic::lookup(cache, session, ctx, request)).await? {
            semantic::Step::Answered => return Ok(CacheStep::Answered),
            semantic::Step::Miss(indexing) => {
                if let Some(plan) = record.as_mut() {
                    plan.semantic = indexing;
                }
            }
        }
    }
    if let Some(plan) = record.as_mut().filter(|_| route.cache.coalesce) {
        match cache.flights().join(key) {
            Role::Leader(leader) => plan.leader = Some(leader),
            Role::Follower(follower) => {
                let followed = follow::serve(
                    session,
                    follower,
                    key,
                    route.cache.coalesce_timeout,
                    ctx.stamp(),
                )
                .await
                .map_err(Failure::AfterResponse)?;
                match followed {
                    Followed::Served(code, usage) => {
                        ctx.lookup = Some(Lookup::Coalesced);
                        ctx.cache = Some(CacheStatus::Hit);
                        ctx.coalesced = true;
                        ctx.status = code;
                        ctx.usage = usage;
                        return Ok(CacheStep::Answered);
                    }
                    Followed::ClientLeft => {
                        ctx.client_left = Some(Waiting::Coalesced);
                        return Err(ProxyError::ClientClosed.into());
                    }
                    Followed::FallThrough => {}
                }
            }
        }
    }
    Ok(CacheStep::GoUpstream { status, record })
}
