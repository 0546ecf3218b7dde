//! One request, from its head to its log line: every request is answered by promptgate itself.
//!
//! Steps for one request (`serve.rs` drives them on Pingora's `HttpServerApp`):
//! 1. `serve` — read the request head off the client connection; start the clock (`Ctx`).
//! 2. `Proxy::answer` — load the runtime snapshot, then [`Proxy::handle`]:
//!    vet the head (`inbound`), find the candidate routes (`choose`), read the body (bounded,
//!    `request_body`; its JSON tree is parsed at most once, on first use, `crate::body`), choose
//!    the route on the body's model (`choose`), the cache step — bypass, lookup, single-flight
//!    (`lookup`) — with the rate-limit step (`limit`) after it, or before it with `count_hits`,
//!    the upstream exchange with retries and failover (`failover`), and the relay of the
//!    answer, recording it for the cache (`exchange`) — or, for a WebSocket upgrade the route
//!    allows, no cache step (the limit step still counts it) and a tunnel after the upstream's
//!    `101` (`tunnel`). `Ok`: the response has been sent — or, when the client left while
//!    promptgate waited for it (`client_gone`), nothing is, and the request is logged as 499.
//!    `Err`: the answer broke off after its head went out: the connection is cut.
//! 3. `Proxy::logging` — charge the answer's usage to its rate-limit bucket (`limit`), then
//!    metrics and the access log line, from the ctx (`report`).
//! 4. The connection goes back to Pingora for the client's next request (HTTP/1.1 keep-alive).
//!
//! See `request_body.rs` for why promptgate owns the upstream exchange, and `serve.rs` for why
//! it is not a Pingora `ProxyHttp`.

mod choose;
mod client_gone;
mod ctx;
mod embed;
mod errors;
mod exchange;
mod failover;
mod follow;
mod heads;
mod inbound;
mod limit;
mod lookup;
mod port;
mod report;
mod request_body;
pub mod request_framing;
pub mod request_path;
mod respond;
pub mod semantic;
mod serve;
mod session;
mod tunnel;

pub use ctx::Ctx;
pub use errors::ProxyError;
pub use port::ProxyPort;
// Public for the fuzz targets (fuzz/), which check its header rewriting on hostile input.
pub use exchange::build_request;

use crate::body::ParsedBody;
use crate::cache::record::RecordPlan;
use crate::cache::Cache;
use crate::config::schema::{PriorityGroup, PromptCaching};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::routing::balance;
use crate::routing::Route;
use crate::runtime::Runtime;
use crate::server::inflight::Inflight;
use arc_swap::ArcSwap;
use bytes::Bytes;
use lookup::CacheStep;
use pingora::apps::HttpServerOptions;
use pingora::http::RequestHeader;
use pingora::Error;
use session::Session;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// State shared by every request: the swappable routing table (whose upstreams hold their
/// connection pools) and the response cache.
pub struct Proxy {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub cache: Arc<Cache>,
    pub inflight: Arc<Inflight>,
    /// Set on SIGTERM: responses then close their connections so clients move on.
    pub draining: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Rate-limit counters, kept across reloads.
    pub limiter: Arc<Limiter>,
    /// How Pingora serves client connections (`serve::server_options`).
    server_options: HttpServerOptions,
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

/// What the way upstream needs from the steps before it.
struct Upstream<'r, 'b> {
    route: &'r Route,
    group: Option<PriorityGroup>,
    path: &'r str,
    body: &'r Bytes,
    parsed: &'r ParsedBody<'b>,
    /// A WebSocket upgrade's `Upgrade` header value.
    upgrade: Option<&'r http::HeaderValue>,
    record: Option<RecordPlan>,
}

impl Proxy {
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        limiter: Arc<Limiter>,
    ) -> Proxy {
        Proxy {
            runtime,
            cache,
            inflight: Arc::default(),
            draining: Arc::default(),
            metrics,
            limiter,
            server_options: serve::server_options(),
        }
    }

    /// Answers one request (see the phase order at the top).
    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        runtime: &Runtime,
    ) -> Result<(), Failure> {
        let path = inbound::vet(session)?;
        let candidates = choose::candidates(runtime, session.req_header(), &path)?;
        // A WebSocket upgrade is never a cache answer: its answers carry no cache status.
        let upgrade = tunnel::websocket(session).cloned();
        // From here on every other answer, an error too, says what the cache did
        // (`Ctx::stamp`); before the body is read, by what its head says (judged only when
        // such an answer is due: nothing else reads it).
        let before_body = |ctx: &mut Ctx, req: &RequestHeader| {
            if upgrade.is_none() {
                ctx.cache = lookup::unreached(&candidates, req, &path, None);
            }
        };
        let body = match request_body::read(session, runtime.max_body_bytes).await {
            Ok(body) => body,
            Err(e) => {
                before_body(ctx, session.req_header());
                return Err(e.into());
            }
        };
        // Parsed on first use, at most once: for the model, the cache key, the model rewrites.
        let parsed = ParsedBody::new(&body);
        let (route, group) = match choose::route(session.req_header(), &path, &candidates, &parsed)
        {
            Ok(chosen) => chosen,
            Err(e) => {
                if !matches!(e, ProxyError::NoRoute { .. }) {
                    before_body(ctx, session.req_header());
                } // on no route at all, no cache status
                return Err(e.into());
            }
        };
        ctx.route = Some(route.name.clone());
        // Judged once, for the status of an answer before the lookup and for the lookup.
        let judged = upgrade
            .is_none()
            .then(|| lookup::judge(route, session.req_header(), &path, &parsed))
            .flatten();
        if upgrade.is_none() {
            ctx.cache = judged.as_ref().map(lookup::Judged::unreached);
        }
        if upgrade.is_some() && !route.websocket {
            return Err(ProxyError::WebSocketRefused {
                route: route.name.clone(),
            }
            .into());
        }

        // With count_hits, every request counts: checked before the cache may answer it.
        let limited = route.rate_limit.as_ref();
        if let Some(l) = limited.filter(|l| l.count_hits) {
            limit::admit(&self.limiter, session.req_header(), ctx, route, l).await?;
        }
        let decision = match upgrade {
            // A tunnel is never cached.
            Some(_) => None,
            None => lookup::decide(&self.cache, session, route, &path, &parsed, judged)?,
        };
        let (cache_status, record) = match decision {
            None => (None, None),
            Some(decision) => {
                let asked = lookup::Asked {
                    route,
                    path: &path,
                    body: &parsed,
                    limiter: &self.limiter,
                };
                match lookup::answer(&self.cache, session, ctx, asked, decision).await? {
                    CacheStep::Answered => return Ok(()),
                    CacheStep::GoUpstream { status, record } => (Some(status), record),
                }
            }
        };
        ctx.cache = cache_status;
        // Boxed: the upstream call's state (connect, send, relay) is large, and inline it would
        // make every request's future that large, hits included, copied whole when the request
        // is boxed (`serve.rs`; a quarter of a hit's instructions, BENCHMARKS.md).
        boxed(|| {
            self.upstream(
                session,
                ctx,
                runtime,
                Upstream {
                    route,
                    group,
                    path: &path,
                    body: &body,
                    parsed: &parsed,
                    upgrade: upgrade.as_ref(),
                    record,
                },
            )
        })
        .await
    }

    /// The request's way upstream, once the cache did not answer: the rate limit (unless it
    /// counted hits too), targets in order, the exchange, relaying the answer (or the tunnel).
    async fn upstream(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        runtime: &Runtime,
        up: Upstream<'_, '_>,
    ) -> Result<(), Failure> {
        let Upstream {
            route,
            group,
            path,
            body,
            parsed,
            upgrade,
            record,
        } = up;
        let limited = route.rate_limit.as_ref();
        // Otherwise only requests about to cost an upstream call are checked (hits are free),
        // unless an embedding call already asked (`semantic::lookup`).
        if let Some(l) = limited.filter(|l| !l.count_hits && ctx.limit.is_none()) {
            limit::admit(&self.limiter, session.req_header(), ctx, route, l).await?;
        }

        let targets = balance::order(route, group);
        let forward = match session.req_header().uri.query() {
            Some(q) => format!("{}?{q}", route.forward_path(path)),
            None => route.forward_path(path).to_string(),
        };
        let answer = failover::exchange(
            route,
            &targets,
            session,
            failover::Outgoing {
                forward: &forward,
                body,
                parsed,
                prompt_caching: (route.prompt_caching == PromptCaching::Auto)
                    .then_some(&*runtime.prompt_cache_minimums),
                upgrade,
                record: record.as_ref(),
            },
            ctx,
        )
        .await?;
        ctx.upstream = Some(answer.target.upstream.name.clone());
        ctx.status = answer.response.header().status.as_u16();
        let mut reader = answer.response.reader();
        if ctx.client_left.is_some() {
            // The call went on without its client, for the cache or for followers.
            exchange::finish_detached(
                &answer.target.upstream,
                answer.response,
                session,
                ctx.stamp(),
                record,
                &mut reader,
            )
            .await;
            reader.finish();
            ctx.usage = reader.into_usage();
            return Err(ProxyError::ClientClosed.into());
        }
        if upgrade.is_some() && ctx.status == 101 {
            // The request's time ends with the 101: a tunnel's lifetime is not a latency.
            ctx.answered_in = Some(ctx.started.elapsed());
            let mut counted = tunnel::Tunnelled::default();
            let tunnelled = tunnel::run(session, answer.response, &mut counted, ctx.stamp()).await;
            drop(answer.slot);
            ctx.tunnel = Some(counted);
            return tunnelled.map_err(Failure::AfterResponse);
        }
        let relayed = exchange::relay(
            &answer.target.upstream,
            answer.response,
            session,
            ctx.stamp(),
            record,
            &mut reader,
        )
        .await;
        drop(answer.slot);
        // Counted even when the client left early: the upstream call was made (and billed).
        reader.finish();
        ctx.usage = reader.into_usage();
        relayed.map_err(Failure::AfterResponse)
    }
}

/// `make()`'s future pinned on the heap, built there: `Box::pin(future)` builds the future on
/// the stack first and then copies all of it into the allocation — an upstream call's state
/// machine is about 5 KB, of which only the arguments were written.
fn boxed<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: written just above.
    Box::into_pin(unsafe { slot.assume_init() })
}
