//! The validated config: plain data with defaults resolved, durations typed, headers parsed
//! and every cross-reference checked. `runtime::build` turns it into the running state.
//!
//! A [`Spec`] only comes out of [`super::parse`] or [`super::load`], which guarantee what the
//! field docs below promise (e.g. every target names a key of [`Spec::upstreams`]).

use super::operations::{self, Operation};
use super::schema::{
    CacheScope, CacheSpec, ConfigSpec, HealthSpec, HttpVersion, LogSpec, PoolSpec, PriceSpec,
    PriorityGroup, PromptCaching, Provider, RateLimitSpec, ReloadSpec, Replay, RetrySpec,
    RouteCacheSpec, SemanticSpec, Strategy, TimeoutsSpec,
};
use super::secret::Secret;
use http::{HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The request header that picks a route's priority group (`speed`, `cost`, …). It chooses
/// the upstream and so the answer, which is why a route with groups varies its cache key on it.
pub const PRIORITY_HEADER: &str = "x-promptgate-priority";

/// One config file, validated.
#[derive(Debug, Clone)]
pub struct Spec {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Proxy worker threads as written: 0 means one per core (resolved when the runtime is built).
    pub threads: usize,
    pub shutdown_grace: Duration,
    /// Absolute path of the Unix socket for zero-downtime upgrades (fits `sun_path`).
    pub upgrade_sock: String,
    /// Largest request body accepted, in bytes (> 0).
    pub max_body_bytes: usize,
    /// Every upstream, by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Routes in config order, names unique.
    pub routes: Vec<Route>,
    /// The `cache:` section (its TTL, `vary` and Redis URLs checked).
    pub cache: CacheSpec,
    pub reload: ReloadSpec,
    /// `pricing:` overrides, each price finite and ≥ 0 (USD per million tokens).
    pub pricing: BTreeMap<String, PriceSpec>,
    /// `prompt_cache_min_tokens:` overrides (model pattern → tokens, each ≥ 1).
    pub prompt_cache_min_tokens: BTreeMap<String, u64>,
    pub log: LogSpec,
    /// `admin_token`, `None` when absent or empty.
    pub admin_token: Option<Secret<String>>,
    /// The sections as written, defaults filled in, for `GET /config` (secrets serialize
    /// as `*****`).
    pub sections: Arc<ConfigSpec>,
}

/// `upstreams.NAME`, with its URL taken apart.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `https` (true) or `http`.
    pub tls: bool,
    /// Lowercase host name or IP literal.
    pub host: String,
    pub port: u16,
    /// Base path from the URL without a trailing slash (`""` for none).
    pub base_path: String,
    /// `Host` header value: host, plus the port when it is not the scheme's default.
    pub host_header: HeaderValue,
    /// Injected headers (none framing or hop-by-hop), values marked sensitive.
    pub headers: Vec<(HeaderName, Secret<HeaderValue>)>,
    /// Every timeout > 0.
    pub timeouts: TimeoutsSpec,
    pub health: HealthSpec,
    /// At most this many requests at once (0 = no cap).
    pub max_concurrent: usize,
    /// With `max_concurrent`, how long a request waits for a slot (and, under
    /// `pool.max_connections`, for a connection).
    pub queue_timeout: Duration,
    /// `max_connections` and `max_streams` > 0, `max_idle` ≤ `max_connections`.
    pub pool: PoolSpec,
    pub http_version: HttpVersion,
    /// `tls.ca_file`, read and checked (https upstreams only).
    pub ca: Option<Arc<CaBundle>>,
    /// `tls.sni`, a valid DNS name or IP address (https upstreams only).
    pub sni: Option<String>,
    /// As written, else told from the host.
    pub provider: Provider,
}

/// The certificates of an upstream's `tls.ca_file`, read when the config was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaBundle {
    /// The file as resolved (relative paths against the config file's directory).
    pub path: PathBuf,
    /// Each certificate of the file, DER-encoded; at least one, each a parseable X.509
    /// certificate.
    pub certs: Vec<Vec<u8>>,
}

/// `routes[N]`.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: Match,
    /// The prefix to remove from the path before forwarding, when `strip_prefix` is set.
    pub strip: Option<String>,
    pub targets: Vec<Target>,
    /// Priority groups, each with at least one target, every one with a `model`.
    pub groups: Vec<(PriorityGroup, Vec<Target>)>,
    pub strategy: Strategy,
    /// `attempts` ≥ 1, `base` ≤ `max`, status codes within 100..=599.
    pub retry: RetrySpec,
    /// The route's cache settings, its overrides applied over `cache:`.
    pub cache: RouteCache,
    /// What the cache key calls this route: its name, plus its targets' model rewrites, so a
    /// route re-targeted to another model never serves the old model's answers.
    pub key_name: String,
    /// Tunnel WebSocket upgrades (`routes[N].websocket`, default true); refused when false.
    pub websocket: bool,
    /// `rate_limit:`, checked (at least one limit, each within its bounds).
    pub rate_limit: Option<RateLimitSpec>,
    pub prompt_caching: PromptCaching,
}

/// `routes[N].match`: every criterion given must hold.
#[derive(Debug, Clone, Default)]
pub struct Match {
    /// Starts with `/`.
    pub path_prefix: Option<String>,
    /// Lowercase host without port.
    pub host: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Glob (`*`, `?`) on the JSON body's `model`.
    pub model: Option<String>,
}

/// One target of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A key of [`Spec::upstreams`].
    pub upstream: String,
    /// Replacement for the JSON body's `model`.
    pub model: Option<String>,
    /// Share of first picks under `strategy: weighted`.
    pub weight: u32,
}

/// A route's effective cache settings: its `routes[N].cache` overrides applied over the
/// `cache:` defaults.
#[derive(Debug, Clone)]
pub struct RouteCache {
    pub enabled: bool,
    /// > 0.
    pub ttl: Duration,
    pub scope: CacheScope,
    /// Top-level JSON body fields left out of the key.
    pub ignore_fields: Vec<String>,
    /// Request headers that are part of the key, in this order.
    pub vary: Vec<HeaderName>,
    /// The cacheable operations (`cache.operations`, presets expanded, in order).
    pub operations: Vec<Operation>,
    /// Largest response stored, in bytes.
    pub max_entry_bytes: usize,
    pub replay: Replay,
    pub complete_on_disconnect: bool,
    pub coalesce: bool,
    pub coalesce_timeout: Duration,
    /// The semantic cache, when the route opts in: every field in range, and `upstream` a key
    /// of [`Spec::upstreams`].
    pub semantic: Option<SemanticSpec>,
}

impl RouteCache {
    /// The route's overrides applied over the `cache:` defaults; or each field that is wrong
    /// (relative to `routes[N].cache`) with its problem.
    pub fn resolve(
        global: &CacheSpec,
        route: &RouteCacheSpec,
    ) -> Result<RouteCache, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let ttl = route.ttl.unwrap_or(global.ttl);
        if ttl.is_zero() {
            problems.push((
                "ttl".to_string(),
                "must be greater than 0 (use enabled: false to turn caching off)".to_string(),
            ));
        }
        let mut vary = Vec::new();
        for (i, name) in route
            .vary
            .as_ref()
            .unwrap_or(&global.vary)
            .iter()
            .enumerate()
        {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => vary.push(h),
                Err(_) => problems.push((
                    format!("vary[{i}]"),
                    format!("{name:?} is not a valid header name"),
                )),
            }
        }
        if let Some(sem) = &route.semantic {
            problems.extend(
                semantic_problems(sem)
                    .into_iter()
                    .map(|(field, message)| (format!("semantic.{field}"), message)),
            );
        }
        let operations =
            match operations::parse(route.operations.as_ref().unwrap_or(&global.operations)) {
                Ok(ops) => ops,
                Err(wrong) => {
                    for (i, problem) in wrong {
                        problems.push((format!("operations[{i}]"), problem));
                    }
                    Vec::new()
                }
            };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(RouteCache {
            semantic: route.semantic.clone(),
            operations,
            enabled: global.enabled && route.enabled.unwrap_or(true),
            ttl,
            scope: route.scope.unwrap_or(global.scope),
            ignore_fields: route
                .ignore_fields
                .clone()
                .unwrap_or_else(|| global.ignore_fields.clone()),
            vary,
            max_entry_bytes: global.max_entry_bytes,
            replay: route.replay.unwrap_or(global.replay),
            complete_on_disconnect: route
                .complete_on_disconnect
                .unwrap_or(global.complete_on_disconnect),
            coalesce: route.coalesce.unwrap_or(global.coalesce),
            coalesce_timeout: global.coalesce_timeout,
        })
    }
}

/// Each field of a `semantic:` section that is out of range, with its problem (the upstream
/// name is checked against the upstreams by the validator).
fn semantic_problems(s: &SemanticSpec) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if !s.path.starts_with('/') {
        problems.push(("path", "must start with /".to_string()));
    }
    if s.model.trim().is_empty() {
        problems.push(("model", "must name the embedding model".to_string()));
    }
    if !(s.threshold > 0.0 && s.threshold <= 1.0) {
        problems.push((
            "threshold",
            format!("must be a cosine similarity in (0, 1], got {}", s.threshold),
        ));
    }
    if s.timeout.is_zero() || s.timeout > Duration::from_secs(60) {
        problems.push(("timeout", "must be between 1ms and 60s".to_string()));
    }
    if !(1..=1024).contains(&s.max_per_context) {
        problems.push(("max_per_context", "must be between 1 and 1024".to_string()));
    }
    if s.max_chars == 0 {
        problems.push(("max_chars", "must be at least 1".to_string()));
    }
    problems
}
