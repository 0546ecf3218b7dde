//! Rate limits and budgets per credential (or per route): requests and tokens per minute, US
//! dollars per UTC day, counted in memory or in the cache's Redis.
//!
//! - [`gcra`]: the arithmetic, shared by both stores.
//! - [`memory`]: per-process counters (the memory cache backend): each sidecar limits alone.
//! - [`redis`]: counters in the cache's Redis (`cache.backend: redis`), one atomic script per
//!   check, shared by every sidecar on that Redis, through the cache's connection and breaker.
//! - [`headers`]: the `x-ratelimit-*` and `retry-after` response headers.
//!
//! The [`Limiter`] lives beside the cache, outside the swapped runtime: a reload replaces each
//! route's [`RouteLimit`] (the numbers) but the counters, keyed by route name and bucket, stay.
//!
//! A request is checked once before it may go upstream ([`Limiter::check`]); the tokens and
//! cost of its answer are charged after it ([`Limiter::charge`]), so they count against the
//! *next* request. With `count_hits: false` (the default) the proxy checks only requests that go
//! upstream, after the cache lookup: hits (and requests served by an identical one in flight)
//! never touch the limiter, at no cost.

pub mod gcra;
pub mod headers;
pub mod memory;
pub mod redis;

use crate::cache::redis::RedisError;
use crate::cache::Cache;
use crate::config::schema::{LimitKey, OnStoreError, RateLimitSpec};
use gcra::{Kind, Op, Outcome, Params};
use memory::MemoryCounters;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Charges allowed in flight to Redis at once; past this the charge is dropped and counted.
pub const MAX_PENDING_CHARGES: usize = 1024;
/// Buckets of the Redis store this process remembers for `GET /limits`.
const MAX_SEEN: usize = 1024;
/// Nano-USD in one US dollar.
const NANO: f64 = 1e9;

/// One route's limits, built from its `rate_limit:` section; replaced on reload.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteLimit {
    pub params: Params,
    pub key: LimitKey,
    pub count_hits: bool,
    pub on_store_error: OnStoreError,
    /// The `x-ratelimit-limit-*` values, made once (a clone shares the bytes).
    pub values: LimitValues,
}

/// Header values that are the same on every response of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitValues {
    pub requests: http::HeaderValue,
    pub tokens: http::HeaderValue,
}

impl RouteLimit {
    /// From a validated section.
    pub fn new(spec: &RateLimitSpec) -> RouteLimit {
        let params = Params {
            rpm: spec.requests_per_minute.unwrap_or(0),
            tpm: spec.tokens_per_minute.unwrap_or(0),
            budget_nano_usd: spec
                .usd_per_day
                .map_or(0, |usd| (usd * NANO).round() as u64),
        };
        RouteLimit {
            params,
            key: spec.key,
            count_hits: spec.count_hits,
            on_store_error: spec.on_store_error,
            values: LimitValues {
                requests: params.rpm.into(),
                tokens: params.tpm.into(),
            },
        }
    }

    /// The configured value of a limit, as the 429's message and `GET /limits` show it.
    pub fn value(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Requests => self.params.rpm as f64,
            Kind::Tokens => self.params.tpm as f64,
            Kind::Usd => self.params.budget_nano_usd as f64 / NANO,
        }
    }

    /// Which of the three limits are set.
    pub fn kinds(&self) -> impl Iterator<Item = Kind> + '_ {
        Kind::ALL.into_iter().filter(|k| self.value(*k) > 0.0)
    }
}

/// Who a bucket counts: one credential (by its hash, as the cache scope), or the whole route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Route,
    Credential([u8; 32]),
}

/// A credential hash is already uniform: its first 8 bytes stand for it in hash maps.
impl std::hash::Hash for Who {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Who::Route => state.write_u64(0),
            Who::Credential(h) => {
                state.write_u64(u64::from_le_bytes(h[..8].try_into().expect("8 bytes")))
            }
        }
    }
}

impl Who {
    /// The bucket of `req` under `key`: its credential's hash (the cache scope's), or the route.
    pub fn of(req: &pingora::http::RequestHeader, key: LimitKey) -> Who {
        match key {
            LimitKey::Route => Who::Route,
            LimitKey::Credential => {
                Who::Credential(*crate::cache::policy::credential_hash(req).as_bytes())
            }
        }
    }

    /// `"route"`, or the credential hash in hex (never the credential).
    pub fn label(&self) -> String {
        match self {
            Who::Route => "route".into(),
            Who::Credential(hash) => blake3::Hash::from_bytes(*hash).to_hex().to_string(),
        }
    }
}

/// The decision about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within every limit (and counted).
    Admitted(Outcome),
    /// Over a limit: `outcome.denied` says which, `outcome.retry_after_us` for how long.
    Refused(Outcome),
    /// The counter store could not answer; `admitted` follows the route's `on_store_error`.
    StoreError { admitted: bool },
}

impl Verdict {
    pub fn admitted(&self) -> bool {
        match self {
            Verdict::Admitted(_) => true,
            Verdict::Refused(_) => false,
            Verdict::StoreError { admitted } => *admitted,
        }
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Verdict::Admitted(o) | Verdict::Refused(o) => Some(o),
            Verdict::StoreError { .. } => None,
        }
    }
}

/// Where the counters are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
        }
    }
}

/// One bucket's current usage, for `GET /limits`.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketUsage {
    pub route: String,
    /// `"route"` or the credential hash.
    pub who: String,
    pub outcome: Outcome,
}

/// Wall-clock µs since the epoch, advanced by a monotonic clock (a wall-clock step does not
/// refill or drain the buckets).
struct Clock {
    anchor: Instant,
    anchor_us: i64,
}

impl Clock {
    fn new() -> Clock {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            anchor: Instant::now(),
            anchor_us: i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX / 2),
        }
    }

    fn now_us(&self) -> i64 {
        self.anchor_us + i64::try_from(self.anchor.elapsed().as_micros()).unwrap_or(0)
    }
}

/// The counters of every limited route, kept across reloads. Cheap to share behind an `Arc`.
pub struct Limiter {
    cache: Arc<Cache>,
    memory: MemoryCounters,
    clock: Clock,
    pending: Arc<AtomicUsize>,
    /// Charges dropped (too many in flight) and store errors, since start.
    store_errors: AtomicUsize,
    /// Redis buckets this process has used, for `GET /limits` (at most [`MAX_SEEN`]).
    seen: Mutex<HashMap<Box<str>, HashSet<Who>>>,
}

impl Limiter {
    /// Counters in the cache's Redis when its backend is Redis (looked up per call, so a reload
    /// that changes the cache backend moves the limits with it), else in this process.
    pub fn new(cache: Arc<Cache>) -> Limiter {
        Limiter {
            cache,
            memory: MemoryCounters::default(),
            clock: Clock::new(),
            pending: Arc::default(),
            store_errors: AtomicUsize::new(0),
            seen: Mutex::default(),
        }
    }

    pub fn backend(&self) -> Backend {
        if self.cache.redis().is_some() {
            Backend::Redis
        } else {
            Backend::Memory
        }
    }

    /// Admits one request on `route` for `who`, or refuses it. One Redis round trip with the
    /// Redis backend (bounded by `cache.redis.timeout`), a map lookup with the memory one.
    pub async fn check(&self, route: &str, limit: &RouteLimit, who: &Who) -> Verdict {
        let outcome = match self.cache.redis() {
            None => {
                Ok(self
                    .memory
                    .apply(route, who, &limit.params, Op::Check, self.clock.now_us()))
            }
            Some(store) => {
                self.remember(route, who);
                let key = redis::key(store.prefix(), route, who);
                // Boxed: a Redis call's state is kilobytes, and inline it would size every
                // request's future, limits or not.
                Box::pin(redis::apply(
                    &store,
                    &key,
                    &limit.params,
                    Op::Check,
                    None,
                    true,
                ))
                .await
            }
        };
        match outcome {
            Ok(o) if o.denied.is_some() => Verdict::Refused(o),
            Ok(o) => Verdict::Admitted(o),
            Err(e) => {
                self.store_errors.fetch_add(1, Ordering::Relaxed);
                log::debug!("rate limit of route {route}: {e}");
                Verdict::StoreError {
                    admitted: limit.on_store_error == OnStoreError::Allow,
                }
            }
        }
    }

    /// Adds the usage of an answer: `tokens` (input + output) and `usd`. With Redis, the
    /// charge is sent in the background (the response has gone out already); at most
    /// [`MAX_PENDING_CHARGES`] in flight, past which it is dropped and counted as a store error.
    pub fn charge(&self, route: &str, limit: &RouteLimit, who: &Who, tokens: u64, usd: f64) {
        let nano_usd = if usd.is_finite() && usd > 0.0 {
            (usd * NANO).round() as u64
        } else {
            0
        };
        let tokens = if limit.params.tpm > 0 { tokens } else { 0 };
        let nano_usd = if limit.params.budget_nano_usd > 0 {
            nano_usd
        } else {
            0
        };
        if tokens == 0 && nano_usd == 0 {
            return;
        }
        let op = Op::Charge { tokens, nano_usd };
        let Some(store) = self.cache.redis() else {
            self.memory
                .apply(route, who, &limit.params, op, self.clock.now_us());
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_CHARGES {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.store_errors.fetch_add(1, Ordering::Relaxed);
            log::debug!("rate limit charge dropped: too many in flight");
            return;
        }
        let slot = Pending(self.pending.clone());
        let key = redis::key(store.prefix(), route, who);
        let params = limit.params;
        runtime.spawn(async move {
            // A failure is counted (and logged once) by the store's breaker.
            let _ = redis::apply(&store, &key, &params, op, None, false).await;
            drop(slot);
        });
    }

    /// Charges still on their way to Redis (shutdown waits for them).
    pub fn pending_charges(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Checks that found no store to ask, and charges dropped, since start.
    pub fn store_errors(&self) -> usize {
        self.store_errors.load(Ordering::Relaxed)
    }

    /// The usage of every bucket still holding state, for the `routes` given (name, limits):
    /// from memory, or read from Redis (without counting anything) for the buckets this process
    /// has used.
    pub async fn usage(
        &self,
        routes: &[(&str, &RouteLimit)],
    ) -> Result<Vec<BucketUsage>, RedisError> {
        let limit_of = |name: &str| routes.iter().find(|(n, _)| *n == name).map(|(_, l)| *l);
        let mut out = Vec::new();
        match self.cache.redis() {
            None => {
                let now = self.clock.now_us();
                for (route, who, _) in self.memory.buckets(now) {
                    let Some(limit) = limit_of(&route) else {
                        continue;
                    };
                    let outcome = self
                        .memory
                        .apply(&route, &who, &limit.params, Op::Peek, now);
                    out.push(BucketUsage {
                        who: who.label(),
                        route,
                        outcome,
                    });
                }
            }
            Some(store) => {
                let seen: Vec<(String, Who)> = {
                    let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                    seen.iter()
                        .flat_map(|(r, whos)| whos.iter().map(|w| (r.to_string(), w.clone())))
                        .collect()
                };
                let mut idle = Vec::new();
                for (route, who) in seen {
                    let Some(limit) = limit_of(&route) else {
                        idle.push((route, who));
                        continue;
                    };
                    let key = redis::key(store.prefix(), &route, &who);
                    let o =
                        redis::apply(&store, &key, &limit.params, Op::Peek, None, false).await?;
                    let full =
                        o.requests_reset_us <= 0 && o.tokens_reset_us <= 0 && o.usd_spent == 0;
                    if full {
                        idle.push((route, who));
                    } else {
                        out.push(BucketUsage {
                            who: who.label(),
                            route,
                            outcome: o,
                        });
                    }
                }
                self.forget(idle);
            }
        }
        out.sort_by(|a, b| (&a.route, &a.who).cmp(&(&b.route, &b.who)));
        Ok(out)
    }

    fn remember(&self, route: &str, who: &Who) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.get(route).is_some_and(|w| w.contains(who)) {
            return;
        }
        if seen.values().map(HashSet::len).sum::<usize>() >= MAX_SEEN {
            return;
        }
        seen.entry(route.into()).or_default().insert(who.clone());
    }

    fn forget(&self, buckets: Vec<(String, Who)>) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for (route, who) in buckets {
            if let Some(whos) = seen.get_mut(route.as_str()) {
                whos.remove(&who);
            }
        }
        seen.retain(|_, w| !w.is_empty());
    }
}

/// Holds one of the [`MAX_PENDING_CHARGES`] slots until dropped (also when the task is
/// cancelled at runtime shutdown).
struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long until a refused request would be admitted.
pub fn retry_after(outcome: &Outcome) -> Duration {
    Duration::from_micros(outcome.retry_after_us.max(0) as u64)
}
