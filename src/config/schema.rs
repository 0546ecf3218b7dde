//! The config file's shape: serde types mirroring `promptgate.yaml`, with defaults.
//! Unknown fields are errors. docs/configuration.md documents each field.

use super::secret::Secret;
use super::units;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Top-level keys, each deserialized on its own so that one bad section does not hide another.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "admin",
    "threads",
    "shutdown_grace",
    "upgrade_sock",
    "limits",
    "upstreams",
    "routes",
    "cache",
    "reload",
    "pricing",
    "prompt_cache_min_tokens",
    "log",
    "admin_token",
];

pub fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

pub fn default_admin() -> String {
    "127.0.0.1:9090".into()
}

pub fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

/// Where a new process (`run --upgrade`) waits for the running one's listening sockets.
pub fn default_upgrade_sock() -> String {
    "/tmp/promptgate_upgrade.sock".into()
}

/// `limits:` — bounds on what a client may send.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSpec {
    /// Largest request body accepted, in bytes; larger ones get 413. Default 32 MiB.
    /// Written as a number or a size such as `32MiB`.
    #[serde(deserialize_with = "units::bytes")]
    pub max_body_bytes: usize,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// `upstreams.NAME:` — one provider endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// `scheme://host[:port][/base/path]`; http or https.
    pub url: String,
    /// Headers set on every request to this upstream, replacing the client's.
    /// Usually a credential, so values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret<String>>,
    #[serde(default)]
    pub timeouts: TimeoutsSpec,
    #[serde(default)]
    pub health: HealthSpec,
    /// At most this many requests to this upstream at once (0 = no cap).
    #[serde(default)]
    pub max_concurrent: usize,
    /// With `max_concurrent`, how long a request waits for a slot before a 503; also how long
    /// it waits for a connection under `pool.max_connections`.
    #[serde(default = "default_queue_timeout", with = "units::duration")]
    pub queue_timeout: Duration,
    /// Connections to this upstream: how many at once, how many kept idle.
    #[serde(default)]
    pub pool: PoolSpec,
    /// TLS to an `https` upstream: extra trusted CAs, the server name.
    #[serde(default)]
    pub tls: TlsSpec,
    /// HTTP version to speak: `auto` (h2 by ALPN over TLS, else HTTP/1.1), `h1` or `h2`.
    #[serde(default)]
    pub http_version: HttpVersion,
    /// Which provider's API this is, for provider features (`prompt_caching`). Default: told
    /// from the URL's host ([`Provider::of_host`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
}

/// `upstreams.NAME.pool:` — the connections promptgate keeps to one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSpec {
    /// At most this many connections open at once (> 0). An HTTP/1.1 connection carries one
    /// request at a time, an h2 connection up to `max_streams`; a request finding them all busy
    /// waits up to `queue_timeout`. Default 100.
    pub max_connections: usize,
    /// Idle connections kept for reuse (≤ `max_connections`); more are closed. Default 50.
    pub max_idle: usize,
    /// Concurrent h2 streams (requests) per connection (> 0); the server's own limit applies
    /// too. Default 100.
    pub max_streams: usize,
}

impl Default for PoolSpec {
    fn default() -> Self {
        PoolSpec {
            max_connections: 100,
            max_idle: 50,
            max_streams: 100,
        }
    }
}

/// `upstreams.NAME.tls:` — for `https` upstreams only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSpec {
    /// A PEM file of CA certificates trusted for this upstream, in addition to the system's
    /// (a private CA, or a self-signed certificate). Relative to the config file's directory.
    pub ca_file: Option<String>,
    /// The name sent as SNI and verified in the server's certificate; default the URL's host.
    pub sni: Option<String>,
}

/// `upstreams.NAME.http_version:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpVersion {
    /// `https`: offer h2 and HTTP/1.1 by ALPN, the server picks; `http`: HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    H1,
    /// h2 only: `https` fails unless the server picks h2; `http` speaks h2 with prior
    /// knowledge (h2c).
    H2,
}

/// `upstreams.NAME.provider:` — whose API an upstream serves. Only `anthropic` changes what
/// promptgate does today: `routes[N].prompt_caching` adds breakpoints only for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Anthropic's own API (the Messages API at `/v1/messages`).
    Anthropic,
    Openai,
    Gemini,
    Ollama,
    /// Anything else: a gateway, a self-hosted server, another provider's compatible endpoint.
    Other,
}

impl UpstreamSpec {
    /// `provider` as written, else told from the URL's host (`Other` when it has none).
    pub fn provider(&self) -> Provider {
        self.provider.unwrap_or_else(|| {
            let host = self.url.parse::<http::Uri>().ok();
            Provider::of_host(host.as_ref().and_then(|u| u.host()).unwrap_or(""))
        })
    }
}

impl Provider {
    /// The provider a URL host belongs to: `api.anthropic.com`, `api.openai.com`,
    /// `generativelanguage.googleapis.com`; any other host is [`Provider::Other`] (an
    /// upstream that speaks a provider's API elsewhere says so with `provider:`).
    pub fn of_host(host: &str) -> Provider {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match host.as_str() {
            "api.anthropic.com" => Provider::Anthropic,
            "api.openai.com" => Provider::Openai,
            "generativelanguage.googleapis.com" => Provider::Gemini,
            _ => Provider::Other,
        }
    }
}

pub fn default_queue_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `upstreams.NAME.health:` — passive health: an upstream that keeps failing is skipped for a while.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSpec {
    /// Consecutive failed attempts after which the upstream is ejected (0 = never).
    pub failures: u32,
    /// How long an ejected upstream is skipped (unless every target is ejected).
    #[serde(with = "units::duration")]
    pub cooldown: Duration,
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            failures: 3,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// `upstreams.NAME.timeouts:` — human durations such as `5s` or `250ms`, each for one phase of
/// an LLM call. A generation can take minutes before its first byte (reasoning models, local
/// models loading), so the defaults wait as long as the official SDKs do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "TimeoutsFields")]
pub struct TimeoutsSpec {
    /// TCP (and TLS) connection establishment, DNS included. Default 5s.
    #[serde(with = "units::duration")]
    pub connect: Duration,
    /// From the request sent to the response head: how long the model may work before it
    /// answers. Default 600s (the OpenAI and Anthropic SDKs' own timeout).
    #[serde(with = "units::duration")]
    pub first_byte: Duration,
    /// Longest gap between two chunks of the response body (a stream that stalls). Default 120s.
    #[serde(with = "units::duration")]
    pub idle: Duration,
    /// Longest wait for one write of the request. Default 10s.
    #[serde(with = "units::duration")]
    pub write: Duration,
    /// How long an unused pooled connection is kept for the next request. Default 60s.
    #[serde(with = "units::duration")]
    pub pool_idle: Duration,
    /// The deprecated `read` as written (one value for the head and the body gaps). It stands
    /// in for `first_byte` and `idle` where those are not given; kept so `check` can warn.
    #[serde(skip_serializing)]
    pub read: Option<Duration>,
}

impl Default for TimeoutsSpec {
    fn default() -> Self {
        TimeoutsSpec {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(600),
            idle: Duration::from_secs(120),
            write: Duration::from_secs(10),
            pool_idle: Duration::from_secs(60),
            read: None,
        }
    }
}

/// `upstreams.NAME.timeouts:` as written: every field optional, `read` still accepted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsFields {
    #[serde(default, with = "units::option_duration")]
    connect: Option<Duration>,
    #[serde(default, with = "units::option_duration")]
    first_byte: Option<Duration>,
    #[serde(default, with = "units::option_duration")]
    idle: Option<Duration>,
    #[serde(default, with = "units::option_duration")]
    write: Option<Duration>,
    #[serde(default, with = "units::option_duration")]
    pool_idle: Option<Duration>,
    #[serde(default, with = "units::option_duration")]
    read: Option<Duration>,
}

impl From<TimeoutsFields> for TimeoutsSpec {
    fn from(f: TimeoutsFields) -> Self {
        let d = TimeoutsSpec::default();
        TimeoutsSpec {
            connect: f.connect.unwrap_or(d.connect),
            first_byte: f.first_byte.or(f.read).unwrap_or(d.first_byte),
            idle: f.idle.or(f.read).unwrap_or(d.idle),
            write: f.write.unwrap_or(d.write),
            pool_idle: f.pool_idle.unwrap_or(d.pool_idle),
            read: f.read,
        }
    }
}

/// `routes[N]:` — which requests go where.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchSpec,
    /// Remove `match.path_prefix` from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// Priority groups (`speed`, `cost`, `quality`, `fallback`), chosen per request by
    /// `x-promptgate-priority` or a model alias such as `"model": "auto:speed"`.
    #[serde(default)]
    pub groups: BTreeMap<PriorityGroup, Vec<TargetSpec>>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub cache: RouteCacheSpec,
    /// Tunnel WebSocket upgrades to the route's upstream (default true); `false` refuses them
    /// with a 403 JSON error.
    #[serde(default = "default_true")]
    pub websocket: bool,
    /// Rate limits and budgets; none by default.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// Provider prompt caching: `auto` adds Anthropic `cache_control` breakpoints to requests
    /// that have none. Default `off`.
    #[serde(default)]
    pub prompt_caching: PromptCaching,
}

/// `routes[N].prompt_caching:` — whether promptgate marks cacheable prefixes for the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptCaching {
    /// Requests are forwarded as the client wrote them.
    #[default]
    Off,
    /// Anthropic Messages requests without `cache_control` of their own, sent to an
    /// `anthropic` upstream, get breakpoints where the prefix is long enough to be cached.
    Auto,
}

/// `routes[N].rate_limit:` — requests, tokens and money per credential (or per route). Any
/// subset of the three limits may be set; at least one must be.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Who shares a bucket: each client credential (its hash), or the whole route.
    #[serde(default)]
    pub key: LimitKey,
    /// Requests admitted per minute (GCRA: this many at once, then one every 60 s / n).
    pub requests_per_minute: Option<u64>,
    /// Input + output tokens per minute, as the provider reports them after each answer.
    pub tokens_per_minute: Option<u64>,
    /// US dollars per UTC day (the price table's cost of the answers); resets at 00:00 UTC.
    pub usd_per_day: Option<f64>,
    /// Count cache hits against the limits too. Default false: hits cost the provider nothing.
    #[serde(default)]
    pub count_hits: bool,
    /// When the shared counter store (Redis) cannot answer: admit (default) or refuse (503).
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

impl RateLimitSpec {
    /// Largest `requests_per_minute` (one a microsecond).
    pub const MAX_REQUESTS_PER_MINUTE: u64 = 60_000_000;
    /// Largest `tokens_per_minute`.
    pub const MAX_TOKENS_PER_MINUTE: u64 = 100_000_000;
    /// Largest `usd_per_day`.
    pub const MAX_USD_PER_DAY: f64 = 1_000_000.0;

    /// What is wrong with this section: (field below `rate_limit`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.usd_per_day.is_none()
        {
            problems.push((
                "",
                "sets no limit: give requests_per_minute, tokens_per_minute or usd_per_day".into(),
            ));
        }
        for (field, value, max) in [
            (
                "requests_per_minute",
                self.requests_per_minute,
                Self::MAX_REQUESTS_PER_MINUTE,
            ),
            (
                "tokens_per_minute",
                self.tokens_per_minute,
                Self::MAX_TOKENS_PER_MINUTE,
            ),
        ] {
            match value {
                Some(0) => problems.push((field, "must be at least 1".into())),
                Some(n) if n > max => problems.push((field, format!("must be at most {max}"))),
                _ => {}
            }
        }
        if let Some(usd) = self.usd_per_day {
            if !(usd.is_finite() && usd > 0.0 && usd <= Self::MAX_USD_PER_DAY) {
                problems.push((
                    "usd_per_day",
                    format!(
                        "must be a number greater than 0 and at most {}",
                        Self::MAX_USD_PER_DAY
                    ),
                ));
            }
        }
        problems
    }
}

/// Whose requests one rate-limit bucket counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitKey {
    /// Each client credential (`Authorization`, `x-api-key`, …, hashed as the cache scope).
    #[default]
    Credential,
    /// One bucket for the whole route.
    Route,
}

/// What a rate-limited route does while its counter store cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Fail open: admit the request (and count it in the metrics).
    #[default]
    Allow,
    /// Fail closed: answer 503, so no money is spent unaccounted.
    Deny,
}

/// The order in which a route's targets are tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// In the order listed.
    #[default]
    Failover,
    /// First target picked at random by `weight`, then the rest in order.
    Weighted,
    /// The faster of two random targets (moving average of time to first byte) first.
    Latency,
}

/// Named target groups for priority routing. Deserialized by hand (from a string), so that a
/// wrong group name, a map key, is reported at its own path (`groups.fast`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorityGroup {
    Speed,
    Cost,
    Quality,
    Fallback,
}

impl<'de> Deserialize<'de> for PriorityGroup {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PriorityGroup;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a priority group: speed, cost, quality or fallback")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PriorityGroup, E> {
                PriorityGroup::ALL
                    .into_iter()
                    .find(|g| g.as_str() == v)
                    .ok_or_else(|| E::unknown_variant(v, &["speed", "cost", "quality", "fallback"]))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl PriorityGroup {
    pub const ALL: [PriorityGroup; 4] = [
        PriorityGroup::Speed,
        PriorityGroup::Cost,
        PriorityGroup::Quality,
        PriorityGroup::Fallback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PriorityGroup::Speed => "speed",
            PriorityGroup::Cost => "cost",
            PriorityGroup::Quality => "quality",
            PriorityGroup::Fallback => "fallback",
        }
    }

    pub fn parse(s: &str) -> Option<PriorityGroup> {
        PriorityGroup::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// `routes[N].retry:` — retrying and failing over while nothing was sent to the client.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    /// Attempts per target (1 = no retry). Default 3.
    pub attempts: u32,
    /// Backoff before the first retry; doubles each retry, with full jitter. Default 1s.
    #[serde(with = "units::duration")]
    pub base: Duration,
    /// Longest backoff, and cap on an honoured `Retry-After`. Default 10s.
    #[serde(with = "units::duration")]
    pub max: Duration,
    /// What is retried: `connect`, `timeout`, `reset`, and HTTP status codes. `timeout` is
    /// not in the default: a request that timed out after it was sent may still be generating
    /// (and billing) upstream, so sending it again would pay for the answer twice.
    pub on: Vec<RetryOn>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            attempts: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            on: vec![
                RetryOn::Named(RetryCondition::Connect),
                RetryOn::Named(RetryCondition::Reset),
                RetryOn::Status(429),
                RetryOn::Status(500),
                RetryOn::Status(502),
                RetryOn::Status(503),
                RetryOn::Status(504),
            ],
        }
    }
}

/// One entry of `retry.on`: a named failure or an HTTP status code. Deserialized by hand
/// (not `untagged`) so a wrong entry is named in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RetryOn {
    Status(u16),
    Named(RetryCondition),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryCondition {
    /// The connection could not be made (refused, unreachable, DNS, TLS).
    Connect,
    /// No response head within `timeouts.first_byte`, or a write of the request stalled past
    /// `timeouts.write` (a connect timeout counts as `connect`).
    Timeout,
    /// The connection closed or broke before any byte of the response.
    Reset,
}

/// `routes[N].match:` — every given criterion must hold; none given matches everything.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Path prefix on a segment boundary: `/openai` matches `/openai/v1/...`, not `/openaix`.
    pub path_prefix: Option<String>,
    /// `Host` header (port ignored), case-insensitive.
    pub host: Option<String>,
    /// Request headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Glob (`*`, `?`) on the `model` field of a JSON request body.
    pub model: Option<String>,
}

/// `routes[N].targets[M]:` — an upstream name, or an upstream with a model rewrite.
/// Deserialized by hand (not `untagged`), so a mistake inside a `{upstream, model, weight}`
/// map is reported at its own field.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TargetSpec {
    Name(String),
    Detailed(DetailedTarget),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedTarget {
    pub upstream: String,
    /// Replaces the `model` field of the JSON request body.
    pub model: Option<String>,
    /// Share of first picks under `strategy: weighted`. Default 1.
    pub weight: Option<u32>,
}

const RETRY_ON_EXPECTED: &str = "connect, timeout, reset, or an HTTP status code like 429";

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RetryOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(RETRY_ON_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RetryOn, E> {
                u16::try_from(v)
                    .map(RetryOn::Status)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RetryOn, E> {
                Err(E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryOn, E> {
                match v {
                    "connect" => Ok(RetryOn::Named(RetryCondition::Connect)),
                    "timeout" => Ok(RetryOn::Named(RetryCondition::Timeout)),
                    "reset" => Ok(RetryOn::Named(RetryCondition::Reset)),
                    _ => match v.parse::<u16>() {
                        Ok(code) => Ok(RetryOn::Status(code)),
                        Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                    },
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for TargetSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an upstream name, or a mapping like {upstream: NAME, model: MODEL, weight: N}",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetSpec, E> {
                Ok(TargetSpec::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetSpec, A::Error> {
                DetailedTarget::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(TargetSpec::Detailed)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl TargetSpec {
    pub fn upstream(&self) -> &str {
        match self {
            TargetSpec::Name(name) => name,
            TargetSpec::Detailed(d) => &d.upstream,
        }
    }

    pub fn model(&self) -> Option<&str> {
        match self {
            TargetSpec::Name(_) => None,
            TargetSpec::Detailed(d) => d.model.as_deref(),
        }
    }

    pub fn weight(&self) -> u32 {
        match self {
            TargetSpec::Name(_) => 1,
            TargetSpec::Detailed(d) => d.weight.unwrap_or(1),
        }
    }
}

/// `cache:` — the response cache; `ttl`, `scope`, `ignore_fields` and `vary` are defaults
/// that each route's `cache:` may override.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSpec {
    pub enabled: bool,
    pub backend: CacheBackend,
    /// How long a stored response is served. Default 7 days.
    #[serde(with = "units::duration")]
    pub ttl: Duration,
    /// Responses larger than this many bytes are forwarded but not stored. Default 8 MiB.
    #[serde(deserialize_with = "units::bytes")]
    pub max_entry_bytes: usize,
    pub scope: CacheScope,
    /// Top-level JSON body fields (and multipart form fields of those names) that do not change
    /// the answer, left out of the key.
    pub ignore_fields: Vec<String>,
    /// Request headers that change the answer, so they are part of the key.
    pub vary: Vec<String>,
    /// Which requests are cacheable operations: presets (`default`, `openai`, `anthropic`,
    /// `gemini`, `ollama`) and `METHOD /path-glob` entries matched on the end of the forwarded
    /// path. Everything else is forwarded untouched as `BYPASS`. Default `[default]`.
    pub operations: Vec<String>,
    /// How a cached stream is replayed: at once, or at its recorded pace.
    pub replay: Replay,
    /// Keep reading a stream into the cache after its client left early.
    pub complete_on_disconnect: bool,
    /// Identical requests in flight at once share one upstream call.
    pub coalesce: bool,
    /// Longest a coalesced request waits on the one in flight before going upstream itself.
    #[serde(with = "units::duration")]
    pub coalesce_timeout: Duration,
    pub memory: MemorySpec,
    pub redis: RedisSpec,
    /// With `backend: redis`, `GET /readyz` fails while Redis does not answer.
    pub require_redis: bool,
}

impl Default for CacheSpec {
    fn default() -> Self {
        CacheSpec {
            enabled: true,
            backend: CacheBackend::Memory,
            ttl: Duration::from_secs(7 * 24 * 3600),
            max_entry_bytes: 8 * 1024 * 1024,
            scope: CacheScope::Credential,
            ignore_fields: vec!["user".into(), "metadata".into()],
            vary: [
                "anthropic-version",
                "anthropic-beta",
                "openai-organization",
                "openai-project",
                "openai-beta",
                // Browser clients: an answer carrying one origin's CORS headers is never
                // replayed to another origin, even from servers that send `Vary: Origin`
                // only when a request has one.
                "origin",
            ]
            .map(String::from)
            .to_vec(),
            operations: vec![super::operations::DEFAULT.to_string()],
            replay: Replay::Instant,
            complete_on_disconnect: false,
            coalesce: true,
            coalesce_timeout: Duration::from_secs(30),
            memory: MemorySpec::default(),
            redis: RedisSpec::default(),
            require_redis: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    Memory,
    Redis,
}

/// Pacing of a replayed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Replay {
    /// All at once (fastest).
    Instant,
    /// With the recorded gaps between chunks (for UIs and demos).
    Original,
}

/// Who may read an entry: only clients presenting the same credential, or everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    Credential,
    Shared,
}

impl CacheScope {
    /// The value as the config writes it (`credential`, `shared`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Credential => "credential",
            CacheScope::Shared => "shared",
        }
    }
}

/// `cache.memory:` — the in-process store (the default backend, and Redis's L1).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySpec {
    /// Upper bound on the bytes of stored responses. Default 256 MiB.
    #[serde(deserialize_with = "units::bytes")]
    pub max_bytes: u64,
}

impl Default for MemorySpec {
    fn default() -> Self {
        MemorySpec {
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `cache.redis:` — the shared store, used when `cache.backend: redis`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSpec {
    /// `redis://[:password@]host:port[/db]` or `rediss://` for TLS. A secret: it may hold a password.
    pub url: Secret<String>,
    /// Redis Cluster node URLs; when given, `url` is not used.
    pub cluster: Vec<Secret<String>>,
    /// Key prefix: keys are `{prefix}:{route}:{hex}`.
    pub prefix: String,
    /// Longest wait for a lookup before the request goes upstream. Default 50ms.
    #[serde(with = "units::duration")]
    pub timeout: Duration,
    /// After a Redis error, how long to stop asking Redis (circuit breaker). Default 5s.
    #[serde(with = "units::duration")]
    pub breaker: Duration,
    /// Keep an in-memory copy of entries (bounded by `cache.memory.max_bytes`) in front of Redis.
    pub l1: bool,
}

impl Default for RedisSpec {
    fn default() -> Self {
        RedisSpec {
            url: Secret::new("redis://127.0.0.1:6379".into()),
            cluster: Vec::new(),
            prefix: "promptgate:v1".into(),
            timeout: Duration::from_millis(50),
            breaker: Duration::from_secs(5),
            l1: true,
        }
    }
}

/// `routes[N].cache:` — per-route overrides of the `cache:` defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheSpec {
    pub enabled: Option<bool>,
    #[serde(default, with = "units::option_duration")]
    pub ttl: Option<Duration>,
    pub scope: Option<CacheScope>,
    pub ignore_fields: Option<Vec<String>>,
    pub vary: Option<Vec<String>>,
    pub operations: Option<Vec<String>>,
    pub replay: Option<Replay>,
    pub complete_on_disconnect: Option<bool>,
    pub coalesce: Option<bool>,
    /// Opt-in semantic cache for this route (off when absent).
    pub semantic: Option<SemanticSpec>,
}

/// `routes[N].cache.semantic:` — answer reworded requests from the cache: a request whose last
/// user message is similar enough to a cached one's (cosine of their embeddings at least
/// `threshold`), identical in everything else, and carrying the same literals.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticSpec {
    /// The upstream that serves embeddings (its URL, injected key and timeouts are used).
    pub upstream: String,
    /// Path of the embeddings endpoint on that upstream (OpenAI format). Default `/v1/embeddings`.
    #[serde(default = "default_semantic_path")]
    pub path: String,
    /// Embedding model name sent with each call.
    pub model: String,
    /// Least cosine similarity (0 < threshold ≤ 1) for a hit. Default 0.90: on the project's
    /// evaluation set (bench/semantic/results.md, all-MiniLM-L6-v2) 86% of paraphrases hit and
    /// no hard negative did, with the literal guard on.
    #[serde(default = "default_semantic_threshold")]
    pub threshold: f32,
    /// Longest wait for the embedder before the request goes on as a miss. Default 1s.
    #[serde(default = "default_semantic_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Look up and count what would have hit, but never serve it. Default false.
    #[serde(default)]
    pub shadow: bool,
    /// Most requests indexed per context (the oldest go first). Default 64.
    #[serde(default = "default_semantic_max_per_context")]
    pub max_per_context: usize,
    /// Longest compared text, in characters; longer ones are only exactly cached (an embedder
    /// that truncates its input would not see the rest). Default 1000.
    #[serde(default = "default_semantic_max_chars")]
    pub max_chars: usize,
}

pub fn default_semantic_path() -> String {
    "/v1/embeddings".into()
}

pub fn default_semantic_threshold() -> f32 {
    0.90
}

pub fn default_semantic_timeout() -> Duration {
    Duration::from_secs(1)
}

pub fn default_semantic_max_per_context() -> usize {
    64
}

pub fn default_semantic_max_chars() -> usize {
    1000
}

/// `reload:` — how a changed config file is picked up while running.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadSpec {
    /// Watch the config file and reload when it changes. Default true. SIGHUP and
    /// `POST /reload` work either way.
    pub watch: bool,
}

impl Default for ReloadSpec {
    fn default() -> Self {
        ReloadSpec { watch: true }
    }
}

/// `pricing.PATTERN:` — what a model's tokens cost, merged over the shipped defaults
/// (see `pricing.rs`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// USD per million prompt tokens.
    pub input_per_mtok: f64,
    /// USD per million generated tokens.
    pub output_per_mtok: f64,
    /// USD per million prompt tokens read from the provider's prompt cache. Default: the
    /// provider's published multiple of `input_per_mtok` (see `pricing.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    /// USD per million prompt tokens written to the provider's prompt cache. Default: as
    /// `cache_read_per_mtok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

/// `log:` — how log lines are written (levels come from `RUST_LOG`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSpec {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `[time LEVEL target] message key=value ...`
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The running config as the validated sections hold it, for `GET /config`: every secret
/// (`Secret<T>`) serializes as `*****`. Defaults are filled in, so it shows what is in force.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigSpec {
    pub listen: String,
    pub admin: String,
    pub admin_token: Option<Secret<String>>,
    pub threads: usize,
    #[serde(with = "units::duration")]
    pub shutdown_grace: Duration,
    pub limits: LimitsSpec,
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
    pub cache: CacheSpec,
    pub reload: ReloadSpec,
    pub pricing: BTreeMap<String, PriceSpec>,
    pub prompt_cache_min_tokens: BTreeMap<String, u64>,
    pub log: LogSpec,
}

impl ConfigSpec {
    /// Settings that work but not as probably meant (deprecated ones, ones without effect),
    /// each as `field path: what to write instead`, for `promptgate check` and the start-up and
    /// reload logs.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .upstreams
            .iter()
            .filter_map(|(name, u)| {
                u.timeouts.read.map(|read| {
                    format!(
                        "upstreams.{name}.timeouts.read: deprecated; it now sets first_byte and idle \
                         ({}) where those are not given. Write `first_byte` (request sent → response \
                         head, default 600s) and `idle` (gap between body chunks, default 120s) instead",
                        humantime::format_duration(read)
                    )
                })
            })
            .collect();
        for (i, route) in self.routes.iter().enumerate() {
            let anthropic = route
                .targets
                .iter()
                .chain(route.groups.values().flatten())
                .filter_map(|t| self.upstreams.get(t.upstream()))
                .any(|u| u.provider() == Provider::Anthropic);
            if let Some(w) = doubled_prefix(i, route, &self.upstreams) {
                warnings.push(w);
            }
            if route.prompt_caching == PromptCaching::Auto && !anthropic {
                warnings.push(format!(
                    "routes[{i}].prompt_caching: auto has no effect: none of the route's targets is \
                     an `anthropic` upstream (set `provider: anthropic` on an upstream that serves \
                     Anthropic's own API under another host)"
                ));
            }
        }
        warnings
    }
}

/// A route that keeps its `path_prefix` (no `strip_prefix`) in front of an upstream whose URL
/// already ends in that prefix forwards `/v1/v1/…`: almost surely a URL copied with its `/v1`
/// (an OpenAI-compatible server's base URL) onto a route that also matches `/v1`.
fn doubled_prefix(
    i: usize,
    route: &RouteSpec,
    upstreams: &BTreeMap<String, UpstreamSpec>,
) -> Option<String> {
    if route.strip_prefix {
        return None;
    }
    let prefix = route.matcher.path_prefix.as_deref()?.trim_end_matches('/');
    if prefix.is_empty() {
        return None;
    }
    route
        .targets
        .iter()
        .chain(route.groups.values().flatten())
        .map(TargetSpec::upstream)
        .find_map(|name| {
            let url = &upstreams.get(name)?.url;
            let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            let base = after_scheme
                .find('/')
                .map_or("", |slash| &after_scheme[slash..])
                .trim_end_matches('/');
            // `prefix` starts with `/`, so a match is on a segment boundary.
            base.ends_with(prefix).then(|| {
                format!(
                    "routes[{i}].match.path_prefix: {prefix} is kept in the forwarded path \
                     (strip_prefix is false) and upstream {name}'s url already ends in it, \
                     so {prefix}/chat/completions goes to {base}{prefix}/chat/completions; set \
                     `strip_prefix: true` or remove {prefix} from the url"
                )
            })
        })
}

fn default_true() -> bool {
    true
}
