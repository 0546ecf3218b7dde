//! The response cache: keys ([`key`]), what a request allows ([`policy`]), stored responses
//! ([`entry`]), single-flight ([`flight`]), recording a response on its way to the client ([`record`]), and the stores
//! ([`memory`], [`redis`]).
//!
//! Lookups never fail a request: a store that errs is a miss.

pub(crate) mod entry;
pub(crate) mod flight;
pub mod key;
pub(crate) mod memory;
pub(crate) mod operations;
pub(crate) mod policy;
pub(crate) mod record;
pub mod redis;
pub mod semantic;
pub(crate) mod vary;

use crate::config::schema::{CacheBackend, CacheSpec, RedisSpec};
use arc_swap::ArcSwap;
use entry::{DecodeError, Entry};
use flight::Flights;
use key::{CacheKey, KeyMemo};
use memory::MemoryStore;
use redis::{RedisError, RedisStore};
use std::sync::Arc;
use std::time::Duration;

/// Where a request's answer came from: the `x-promptgate-cache` response header
/// ([`CacheStatus::as_str`]) and the `cache` label of the request metrics ([`CacheStatus::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    /// Every status, in declaration order (`status as usize` indexes it).
    pub const ALL: [CacheStatus; 3] = [CacheStatus::Hit, CacheStatus::Miss, CacheStatus::Bypass];

    /// The `x-promptgate-cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// The metric label value: the header value in lower case.
    pub fn label(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// What the cache did for one request: what a store lookup found ([`Cache::lookup_traced`]
/// returns `Hit`, `Miss` or `Error`), or why no store was asked (`Bypass`, `Coalesced`, decided
/// by the request path). [`Lookup::label`] is the `result` label of
/// `promptgate_cache_lookups_total`.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Answered from a store, with this entry.
    Hit(Arc<Entry>),
    /// Not stored: the request went upstream.
    Miss,
    /// The request skipped the lookup (`no-cache`, `no-store`, `x-promptgate-cache: bypass`).
    Bypass,
    /// Answered from an identical request in flight (single-flight).
    Coalesced,
    /// The shared store failed, timed out or is skipped (open circuit), or the entry was
    /// unreadable: served as a miss.
    Error,
    /// Answered with this entry, stored for a similar request (the semantic cache).
    SemanticHit(Arc<Entry>),
}

impl Lookup {
    /// Every label value, in [`Lookup::index`] order.
    pub const LABELS: [&'static str; 6] = [
        "hit",
        "miss",
        "bypass",
        "coalesced",
        "error",
        "semantic_hit",
    ];

    /// This outcome's position in [`Lookup::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Lookup::Hit(_) => 0,
            Lookup::Miss => 1,
            Lookup::Bypass => 2,
            Lookup::Coalesced => 3,
            Lookup::Error => 4,
            Lookup::SemanticHit(_) => 5,
        }
    }

    /// The `result` label value.
    pub fn label(&self) -> &'static str {
        Lookup::LABELS[self.index()]
    }
}

/// Which entries `POST /cache/purge` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    Route(String),
    Prefix(String),
}

/// How many entries a purge removed from each store (`None`: no Redis configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub memory: u64,
    pub redis: Option<u64>,
}

/// The Redis key of an entry: `{prefix}:{route}:{hex}`.
pub fn redis_key(prefix: &str, route: &str, key: &CacheKey) -> String {
    format!("{prefix}:{route}:{}", key.hex())
}

/// How long the in-memory copy of an entry stored in Redis without L1 is kept: long enough
/// for the background Redis write to land, so a client repeating its request at once still
/// hits (read-your-writes).
const WRITE_WINDOW: Duration = Duration::from_secs(10);

/// The in-process semantic index may hold up to this fraction of `cache.memory.max_bytes`
/// (1/4) on top of it: its vectors and texts are small beside the responses they point at.
const SEMANTIC_SHARE: u64 = 4;

/// The configured shared store, swapped whole when a reload changes `cache.redis`.
struct Backend {
    spec: Option<RedisSpec>,
    redis: Option<Arc<RedisStore>>,
}

/// The stores behind one cache, shared by every request and kept across config reloads.
pub struct Cache {
    memory: MemoryStore,
    /// Vectors of semantically cached requests, in process (see [`semantic`]).
    semantic: semantic::index::MemoryIndex,
    backend: ArcSwap<Backend>,
    flights: Arc<Flights>,
    /// Recent requests' keys, so a repeated body is canonicalised once.
    key_memo: KeyMemo,
}

impl Cache {
    /// Builds the stores for `spec`. Redis URLs were validated with the config, and connecting
    /// happens on first use.
    pub fn new(spec: &CacheSpec) -> Result<Cache, RedisError> {
        Ok(Cache {
            memory: MemoryStore::new(spec.memory.max_bytes),
            semantic: semantic::index::MemoryIndex::new(spec.memory.max_bytes / SEMANTIC_SHARE),
            backend: ArcSwap::from_pointee(Backend::new(spec)?),
            flights: Arc::default(),
            key_memo: KeyMemo::new(),
        })
    }

    /// The memo of recent requests' keys (see [`KeyMemo`]).
    pub fn key_memo(&self) -> &KeyMemo {
        &self.key_memo
    }

    /// Applies a reloaded `cache:` section: a changed Redis setting connects anew; memory
    /// contents stay.
    pub fn apply(&self, spec: &CacheSpec) -> Result<(), RedisError> {
        let wanted = (spec.backend == CacheBackend::Redis).then_some(&spec.redis);
        if !same_redis(self.backend.load().spec.as_ref(), wanted) {
            self.backend.store(Arc::new(Backend::new(spec)?));
            // The reload line names the store in force.
            log::debug!("cache backend is now {:?}", spec.backend);
        }
        Ok(())
    }

    /// The stored response for `key` and a request with `request` headers, from memory, else
    /// from Redis (bounded by its timeout). Any Redis trouble is a miss: the request goes
    /// upstream.
    pub async fn lookup(
        &self,
        route: &str,
        key: &CacheKey,
        request: &http::HeaderMap,
    ) -> Option<Arc<Entry>> {
        match self.lookup_traced(route, key, request).await {
            Lookup::Hit(entry) => Some(entry),
            _ => None,
        }
    }

    /// [`Cache::lookup`], telling a miss from a store that could not answer (for metrics):
    /// `Hit`, `Miss` or `Error`.
    ///
    /// An answer that varies on request headers (`Vary`) is found through the marker under
    /// `key`: the variant this request's values of those headers select is looked up next.
    pub async fn lookup_traced(
        &self,
        route: &str,
        key: &CacheKey,
        request: &http::HeaderMap,
    ) -> Lookup {
        let found = self.fetch(route, key).await;
        let Lookup::Hit(entry) = &found else {
            return found;
        };
        if entry.is_variants_marker() {
            let names = match vary::of(entry.headers.iter().map(|(_, v)| v)) {
                vary::Varies::On(names) => names,
                _ => return Lookup::Miss,
            };
            return match self
                .fetch(route, &vary::variant_key(key, &names, request))
                .await
            {
                Lookup::Hit(e) if e.is_variants_marker() => Lookup::Miss,
                other => other,
            };
        }
        // An answer that varies, stored under its primary key by a version that did not
        // honour Vary: which variant it is cannot be told, so it is not served.
        let varies = vary::of(
            entry
                .headers
                .iter()
                .filter(|(n, _)| n == http::header::VARY)
                .map(|(_, v)| v),
        );
        if varies != vary::Varies::No {
            return Lookup::Miss;
        }
        found
    }

    /// The entry stored under `key` (answer or variants marker): memory, else Redis.
    async fn fetch(&self, route: &str, key: &CacheKey) -> Lookup {
        if let Some(entry) = self.memory.get(key) {
            return Lookup::Hit(entry);
        }
        let backend = self.backend.load_full();
        let (Some(redis), Some(spec)) = (&backend.redis, &backend.spec) else {
            return Lookup::Miss;
        };
        // Boxed: the Redis client's state is large, and inline it would be carried (and
        // copied) by every request's future, memory hits included.
        let bytes = match Box::pin(redis.get(&redis_key(&spec.prefix, route, key))).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Lookup::Miss,
            Err(_) => return Lookup::Error,
        };
        let entry = match Entry::decode(bytes) {
            Ok(e) => Arc::new(e),
            // Written by an older version, before answers were judged: the next store replaces it.
            Err(DecodeError::Outdated) => return Lookup::Miss,
            Err(e) => {
                log::warn!("ignoring cache entry for route {route}: {e}");
                return Lookup::Error;
            }
        };
        if entry.remaining_ttl().is_none() {
            return Lookup::Miss;
        }
        if spec.l1 {
            self.memory.insert(*key, route, entry.clone());
        }
        Lookup::Hit(entry)
    }

    /// Removes the entries of `route`, or those whose key text (`{prefix}:{route}:{hex}`, as
    /// `promptgate key` prints it) starts with `prefix`, from memory and from Redis.
    pub async fn purge(&self, selector: &Purge) -> Result<Purged, RedisError> {
        let backend = self.backend.load_full();
        let key_prefix = backend
            .spec
            .as_ref()
            .map_or_else(|| RedisSpec::default().prefix, |s| s.prefix.clone());
        let memory = match selector {
            Purge::Route(r) => {
                self.semantic.purge_route(r);
                self.memory.purge(|route, _| route == r)
            }
            Purge::Prefix(p) => self
                .memory
                .purge(|route, key| redis_key(&key_prefix, route, key).starts_with(p.as_str())),
        };
        let redis = match &backend.redis {
            Some(redis) => Some(
                redis
                    .purge_prefix(&match selector {
                        Purge::Route(r) => format!("{key_prefix}:{r}:"),
                        Purge::Prefix(p) => p.clone(),
                    })
                    .await?,
            ),
            None => None,
        };
        Ok(Purged { memory, redis })
    }

    /// Stores `entry`. The in-memory copy is in place when this returns, so a client that
    /// repeats its request right after receiving the response gets a hit (read-your-writes);
    /// the Redis write happens in the background.
    pub fn store(&self, route: &str, key: CacheKey, entry: Arc<Entry>) {
        let backend = self.backend.load();
        let (Some(redis), Some(spec)) = (&backend.redis, &backend.spec) else {
            self.memory.insert(key, route, entry);
            return;
        };
        redis.set_in_background(
            redis_key(&spec.prefix, route, &key),
            entry.encode(),
            entry.ttl,
        );
        let local = if spec.l1 {
            entry
        } else {
            Arc::new(Entry {
                ttl: entry.ttl.min(WRITE_WINDOW),
                ..(*entry).clone()
            })
        };
        self.memory.insert(key, route, local);
    }

    /// The request headers a variants marker in memory names for `key`, if one is there: an
    /// answer without `Vary` arriving for a key whose earlier answers varied is stored as one
    /// more variant, not over the marker (some servers send `Vary: Origin` only to requests
    /// that have an `Origin`). Memory only, so it never waits: a marker the lookup found in
    /// Redis is in memory too with `l1` (without it, only one this process stored lately).
    pub fn known_variants(&self, key: &CacheKey) -> Option<Vec<http::HeaderName>> {
        let entry = self.memory.get(key)?;
        if !entry.is_variants_marker() {
            return None;
        }
        match vary::of(entry.headers.iter().map(|(_, v)| v)) {
            vary::Varies::On(names) => Some(names),
            _ => None,
        }
    }

    /// Stores one variant of an answer that varies on the request headers `names`: the entry
    /// under its `variant` key, and a marker naming the headers under the `primary` key.
    pub fn store_variant(
        &self,
        route: &str,
        primary: CacheKey,
        names: &[http::HeaderName],
        variant: CacheKey,
        entry: Arc<Entry>,
    ) {
        let marker = Arc::new(Entry::variants_marker(names, entry.ttl));
        self.store(route, variant, entry);
        self.store(route, primary, marker);
    }

    /// Stores `entry`, an answer served to a request with `request` headers, under that
    /// request's `key` as the recorder would have: as the variant those headers select when
    /// the answer varies (or `key` already has variants), never when it varies on anything.
    pub fn store_for_request(
        &self,
        route: &str,
        key: CacheKey,
        entry: Arc<Entry>,
        request: &http::HeaderMap,
    ) {
        let varies = vary::of(
            entry
                .headers
                .iter()
                .filter(|(n, _)| n == http::header::VARY)
                .map(|(_, v)| v),
        );
        let names = match varies {
            vary::Varies::No => self.known_variants(&key),
            vary::Varies::On(names) => Some(names),
            vary::Varies::Anything => return,
        };
        match names {
            Some(names) => {
                let variant = vary::variant_key(&key, &names, request);
                self.store_variant(route, key, &names, variant, entry);
            }
            None => self.store(route, key, entry),
        }
    }

    /// Requests in flight upstream, for single-flight.
    pub fn flights(&self) -> &Arc<Flights> {
        &self.flights
    }

    /// (entries, bytes) in the memory store.
    pub fn memory_usage(&self) -> (u64, u64) {
        self.memory.usage()
    }

    /// The Redis store, when the backend is Redis.
    pub fn redis(&self) -> Option<Arc<RedisStore>> {
        self.backend.load().redis.clone()
    }
}

impl Backend {
    fn new(spec: &CacheSpec) -> Result<Backend, RedisError> {
        if spec.backend != CacheBackend::Redis {
            return Ok(Backend {
                spec: None,
                redis: None,
            });
        }
        Ok(Backend {
            spec: Some(spec.redis.clone()),
            redis: Some(Arc::new(RedisStore::new(&spec.redis)?)),
        })
    }
}

/// True when two Redis settings would talk to the same store the same way (compared on the
/// real values: a `Secret`'s printed form hides them).
fn same_redis(a: Option<&RedisSpec>, b: Option<&RedisSpec>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.url.expose() == b.url.expose()
                && a.cluster
                    .iter()
                    .map(|u| u.expose())
                    .eq(b.cluster.iter().map(|u| u.expose()))
                && a.prefix == b.prefix
                && a.timeout == b.timeout
                && a.breaker == b.breaker
                && a.l1 == b.l1
        }
        _ => false,
    }
}
