//! The `logging` phase: a finished request's metrics and access log line, read from its ctx.

use super::ctx::Ctx;
use super::session::Session;
use crate::cache::CacheStatus;
use crate::logging::{self, Access};
use crate::metrics::{Metrics, RequestRecord};
use pingora::Error;

/// Feeds `metrics` and writes the access log line for the request `ctx` describes; `e` is
/// Pingora's error when the request ended in one.
pub(super) fn report(metrics: &Metrics, session: &Session, e: Option<&Error>, ctx: &Ctx) {
    let duration = ctx.answered_in.unwrap_or_else(|| ctx.started.elapsed());
    let route = ctx.route.as_deref();
    // A hit's usage is read from its entry here, after the answer went out.
    let usage = ctx.answer_usage();
    if let (Some(route), Some(waiting)) = (route, ctx.client_left) {
        metrics.client_disconnect(route, waiting.as_str());
    }
    let req = session.req_header();
    metrics.request_done(&RequestRecord {
        method: req.method.as_str(),
        path: req.uri.path(),
        route,
        upstream: ctx.upstream.as_deref(),
        status: ctx.status,
        cache: ctx.cache,
        lookup: ctx.lookup.as_ref(),
        retries: ctx.retries,
        failovers: ctx.failovers,
        duration,
        ttfb: ctx.ttfb,
        usage,
        pricing: ctx.runtime.as_deref().map(|t| &*t.pricing),
        prompt_cache_breakpoints: ctx.prompt_cache_breakpoints,
    });
    if let (Some(route), Some(semantic)) = (route, &ctx.semantic) {
        metrics.semantic(route, semantic);
    }
    if let (Some(route), Some(t)) = (route, ctx.tunnel) {
        metrics.tunnel_done(route, t.sent, t.received);
    }
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
        input_tokens: usage.map(|u| u.prompt()),
        output_tokens: usage.map(|u| u.output),
        cache_read_tokens: usage.map(|u| u.cache_read),
        cache_write_tokens: usage.map(|u| u.cache_write),
        retries: ctx.retries,
        failovers: ctx.failovers,
        error,
    });
}
