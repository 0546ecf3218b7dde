//! Every Prometheus metric promptgate exports, defined in one place.
//!
//! One [`Metrics`] is built at start-up and shared (`Arc`) with whoever records; the admin
//! listener serves [`Metrics::render`] as `GET /metrics`. Names carry the `promptgate_` prefix
//! and follow Prometheus conventions (`_total` counters, base units).
//!
//! Label values are bounded: routes and upstreams come from the config, models from the price
//! table (`other` otherwise), the rest are fixed words and HTTP status codes. Per-request
//! recording touches only pre-resolved handles: each route's series are resolved once, on the
//! route's first request; a finished request ([`Metrics::request_done`]) looks its route up by
//! name once (no allocation) and records everything through that handle.

use crate::cache::{Cache, CacheStatus, Lookup};
use crate::pricing::{Pricing, OTHER};
use crate::providers::Usage;
use crate::stats::Activity;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The content type of [`Metrics::render`]'s output (Prometheus text exposition format).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Latency buckets, 100 µs to 60 s, so sub-millisecond hits and minute-long generations both
/// resolve.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 20.0, 30.0, 60.0,
];

/// The `route` label of requests no route matched.
pub const NO_ROUTE: &str = "none";
/// The `upstream` label of requests that reached no upstream (hits, errors before one).
pub const NO_UPSTREAM: &str = "none";

/// Result label values of `promptgate_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Error,
}

impl ReloadResult {
    fn label(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Error => "error",
        }
    }
}

/// The counters of `promptgate_config_watch_events_total`, handed to the config file watcher.
#[derive(Debug, Clone)]
pub struct WatchCounters {
    /// Events about the config file (or that may hide one: its directory, a queue overflow).
    pub config: IntCounter,
    /// Events about another file in the config's directory: each woke the watcher for nothing.
    pub other: IntCounter,
}

/// The `cache` label of requests the cache had no part in (not a cached route, or the request
/// failed before the cache was asked).
pub const NO_CACHE: &str = "none";

/// `cache` label series, in the order of [`cache_index`].
const CACHE_SERIES: [Option<CacheStatus>; 4] = [
    Some(CacheStatus::Hit),
    Some(CacheStatus::Miss),
    Some(CacheStatus::Bypass),
    None,
];

/// The position of a request's `cache` label in [`CACHE_SERIES`].
fn cache_index(cache: Option<CacheStatus>) -> usize {
    cache.map_or(CacheStatus::ALL.len(), |c| c as usize)
}

fn cache_label(cache: Option<CacheStatus>) -> &'static str {
    cache.map_or(NO_CACHE, CacheStatus::label)
}

/// Buckets of the semantic similarity histograms: fine near the usual thresholds (0.85–0.99).
const SIMILARITY_BUCKETS: &[f64] = &[
    0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.87, 0.89, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97,
    0.98, 0.99, 0.995, 1.0,
];

/// What the semantic cache did for one request (fed from the ctx in the logging phase).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SemanticRecord {
    /// Why the request was not looked up semantically (`exact_only`, `operation`, `non_text`,
    /// `too_long`, …); `None` when it was.
    pub skipped: Option<&'static str>,
    /// The embedder upstream, how long its call took, and its error label if it failed.
    pub embed: Option<(String, Duration, Option<&'static str>)>,
    /// Time spent searching and fetching, without the embedder call.
    pub search: Option<Duration>,
    /// Similarity of the entry served.
    pub served: Option<f32>,
    /// Similarity of the entry that shadow mode would have served.
    pub shadow: Option<f32>,
    /// Near-candidates turned down: refused by the literal guard (at or above the threshold),
    /// and the best one below the threshold.
    pub refused_by_guard: Vec<f32>,
    pub below_threshold: Option<f32>,
}

/// The semantic cache's series.
struct SemanticMetrics {
    similarity: HistogramVec,
    embed_duration: HistogramVec,
    embed_errors: IntCounterVec,
    search_duration: HistogramVec,
    shadow_hits: IntCounterVec,
    skipped: IntCounterVec,
}

impl SemanticMetrics {
    fn new(r: &Registry) -> SemanticMetrics {
        let opts = HistogramOpts::new(
            "promptgate_semantic_similarity",
            "Cosine similarity of semantic candidates, by route and outcome: served, shadow (would have been served), guard_refused (at or above the threshold, refused by the literal guard), below_threshold (the nearest candidate under the threshold).",
        )
        .buckets(SIMILARITY_BUCKETS.to_vec());
        SemanticMetrics {
            similarity: register(
                r,
                HistogramVec::new(opts, &["route", "outcome"]).expect("valid metric"),
            ),
            embed_duration: histogram_vec(
                r,
                "promptgate_semantic_embed_duration_seconds",
                "Time of embedding calls for semantic lookups, failed ones included, by embedder upstream.",
                &["upstream"],
            ),
            embed_errors: counter_vec(
                r,
                "promptgate_semantic_embed_errors_total",
                "Embedding calls that gave no vector (the request went on as a miss), by embedder upstream and reason (timeout, connect, status, invalid).",
                &["upstream", "reason"],
            ),
            search_duration: histogram_vec(
                r,
                "promptgate_semantic_search_duration_seconds",
                "Time of a semantic search after the embedding (read the context's vectors, compare, literal guard, fetch the entry), by route.",
                &["route"],
            ),
            shadow_hits: counter_vec(
                r,
                "promptgate_semantic_shadow_hits_total",
                "Semantic hits that shadow mode found but did not serve, by route.",
                &["route"],
            ),
            skipped: counter_vec(
                r,
                "promptgate_semantic_skipped_total",
                "Requests on semantic routes not looked up semantically, by route and reason (exact_only, operation, not_json, not_user, non_text, empty, too_long).",
                &["route", "reason"],
            ),
        }
    }
}

/// Token kinds, the `kind` label of `promptgate_tokens_total`, in [`Usage`]'s terms: `input`
/// (prompt tokens not from or to the provider's prompt cache), `output`, `cache_read` and
/// `cache_write` (prompt tokens read from and written to it). They do not overlap.
pub const KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

/// What one finished request reports (from its ctx, in the `logging` phase).
pub struct RequestRecord<'a> {
    pub method: &'a str,
    /// The request path, without the query string (some providers take the API key there).
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub status: u16,
    /// Where the answer came from; `None` when the cache had no part in it.
    pub cache: Option<CacheStatus>,
    /// What the cache step did, on cached routes.
    pub lookup: Option<&'a Lookup>,
    /// Upstream attempts repeated on the same target, and moves to a route's next target.
    pub retries: u32,
    pub failovers: u32,
    pub duration: Duration,
    /// Time to the upstream's response head, when the answer came from upstream.
    pub ttfb: Option<Duration>,
    pub usage: Option<&'a Usage>,
    pub pricing: Option<&'a Pricing>,
    /// Prompt-cache breakpoints promptgate added to the request it sent upstream.
    pub prompt_cache_breakpoints: usize,
}

/// The `limit` label values of the rate-limit metrics, in [`RateLimitRecord::remaining`]'s order.
pub const LIMIT_LABELS: [&str; 3] = ["requests_per_minute", "tokens_per_minute", "usd_per_day"];

/// What one request's rate-limit step reports (in the `logging` phase).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitRecord {
    /// The limit that refused the request (index into [`LIMIT_LABELS`]).
    pub refused: Option<usize>,
    /// The counter store did not answer: `Some(true)` when the request was admitted anyway.
    pub store_error: Option<bool>,
    /// With `key: route`: what is left of each limit set (requests, tokens, US dollars).
    pub remaining: [Option<f64>; 3],
}

/// One rate-limited route's series, resolved on its first limited request.
struct LimitMetrics {
    refused: [IntCounter; 3],
    /// [refused, admitted]
    store_errors: [IntCounter; 2],
    /// Resolved on the first value: a per-credential route has no such series.
    remaining: [OnceLock<Gauge>; 3],
}

/// A `requests_total` series of one route, by (upstream, status, cache), with the TTFB
/// histogram of its upstream.
struct RequestSeries {
    upstream: Box<str>,
    status: u16,
    cache: Option<CacheStatus>,
    requests: IntCounter,
    /// Resolved on the series' first TTFB (requests that reached no upstream have none).
    ttfb: OnceLock<Histogram>,
}

/// One route's series, resolved once.
pub struct RouteMetrics {
    lookups: [IntCounter; 6],
    duration: [Histogram; 4],
    retries: IntCounter,
    failovers: IntCounter,
    breakpoints: IntCounter,
    /// `requests_total` by (upstream, status, cache): a handful per route, so a linear scan.
    requests: RwLock<Vec<RequestSeries>>,
    models: RwLock<Vec<Arc<ModelMetrics>>>,
    /// Only routes with `rate_limit` get these series.
    limits: OnceLock<LimitMetrics>,
}

/// One (route, model) pair's token and cost series.
struct ModelMetrics {
    label: Box<str>,
    /// [kind][cache label]
    tokens: [[IntCounter; 4]; 4],
    cost: Counter,
    saved: Counter,
    prompt_cache_saved: Counter,
    prompt_cache_write_premium: Counter,
}

/// Lookup counts of one route, for `GET /cache/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupCounts {
    pub hits: u64,
    pub misses: u64,
    pub bypasses: u64,
    pub coalesced: u64,
    pub errors: u64,
    pub semantic_hits: u64,
}

impl LookupCounts {
    /// Answers that made no upstream call over all lookups that could have (bypasses excluded).
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hits + self.coalesced + self.semantic_hits;
        let asked = served + self.misses + self.errors;
        if asked == 0 {
            0.0
        } else {
            served as f64 / asked as f64
        }
    }

    fn add(&mut self, other: &LookupCounts) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.bypasses += other.bypasses;
        self.coalesced += other.coalesced;
        self.errors += other.errors;
        self.semantic_hits += other.semantic_hits;
    }
}

/// US dollars saved, for `GET /cache/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Savings {
    /// What the response cache's hits would have cost upstream.
    pub response_cache: f64,
    /// What the providers' prompt caching saved, net of the write premium (negative while
    /// cache writes outweigh reads).
    pub prompt_cache: f64,
}

impl Savings {
    fn add(&mut self, other: &Savings) {
        self.response_cache += other.response_cache;
        self.prompt_cache += other.prompt_cache;
    }
}

pub struct Metrics {
    /// Our own registry rather than the process-global default, so tests and embedders can
    /// build several independent instances.
    registry: Registry,
    config_reloads: IntCounterVec,
    config_last_reload_success: Gauge,
    config_watch_events: IntCounterVec,
    requests: IntCounterVec,
    /// `promptgate_websocket_bytes_total{route,direction}`.
    websocket_bytes: IntCounterVec,
    cache_lookups: IntCounterVec,
    request_duration: HistogramVec,
    upstream_ttfb: HistogramVec,
    upstream_retries: IntCounterVec,
    upstream_failovers: IntCounterVec,
    client_disconnects: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    cost_saved: CounterVec,
    prompt_cache_saved: CounterVec,
    prompt_cache_write_premium: CounterVec,
    prompt_cache_breakpoints: IntCounterVec,
    rate_limited: IntCounterVec,
    rate_limit_store_errors: IntCounterVec,
    rate_limit_remaining: GaugeVec,
    redis_store_errors: IntCounter,
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
    inflight: IntGauge,
    access_log_dropped: IntCounter,
    routes: RwLock<HashMap<String, Arc<RouteMetrics>, foldhash::fast::RandomState>>,
    semantic: SemanticMetrics,
    upstreams: RwLock<HashMap<String, Histogram, foldhash::fast::RandomState>>,
    /// The Redis store last sampled (by address) and its error count then: the store keeps its
    /// own count, and a reload may replace the store.
    redis_errors_seen: Mutex<(usize, u64)>,
    /// Recent requests and the last minutes' rates, for the dashboard (fed from here).
    activity: Activity,
}

/// Registers `metric` and returns it; the definitions are static, so failure is a bug.
fn register<C: Collector + Clone + 'static>(registry: &Registry, metric: C) -> C {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(registry, vec)
}

fn float_counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let vec = CounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(registry, vec)
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register(
        registry,
        HistogramVec::new(opts, labels).expect("valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let config_reloads = counter_vec(
            r,
            "promptgate_config_reloads_total",
            "Config reload attempts, by result (success or error).",
            &["result"],
        );
        let config_last_reload_success = register(
            r,
            Gauge::new(
                "promptgate_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load (start-up or reload).",
            )
            .expect("valid metric"),
        );
        // Both series exist from the start, so `rate()` and alerts see a 0 before the first error.
        for result in [ReloadResult::Success, ReloadResult::Error] {
            config_reloads.with_label_values(&[result.label()]);
        }
        let config_watch_events = counter_vec(
            r,
            "promptgate_config_watch_events_total",
            "Events the config file watcher received, by file: config (the config file, its ConfigMap link) or other (another file in its directory).",
            &["file"],
        );
        for file in ["config", "other"] {
            config_watch_events.with_label_values(&[file]);
        }
        let requests = counter_vec(
            r,
            "promptgate_requests_total",
            "Requests answered, by route, upstream, HTTP status and cache result (hit, miss, bypass, none).",
            &["route", "upstream", "status", "cache"],
        );
        let websocket_bytes = counter_vec(
            r,
            "promptgate_websocket_bytes_total",
            "Bytes carried by WebSocket tunnels, by route and direction (to_upstream, to_client).",
            &["route", "direction"],
        );
        let cache_lookups = counter_vec(
            r,
            "promptgate_cache_lookups_total",
            "Cache lookups by route and result (hit, miss, bypass, coalesced, error, semantic_hit).",
            &["route", "result"],
        );
        let request_duration = histogram_vec(
            r,
            "promptgate_request_duration_seconds",
            "Time from the request's arrival to its last response byte, by route and cache result.",
            &["route", "cache"],
        );
        let upstream_ttfb = histogram_vec(
            r,
            "promptgate_upstream_ttfb_seconds",
            "Time from sending a request upstream to the upstream's response head, by upstream.",
            &["upstream"],
        );
        let upstream_retries = counter_vec(
            r,
            "promptgate_upstream_retries_total",
            "Upstream attempts repeated after a retryable failure, by route.",
            &["route"],
        );
        let upstream_failovers = counter_vec(
            r,
            "promptgate_upstream_failovers_total",
            "Switches to a route's next target after its current one failed, by route.",
            &["route"],
        );
        let client_disconnects = counter_vec(
            r,
            "promptgate_client_disconnects_total",
            "Requests whose client closed its connection before the response started (logged as status 499), by route and what promptgate was waiting for (upstream, coalesced, slot, backoff). The upstream call is cancelled then, unless it is still wanted for the cache or for coalesced requests.",
            &["route", "waiting"],
        );
        let tokens = counter_vec(
            r,
            "promptgate_tokens_total",
            "Tokens in answers, as the provider reported them, by route, model (price-table entry or other), kind (input: prompt tokens not from or to the provider's prompt cache; output; cache_read and cache_write: prompt tokens read from and written to it) and cache result (hit: served from the response cache, not paid again).",
            &["route", "model", "kind", "cache"],
        );
        let cost = float_counter_vec(
            r,
            "promptgate_cost_usd_total",
            "What upstream calls cost in US dollars (each kind of token times its price in the price table), by route and model.",
            &["route", "model"],
        );
        let cost_saved = float_counter_vec(
            r,
            "promptgate_cost_saved_usd_total",
            "What cache hits would have cost upstream in US dollars, by route and model.",
            &["route", "model"],
        );
        let prompt_cache_saved = float_counter_vec(
            r,
            "promptgate_prompt_cache_saved_usd_total",
            "What the providers' prompt caches saved in US dollars: tokens read from them, at the input price less the cache-read price, by route and model. Net of cache writes: minus promptgate_prompt_cache_write_premium_usd_total.",
            &["route", "model"],
        );
        let prompt_cache_write_premium = float_counter_vec(
            r,
            "promptgate_prompt_cache_write_premium_usd_total",
            "What writing to the providers' prompt caches cost above the input price in US dollars (Anthropic bills writes at 1.25x), by route and model.",
            &["route", "model"],
        );
        let prompt_cache_breakpoints = counter_vec(
            r,
            "promptgate_prompt_cache_breakpoints_total",
            "Prompt-cache breakpoints (Anthropic cache_control) promptgate added to requests it sent upstream, by route (prompt_caching: auto).",
            &["route"],
        );
        let rate_limited = counter_vec(
            r,
            "promptgate_rate_limited_total",
            "Requests refused with 429 by a route's rate_limit, by route and limit (requests_per_minute, tokens_per_minute, usd_per_day).",
            &["route", "limit"],
        );
        let rate_limit_store_errors = counter_vec(
            r,
            "promptgate_rate_limit_store_errors_total",
            "Rate-limit checks the counter store (Redis) could not answer, by route and decision (admitted: on_store_error allow; refused: deny).",
            &["route", "decision"],
        );
        let rate_limit_remaining = register(
            r,
            GaugeVec::new(
                Opts::new(
                    "promptgate_rate_limit_remaining",
                    "What is left of a route's shared (key: route) limit as of its last check: requests, tokens, or US dollars today; by route and limit.",
                ),
                &["route", "limit"],
            )
            .expect("valid metric"),
        );
        let store_errors = counter_vec(
            r,
            "promptgate_cache_store_errors_total",
            "Errors of the shared cache store (timeouts, connection failures, dropped writes), by backend.",
            &["backend"],
        );
        let redis_store_errors = store_errors.with_label_values(&["redis"]);
        let cache_entries = gauge(
            r,
            "promptgate_cache_entries",
            "Entries in the in-memory cache store.",
        );
        let cache_bytes = gauge(
            r,
            "promptgate_cache_bytes",
            "Bytes held by the in-memory cache store.",
        );
        let inflight = gauge(
            r,
            "promptgate_inflight_requests",
            "Requests being answered right now.",
        );
        let access_log_dropped = register(
            r,
            IntCounter::new(
                "promptgate_access_log_dropped_total",
                "Log lines (access log lines, and any other) dropped because the log writer's queue was full.",
            )
            .expect("valid metric"),
        );
        let build_info = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "promptgate_build_info",
                    "Always 1; the version label says which promptgate is running.",
                ),
                &["version"],
            )
            .expect("valid metric"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let semantic = SemanticMetrics::new(r);
        Metrics {
            semantic,
            registry,
            config_reloads,
            config_last_reload_success,
            config_watch_events,
            requests,
            websocket_bytes,
            cache_lookups,
            request_duration,
            upstream_ttfb,
            upstream_retries,
            upstream_failovers,
            client_disconnects,
            tokens,
            cost,
            cost_saved,
            prompt_cache_saved,
            prompt_cache_write_premium,
            prompt_cache_breakpoints,
            rate_limited,
            rate_limit_store_errors,
            rate_limit_remaining,
            redis_store_errors,
            cache_entries,
            cache_bytes,
            inflight,
            access_log_dropped,
            routes: RwLock::default(),
            upstreams: RwLock::default(),
            redis_errors_seen: Mutex::new((0, 0)),
            activity: Activity::default(),
        }
    }

    /// The series of `route` (a configured route name, or [`NO_ROUTE`]), resolved on first use.
    pub fn route(&self, route: &str) -> Arc<RouteMetrics> {
        if let Some(m) = read(&self.routes).get(route) {
            return m.clone();
        }
        write(&self.routes)
            .entry(route.to_string())
            .or_insert_with(|| Arc::new(self.resolve_route(route)))
            .clone()
    }

    fn resolve_route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            lookups: Lookup::LABELS.map(|r| self.cache_lookups.with_label_values(&[route, r])),
            duration: CACHE_SERIES.map(|c| {
                self.request_duration
                    .with_label_values(&[route, cache_label(c)])
            }),
            retries: self.upstream_retries.with_label_values(&[route]),
            failovers: self.upstream_failovers.with_label_values(&[route]),
            breakpoints: self.prompt_cache_breakpoints.with_label_values(&[route]),
            requests: RwLock::default(),
            models: RwLock::default(),
            limits: OnceLock::new(),
        }
    }

    /// Records one rate-limit step of a request on `route`.
    pub fn rate_limit(&self, route: &str, r: &RateLimitRecord) {
        let m = self.route(route);
        let l = m.limits.get_or_init(|| LimitMetrics {
            refused: LIMIT_LABELS.map(|l| self.rate_limited.with_label_values(&[route, l])),
            store_errors: ["refused", "admitted"]
                .map(|d| self.rate_limit_store_errors.with_label_values(&[route, d])),
            remaining: Default::default(),
        });
        if let Some(i) = r.refused {
            l.refused[i].inc();
        }
        if let Some(admitted) = r.store_error {
            l.store_errors[usize::from(admitted)].inc();
        }
        for (i, value) in r.remaining.iter().enumerate() {
            if let Some(v) = value {
                l.remaining[i]
                    .get_or_init(|| {
                        self.rate_limit_remaining
                            .with_label_values(&[route, LIMIT_LABELS[i]])
                    })
                    .set(*v);
            }
        }
    }

    /// Records the bytes a finished WebSocket tunnel carried each way (its request is counted
    /// by [`Metrics::request_done`], with status 101).
    pub fn tunnel_done(&self, route: &str, to_upstream: u64, to_client: u64) {
        self.websocket_bytes
            .with_label_values(&[route, "to_upstream"])
            .inc_by(to_upstream);
        self.websocket_bytes
            .with_label_values(&[route, "to_client"])
            .inc_by(to_client);
    }

    /// A request on `route` lost its client while promptgate waited for `waiting` (a label
    /// value: upstream, coalesced, slot, backoff).
    pub fn client_disconnect(&self, route: &str, waiting: &str) {
        self.client_disconnects
            .with_label_values(&[route, waiting])
            .inc();
    }

    /// Records a finished request: its count, cache lookup, retries and failovers, latency,
    /// upstream TTFB, tokens and cost. The route's series are looked up once, here.
    pub fn request_done(&self, r: &RequestRecord) {
        let route_name = r.route.unwrap_or(NO_ROUTE);
        let route = self.route(route_name);
        if let Some(lookup) = r.lookup {
            route.lookups[lookup.index()].inc();
        }
        self.activity.recent.push(r);
        if r.retries > 0 {
            route.retries.inc_by(r.retries.into());
        }
        if r.failovers > 0 {
            route.failovers.inc_by(r.failovers.into());
        }
        if r.prompt_cache_breakpoints > 0 {
            route.breakpoints.inc_by(r.prompt_cache_breakpoints as u64);
        }
        route.duration[cache_index(r.cache)].observe(r.duration.as_secs_f64());
        if let Some(usage) = r.usage {
            let price = r
                .pricing
                .zip(usage.model.as_deref())
                .and_then(|(p, m)| p.lookup(m));
            let label = price.map_or(OTHER, |p| p.label.as_str());
            let m = route.model(self, route_name, label);
            let counts = [
                usage.input,
                usage.output,
                usage.cache_read,
                usage.cache_write,
            ];
            // Zeros skipped: the series exist already (`model`), and an add of nothing is still
            // an atomic write to a counter every request thread shares.
            for (kind, n) in counts.into_iter().enumerate() {
                if n > 0 {
                    m.tokens[kind][cache_index(r.cache)].inc_by(n);
                }
            }
            let add = |counter: &Counter, usd: f64| {
                if usd != 0.0 {
                    counter.inc_by(usd);
                }
            };
            if let Some(price) = price {
                let cost = price.cost(usage);
                if r.cache == Some(CacheStatus::Hit) {
                    // The answer's whole cost, its prompt-cache discount included, is saved.
                    add(&m.saved, cost);
                } else {
                    add(&m.cost, cost);
                    add(&m.prompt_cache_saved, price.prompt_cache_saved(usage));
                    add(
                        &m.prompt_cache_write_premium,
                        price.prompt_cache_write_extra(usage),
                    );
                }
            }
        }
        // Counted last: whoever reads this request in `requests_total` (the dashboard's
        // `/stats`, a scrape) reads its duration, tokens and cost too.
        route.count_request(self, route_name, r);
    }

    fn upstream_ttfb(&self, upstream: &str) -> Histogram {
        if let Some(h) = read(&self.upstreams).get(upstream) {
            return h.clone();
        }
        write(&self.upstreams)
            .entry(upstream.to_string())
            .or_insert_with(|| self.upstream_ttfb.with_label_values(&[upstream]))
            .clone()
    }

    /// Records what the semantic cache did for one request on `route`.
    pub fn semantic(&self, route: &str, r: &SemanticRecord) {
        let m = &self.semantic;
        if let Some(reason) = r.skipped {
            m.skipped.with_label_values(&[route, reason]).inc();
        }
        if let Some((upstream, took, error)) = &r.embed {
            m.embed_duration
                .with_label_values(&[upstream.as_str()])
                .observe(took.as_secs_f64());
            if let Some(reason) = error {
                m.embed_errors
                    .with_label_values(&[upstream.as_str(), reason])
                    .inc();
            }
        }
        if let Some(took) = r.search {
            m.search_duration
                .with_label_values(&[route])
                .observe(took.as_secs_f64());
        }
        let similarity = |outcome: &str, value: f32| {
            m.similarity
                .with_label_values(&[route, outcome])
                .observe(f64::from(value));
        };
        if let Some(s) = r.served {
            similarity("served", s);
        }
        if let Some(s) = r.shadow {
            similarity("shadow", s);
            m.shadow_hits.with_label_values(&[route]).inc();
        }
        for s in &r.refused_by_guard {
            similarity("guard_refused", *s);
        }
        if let Some(s) = r.below_threshold {
            similarity("below_threshold", s);
        }
    }

    /// Lookup counts per route seen so far, and their sum.
    pub fn lookup_counts(&self) -> (LookupCounts, Vec<(String, LookupCounts)>) {
        let mut total = LookupCounts::default();
        let mut per_route: Vec<(String, LookupCounts)> = read(&self.routes)
            .iter()
            .map(|(name, m)| {
                // In `Lookup::LABELS` order.
                let [hits, misses, bypasses, coalesced, errors, semantic_hits] =
                    m.lookups.each_ref().map(IntCounter::get);
                let counts = LookupCounts {
                    hits,
                    misses,
                    bypasses,
                    coalesced,
                    errors,
                    semantic_hits,
                };
                total.add(&counts);
                (name.clone(), counts)
            })
            .filter(|(_, c)| *c != LookupCounts::default())
            .collect();
        per_route.sort_by(|a, b| a.0.cmp(&b.0));
        (total, per_route)
    }

    /// US dollars saved per route seen so far (routes that saved nothing left out), and their
    /// sum.
    pub fn savings(&self) -> (Savings, Vec<(String, Savings)>) {
        let mut total = Savings::default();
        let mut per_route: Vec<(String, Savings)> = read(&self.routes)
            .iter()
            .map(|(name, m)| {
                let mut saved = Savings::default();
                for model in read(&m.models).iter() {
                    saved.response_cache += model.saved.get();
                    saved.prompt_cache +=
                        model.prompt_cache_saved.get() - model.prompt_cache_write_premium.get();
                }
                total.add(&saved);
                (name.clone(), saved)
            })
            .filter(|(_, s)| *s != Savings::default())
            .collect();
        per_route.sort_by(|a, b| a.0.cmp(&b.0));
        (total, per_route)
    }

    /// Samples what is cheaper to read at scrape time than to track per request: the memory
    /// store's size, the shared store's error count, and the requests in flight.
    pub fn sample(&self, cache: &Cache, inflight: usize) {
        let (entries, bytes) = cache.memory_usage();
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.inflight
            .set(i64::try_from(inflight).unwrap_or(i64::MAX));
        if let Some(redis) = cache.redis() {
            let id = Arc::as_ptr(&redis) as usize;
            let count = redis.error_count();
            let mut seen = self
                .redis_errors_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // A store replaced by a reload counts from zero again.
            let base = if seen.0 == id { seen.1 } else { 0 };
            self.redis_store_errors.inc_by(count.saturating_sub(base));
            *seen = (id, count);
        }
    }

    /// Brings `promptgate_access_log_dropped_total` up to `total`, the log lines dropped since
    /// start (sampled at scrape time from [`crate::logging::dropped_lines`]).
    pub fn log_lines_dropped(&self, total: u64) {
        let counted = self.access_log_dropped.get();
        self.access_log_dropped
            .inc_by(total.saturating_sub(counted));
    }

    /// The config was loaded at start-up: not a reload, but it is the config in force now.
    pub fn config_loaded(&self) {
        self.config_last_reload_success.set(unix_now());
    }

    /// Counts one reload attempt; a success also moves the last-success timestamp.
    pub fn config_reloaded(&self, result: ReloadResult) {
        self.config_reloads
            .with_label_values(&[result.label()])
            .inc();
        if result == ReloadResult::Success {
            self.config_loaded();
        }
    }

    /// The watcher's event counters (cheap handles on the same series).
    pub fn config_watch_counters(&self) -> WatchCounters {
        WatchCounters {
            config: self.config_watch_events.with_label_values(&["config"]),
            other: self.config_watch_events.with_label_values(&["other"]),
        }
    }

    /// Recent requests and the sampled time series, for the dashboard.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Every metric's current values (what [`Metrics::render`] prints).
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.gather(), &mut out)
            .expect("encoding gathered metrics into memory does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl RouteMetrics {
    /// Counts the request in its `requests_total` series and observes its upstream TTFB.
    fn count_request(&self, metrics: &Metrics, route: &str, r: &RequestRecord) {
        let upstream = r.upstream.unwrap_or(NO_UPSTREAM);
        let record = |series: &RequestSeries| {
            series.requests.inc();
            if let (Some(upstream), Some(ttfb)) = (r.upstream, r.ttfb) {
                series
                    .ttfb
                    .get_or_init(|| metrics.upstream_ttfb(upstream))
                    .observe(ttfb.as_secs_f64());
            }
        };
        let matches = |e: &&RequestSeries| {
            &*e.upstream == upstream && e.status == r.status && e.cache == r.cache
        };
        if let Some(series) = read(&self.requests).iter().find(matches) {
            return record(series);
        }
        let mut all = write(&self.requests);
        if let Some(series) = all.iter().find(matches) {
            return record(series);
        }
        let series = RequestSeries {
            upstream: upstream.into(),
            status: r.status,
            cache: r.cache,
            requests: metrics.requests.with_label_values(&[
                route,
                upstream,
                &r.status.to_string(),
                cache_label(r.cache),
            ]),
            ttfb: OnceLock::new(),
        };
        record(&series);
        all.push(series);
    }

    fn model(&self, metrics: &Metrics, route: &str, label: &str) -> Arc<ModelMetrics> {
        if let Some(m) = read(&self.models).iter().find(|m| &*m.label == label) {
            return m.clone();
        }
        let mut all = write(&self.models);
        if let Some(m) = all.iter().find(|m| &*m.label == label) {
            return m.clone();
        }
        let m = Arc::new(ModelMetrics {
            label: label.into(),
            tokens: KINDS.map(|kind| {
                CACHE_SERIES.map(|c| {
                    metrics
                        .tokens
                        .with_label_values(&[route, label, kind, cache_label(c)])
                })
            }),
            cost: metrics.cost.with_label_values(&[route, label]),
            saved: metrics.cost_saved.with_label_values(&[route, label]),
            prompt_cache_saved: metrics
                .prompt_cache_saved
                .with_label_values(&[route, label]),
            prompt_cache_write_premium: metrics
                .prompt_cache_write_premium
                .with_label_values(&[route, label]),
        });
        all.push(m.clone());
        m
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Entry;

    #[test]
    fn dropped_log_lines_follow_the_writers_count() {
        let m = Metrics::new();
        assert!(m
            .render()
            .contains("\npromptgate_access_log_dropped_total 0\n"));
        m.log_lines_dropped(8);
        m.log_lines_dropped(8);
        assert!(m
            .render()
            .contains("\npromptgate_access_log_dropped_total 8\n"));
        m.log_lines_dropped(11);
        assert!(m
            .render()
            .contains("\npromptgate_access_log_dropped_total 11\n"));
    }

    #[test]
    fn renders_reload_counters_and_timestamp() {
        let m = Metrics::new();
        let before = m.render();
        assert!(
            before.contains(r#"promptgate_config_reloads_total{result="error"} 0"#),
            "{before}"
        );
        m.config_reloaded(ReloadResult::Success);
        m.config_reloaded(ReloadResult::Error);
        m.config_reloaded(ReloadResult::Error);
        let text = m.render();
        assert!(
            text.contains(r#"promptgate_config_reloads_total{result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"promptgate_config_reloads_total{result="error"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE promptgate_config_last_reload_success_timestamp_seconds gauge")
        );
        let ts: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("promptgate_config_last_reload_success_timestamp_seconds ")
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!(ts > 1.0e9, "{ts}");
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counts_requests_tokens_and_cost_by_cache_result() {
        let m = Metrics::new();
        let pricing = Pricing::default();
        let usage = Usage {
            input: 1000,
            output: 500,
            cache_read: 2000,
            cache_write: 0,
            model: Some("gpt-4o-mini-2024-07-18".into()),
        };
        let record = |cache, lookup, ttfb, retries| RequestRecord {
            method: "POST",
            path: "/openai/v1/chat/completions",
            route: Some("openai"),
            upstream: (cache != Some(CacheStatus::Hit)).then_some("mock"),
            status: 200,
            cache,
            lookup,
            retries,
            failovers: retries * 2,
            duration: Duration::from_millis(3),
            ttfb,
            usage: Some(&usage),
            pricing: Some(&pricing),
            prompt_cache_breakpoints: 0,
        };
        let hit = Lookup::Hit(Arc::new(Entry {
            status: 200,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            chunks: Vec::new(),
            stored_at: 0,
            ttl: Duration::from_secs(60),
            usage: Default::default(),
            head: Default::default(),
        }));
        // Twice: the second finds the series (and its TTFB histogram) resolved by the first.
        for _ in 0..2 {
            m.request_done(&record(
                Some(CacheStatus::Miss),
                Some(&Lookup::Miss),
                Some(Duration::from_millis(2)),
                1,
            ));
        }
        for _ in 0..3 {
            m.request_done(&record(Some(CacheStatus::Hit), Some(&hit), None, 0));
        }
        let t = m.render();
        let v = |s: &str| value(&t, s);
        assert_eq!(
            v(
                r#"promptgate_requests_total{cache="miss",route="openai",status="200",upstream="mock"}"#
            ),
            2.0
        );
        assert_eq!(
            v(
                r#"promptgate_requests_total{cache="hit",route="openai",status="200",upstream="none"}"#
            ),
            3.0
        );
        assert_eq!(
            v(r#"promptgate_cache_lookups_total{result="hit",route="openai"}"#),
            3.0
        );
        assert_eq!(
            v(r#"promptgate_cache_lookups_total{result="coalesced",route="openai"}"#),
            0.0
        );
        assert_eq!(
            v(r#"promptgate_request_duration_seconds_count{cache="hit",route="openai"}"#),
            3.0
        );
        assert_eq!(
            v(r#"promptgate_upstream_ttfb_seconds_count{upstream="mock"}"#),
            2.0
        );
        assert_eq!(
            v(r#"promptgate_upstream_retries_total{route="openai"}"#),
            2.0
        );
        assert_eq!(
            v(r#"promptgate_upstream_failovers_total{route="openai"}"#),
            4.0
        );
        assert_eq!(
            v(
                r#"promptgate_tokens_total{cache="hit",kind="input",model="gpt-4o-mini",route="openai"}"#
            ),
            3000.0
        );
        assert_eq!(
            v(
                r#"promptgate_tokens_total{cache="miss",kind="output",model="gpt-4o-mini",route="openai"}"#
            ),
            1000.0
        );
        assert_eq!(
            v(
                r#"promptgate_tokens_total{cache="miss",kind="cache_read",model="gpt-4o-mini",route="openai"}"#
            ),
            4000.0
        );
        assert_eq!(
            v(
                r#"promptgate_tokens_total{cache="miss",kind="cache_write",model="gpt-4o-mini",route="openai"}"#
            ),
            0.0
        );
        // Cached input at gpt-4o-mini's $0.075, half the input price.
        let one = (1000.0 * 0.15 + 2000.0 * 0.075 + 500.0 * 0.60) / 1e6;
        assert!(
            (v(r#"promptgate_cost_usd_total{model="gpt-4o-mini",route="openai"}"#) - 2.0 * one)
                .abs()
                < 1e-12
        );
        // Only upstream answers count as prompt-cache savings (a hit saved the whole answer).
        let prompt_saved = 2.0 * 2000.0 * (0.15 - 0.075) / 1e6;
        assert!(
            (v(r#"promptgate_prompt_cache_saved_usd_total{model="gpt-4o-mini",route="openai"}"#)
                - prompt_saved)
                .abs()
                < 1e-12
        );
        assert_eq!(
            v(
                r#"promptgate_prompt_cache_write_premium_usd_total{model="gpt-4o-mini",route="openai"}"#
            ),
            0.0
        );
        let (saved, per_route) = m.savings();
        assert!((saved.response_cache - 3.0 * one).abs() < 1e-12);
        assert!((saved.prompt_cache - prompt_saved).abs() < 1e-12);
        assert_eq!(per_route.len(), 1);
        assert!(
            (v(r#"promptgate_cost_saved_usd_total{model="gpt-4o-mini",route="openai"}"#)
                - 3.0 * one)
                .abs()
                < 1e-12
        );
        assert!(t.contains(&format!(
            "promptgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        let (total, per_route) = m.lookup_counts();
        assert_eq!((total.hits, total.misses), (3, 2));
        assert!((total.hit_ratio() - 0.6).abs() < 1e-9);
        assert_eq!(per_route[0].0, "openai");
    }

    #[test]
    fn unpriced_models_are_other_and_cost_nothing() {
        let m = Metrics::new();
        let usage = Usage {
            input: 10,
            output: 10,
            model: Some("sk-looks-like-a-key-but-is-a-model".into()),
            ..Usage::default()
        };
        m.request_done(&RequestRecord {
            method: "POST",
            path: "/r",
            route: Some("r"),
            upstream: Some("u"),
            status: 200,
            cache: None,
            lookup: None,
            retries: 0,
            failovers: 0,
            duration: Duration::from_millis(1),
            ttfb: None,
            usage: Some(&usage),
            pricing: Some(&Pricing::default()),
            prompt_cache_breakpoints: 2,
        });
        let t = m.render();
        assert!(
            t.contains(
                r#"promptgate_tokens_total{cache="none",kind="input",model="other",route="r"} 10"#
            ),
            "{t}"
        );
        assert!(!t.contains("sk-looks"), "{t}");
        assert_eq!(
            value(
                &t,
                r#"promptgate_prompt_cache_breakpoints_total{route="r"}"#
            ),
            2.0
        );
        assert_eq!(
            value(&t, r#"promptgate_cost_usd_total{model="other",route="r"}"#),
            0.0
        );
    }
}
