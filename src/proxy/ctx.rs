//! Per-request state, carried from answering a request to logging it.

use super::client_gone::Waiting;
use super::limit::LimitStep;
use super::tunnel::Tunnelled;
use crate::cache::{CacheStatus, Lookup};
use crate::limits::headers::Headers;
use crate::metrics::SemanticRecord;
use crate::providers::Usage;
use crate::runtime::Runtime;
use crate::server::inflight::InflightGuard;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// No extra response headers (a route without rate limits).
static NO_HEADERS: Headers = Vec::new();

pub struct Ctx {
    /// Set when the request head has been read.
    pub started: Instant,
    /// Set at the start of `answer`: the table this request uses to its end.
    pub runtime: Option<Arc<Runtime>>,
    /// Set by `answer` once a route matched.
    pub route: Option<String>,
    /// Set by `answer` when an upstream was chosen.
    pub upstream: Option<String>,
    /// Set by `answer` on cached routes, as soon as the route candidates are known:
    /// where the answer came from (`HIT`), or would have (`MISS` for a cache candidate,
    /// `BYPASS` otherwise) — an error answer carries it too (see [`Stamp`]).
    pub cache: Option<CacheStatus>,
    /// Set by `answer` when the answer came from an identical request in flight.
    pub coalesced: bool,
    /// Set by `answer` when the response head was written.
    pub status: u16,
    /// Set by the failover loop: attempts beyond the first on one target, and moves to the
    /// next target.
    pub retries: u32,
    pub failovers: u32,
    /// Set by the failover loop: prompt-cache breakpoints promptgate added to the body sent to
    /// the last target tried (the answering one).
    pub prompt_cache_breakpoints: usize,
    /// Set by the failover loop: time from sending the answering attempt to its response head.
    pub ttfb: Option<Duration>,
    /// Set when the client closed its connection while promptgate waited for it: what it was
    /// waiting for. From then on the upstream call goes on only for the cache or for followers.
    pub client_left: Option<Waiting>,
    /// Set when the answer went out before the request's work ended (a 413 whose body is then
    /// drained, a WebSocket's 101 before its tunnel): the request's duration for metrics and
    /// the access log.
    pub answered_in: Option<Duration>,
    /// Set by `answer` on failure: the error label, for the access log.
    pub error: Option<&'static str>,
    /// Set by `answer`; dropped with the ctx.
    pub inflight: Option<InflightGuard>,
    /// Set by `answer` on cached routes: what the cache did. A hit keeps the entry it
    /// served: its usage is what the hit saved (read in `logging`, after the answer went out).
    pub lookup: Option<Lookup>,
    /// Set by `answer` after relaying an upstream answer: the tokens it reports.
    pub usage: Option<Usage>,
    /// Set by `answer` on semantic routes: what the semantic cache did (for metrics).
    pub semantic: Option<SemanticRecord>,
    /// Set by `answer` when a WebSocket tunnel ended: the bytes it carried.
    pub tunnel: Option<Tunnelled>,
    /// Set by the limit step on rate-limited routes: the verdict, its response headers, and
    /// the bucket to charge the answer's usage to (in `logging`).
    pub limit: Option<LimitStep>,
}

/// What every response promptgate writes for a request carries, whoever writes it (an error,
/// a hit, a follower's answer, a relayed upstream answer): `x-promptgate-cache` on a cached
/// route, and a rate-limited route's `x-ratelimit-*`. Every writer takes one, made from the ctx
/// as the head is written, so no answer can miss what the request has learnt by then.
#[derive(Clone, Copy)]
pub struct Stamp<'a> {
    pub cache: Option<CacheStatus>,
    /// `x-ratelimit-*` (and on a refusal `retry-after`), replacing an upstream's own.
    pub limit: &'a Headers,
}

impl Stamp<'_> {
    /// Nothing to add: a response outside any request's ctx.
    pub fn none() -> Stamp<'static> {
        Stamp {
            cache: None,
            limit: &NO_HEADERS,
        }
    }
}

impl Ctx {
    /// What every response of this request carries, as of now.
    pub fn stamp(&self) -> Stamp<'_> {
        Stamp {
            cache: self.cache,
            limit: self.limit.as_ref().map_or(&NO_HEADERS, |l| &l.headers),
        }
    }

    /// The tokens of the answer: the upstream's, or on a hit those of the entry it replayed.
    pub fn answer_usage(&self) -> Option<&Usage> {
        self.usage.as_ref().or_else(|| match &self.lookup {
            Some(Lookup::Hit(entry) | Lookup::SemanticHit(entry)) => entry.usage(),
            _ => None,
        })
    }
}

impl Default for Ctx {
    fn default() -> Ctx {
        Ctx {
            started: Instant::now(),
            runtime: None,
            route: None,
            upstream: None,
            cache: None,
            coalesced: false,
            retries: 0,
            failovers: 0,
            prompt_cache_breakpoints: 0,
            ttfb: None,
            status: 0,
            client_left: None,
            answered_in: None,
            error: None,
            inflight: None,
            lookup: None,
            usage: None,
            semantic: None,
            tunnel: None,
            limit: None,
        }
    }
}
