//! The rate-limit step of a request: ask the limiter, remember the verdict and its response
//! headers in the ctx, and refuse over-limit requests; after the answer, charge its usage.
//!
//! Where the step runs (see `Proxy::handle`): with `count_hits: false` (the default), after the
//! cache lookup and single-flight, only for requests about to go upstream — hits, and requests
//! answered by an identical one in flight, never reach the limiter (no cost, no count, no
//! `x-ratelimit-*` headers). With `count_hits: true`, before the lookup, so every request counts.
//! On a route with a semantic cache and `count_hits: false`, before the embedding call
//! (`semantic::lookup`): that call costs too, so a semantic hit counts as a request.

use super::ctx::Ctx;
use super::errors::ProxyError;
use crate::cache::CacheStatus;
use crate::config::schema::LimitKey;
use crate::limits::gcra::Kind;
use crate::limits::headers::{self, Headers};
use crate::limits::{self, Limiter, RouteLimit, Verdict, Who};
use crate::metrics::{Metrics, RateLimitRecord};
use crate::routing::Route;
use pingora::http::RequestHeader;
use std::sync::Arc;

/// The limit step's result, kept in the ctx to the end of the request.
pub struct LimitStep {
    pub limit: Arc<RouteLimit>,
    pub who: Who,
    pub verdict: Verdict,
    /// `x-ratelimit-*` (and on a refusal `retry-after`) for the response, whatever it is.
    pub headers: Headers,
}

/// Checks the request against `limit`; `Err` is the 429 (or 503) to answer with.
pub async fn admit(
    limiter: &Limiter,
    req: &RequestHeader,
    ctx: &mut Ctx,
    route: &Route,
    limit: &Arc<RouteLimit>,
) -> Result<(), ProxyError> {
    let who = Who::of(req, limit.key);
    let verdict = limiter.check(&route.name, limit, &who).await;
    let mut headers = verdict
        .outcome()
        .map(|o| headers::ratelimit(limit, o))
        .unwrap_or_default();
    let refusal = match verdict {
        Verdict::Admitted(_) | Verdict::StoreError { admitted: true } => None,
        Verdict::Refused(o) => {
            headers::push_retry_after(&mut headers, o.retry_after_us);
            let kind = o.denied.expect("a refusal names its limit");
            Some(ProxyError::RateLimited {
                route: route.name.clone(),
                kind,
                value: limit.value(kind),
                per_credential: limit.key == LimitKey::Credential,
                retry_after: limits::retry_after(&o),
            })
        }
        Verdict::StoreError { admitted: false } => {
            headers::push_retry_after(&mut headers, 1_000_000);
            Some(ProxyError::LimitStoreDown {
                route: route.name.clone(),
            })
        }
    };
    ctx.limit = Some(LimitStep {
        limit: limit.clone(),
        who,
        verdict,
        headers,
    });
    refusal.map_or(Ok(()), Err)
}

/// The `logging` phase's part: charges the answer's tokens and cost to the bucket the request
/// was admitted by, and records the step in the metrics. Nothing to do on a route without
/// limits, or for a hit that never reached the limiter. A hit (counted only with
/// `count_hits: true`) charges its tokens but no money: nothing was paid.
pub fn settle(limiter: &Limiter, metrics: &Metrics, ctx: &Ctx) {
    let (Some(step), Some(route)) = (&ctx.limit, ctx.route.as_deref()) else {
        return;
    };
    // A hit on a route that counts only what costs (`count_hits: false`: a semantic hit, asked
    // before its embedding call) was a request, not tokens.
    let free_hit = ctx.cache == Some(CacheStatus::Hit) && !step.limit.count_hits;
    if let Some(usage) = ctx
        .answer_usage()
        .filter(|_| step.verdict.admitted() && !free_hit)
    {
        let usd = if ctx.cache == Some(CacheStatus::Hit) {
            0.0
        } else {
            ctx.runtime
                .as_deref()
                .zip(usage.model.as_deref())
                .and_then(|(r, m)| r.pricing.lookup(m))
                .map_or(0.0, |price| price.cost(usage))
        };
        limiter.charge(
            route,
            &step.limit,
            &step.who,
            usage.prompt().saturating_add(usage.output),
            usd,
        );
    }
    metrics.rate_limit(route, &record(step));
}

/// What the metrics record of this step.
pub fn record(step: &LimitStep) -> RateLimitRecord {
    let mut r = RateLimitRecord::default();
    match step.verdict {
        Verdict::Refused(o) => r.refused = o.denied.map(kind_index),
        Verdict::StoreError { admitted } => r.store_error = Some(admitted),
        Verdict::Admitted(_) => {}
    }
    if let (Who::Route, Some(o)) = (&step.who, step.verdict.outcome()) {
        let p = &step.limit.params;
        if p.rpm > 0 {
            r.remaining[0] = Some(o.requests_remaining as f64);
        }
        if p.tpm > 0 {
            r.remaining[1] = Some(o.tokens_remaining as f64);
        }
        if p.budget_nano_usd > 0 {
            r.remaining[2] = Some((p.budget_nano_usd as i64 - o.usd_spent).max(0) as f64 / 1e9);
        }
    }
    r
}

/// The index of a limit in [`crate::metrics::LIMIT_LABELS`].
fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Requests => 0,
        Kind::Tokens => 1,
        Kind::Usd => 2,
    }
}
