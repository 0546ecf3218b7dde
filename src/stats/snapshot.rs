//! `GET /stats`: one JSON snapshot of everything the dashboard shows, built from the metrics
//! registry (the numbers `/metrics` prints), the upstreams' live state, the cache stores, the
//! last reload, and the in-process history.

use super::read::{label, Reading};
use super::recent::RecentRequest;
use super::series::{self, unix_seconds, Sample};
use crate::cache::redis::RedisState;
use crate::cache::Cache;
use crate::cache::CacheStatus;
use crate::config::schema::CacheBackend;
use crate::metrics::{LookupCounts, Metrics, NO_CACHE};
use crate::routing::upstream::Upstream;
use crate::runtime::Runtime;
use crate::server::reload::LastReload;
use prometheus::proto::Metric;
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;

/// Samples averaged for the requests-per-second figure: the last 10 seconds.
const RATE_SAMPLES: usize = 5;

/// Where a snapshot's numbers come from.
pub struct Sources<'a> {
    pub metrics: &'a Metrics,
    pub runtime: &'a Runtime,
    pub cache: &'a Cache,
    /// Requests being answered right now.
    pub inflight: usize,
    pub last_reload: Option<LastReload>,
}

/// The `GET /stats` answer. Counts are since start; times are Unix seconds.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    /// When the snapshot was taken.
    pub time: f64,
    pub uptime_seconds: f64,
    pub requests: Requests,
    pub cache: CacheStats,
    /// Arrival to last byte, by where the answer came from (`none`: routes not cached).
    pub latency_seconds: Latency,
    pub tokens: Tokens,
    pub cost_usd: Cost,
    /// Configured routes in config order, then any other route the metrics know (`none`:
    /// requests no route matched; routes removed by a reload).
    pub routes: Vec<RouteStats>,
    /// Every upstream a route targets, in order of first mention.
    pub upstreams: Vec<UpstreamStats>,
    pub config: ConfigStats,
    /// The last requests, newest first.
    pub recent: Vec<Recent>,
    /// The last 15 minutes, one point per sample interval, as columns.
    pub series: SeriesColumns,
}

#[derive(Debug, Serialize)]
pub struct Requests {
    pub total: u64,
    pub inflight: usize,
    /// Mean over the last 10 seconds.
    pub per_second: f64,
}

/// Lookup outcomes. `hit_ratio` is (hits + semantic hits + coalesced) over (those + misses +
/// errors); bypasses asked for no lookup and are not in it.
#[derive(Debug, Serialize, PartialEq)]
pub struct Lookups {
    /// Answered from the cache by exact key.
    pub hits: u64,
    /// Answered from the cache by meaning (the semantic cache).
    pub semantic_hits: u64,
    pub misses: u64,
    pub bypasses: u64,
    /// Answered by an identical request in flight.
    pub coalesced: u64,
    /// A store could not answer (served as a miss).
    pub errors: u64,
    pub hit_ratio: f64,
}

impl From<&LookupCounts> for Lookups {
    fn from(c: &LookupCounts) -> Lookups {
        Lookups {
            hits: c.hits,
            semantic_hits: c.semantic_hits,
            misses: c.misses,
            bypasses: c.bypasses,
            coalesced: c.coalesced,
            errors: c.errors,
            hit_ratio: c.hit_ratio(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CacheStats {
    pub enabled: bool,
    /// `memory` or `redis`.
    pub backend: &'static str,
    #[serde(flatten)]
    pub lookups: Lookups,
    pub memory: MemoryStats,
    /// `null` without Redis.
    pub redis: Option<RedisStats>,
}

#[derive(Debug, Serialize)]
pub struct MemoryStats {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct RedisStats {
    /// `up`, or `circuit_open` while errors keep promptgate away from Redis.
    pub state: &'static str,
    /// The circuit breaker: `closed` (Redis in use) or `open`.
    pub breaker: &'static str,
    /// Errors since start (timeouts, connection failures, dropped writes).
    pub errors: u64,
}

/// Latency quantiles, estimated from the histogram buckets like PromQL's
/// `histogram_quantile`; `null` without observations.
#[derive(Debug, Serialize, PartialEq)]
pub struct Quantiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub hit: Quantiles,
    pub miss: Quantiles,
    pub bypass: Quantiles,
    pub none: Quantiles,
}

/// Tokens of one kind: paid for (answers from upstream) and served from the cache instead.
#[derive(Debug, Serialize, PartialEq)]
pub struct TokenCounts {
    pub paid: u64,
    pub saved: u64,
}

/// By kind, as `promptgate_tokens_total` counts them (the kinds do not overlap).
#[derive(Debug, Serialize)]
pub struct Tokens {
    /// Prompt tokens not from or to the provider's prompt cache.
    pub input: TokenCounts,
    pub output: TokenCounts,
    /// Prompt tokens read from the provider's prompt cache.
    pub cache_read: TokenCounts,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write: TokenCounts,
}

/// US dollars, by the price table.
#[derive(Debug, Serialize)]
pub struct Cost {
    /// What upstream calls cost.
    pub spent: f64,
    /// `saved_response_cache` + `saved_prompt_cache`.
    pub saved: f64,
    /// What the cache hits would have cost upstream.
    pub saved_response_cache: f64,
    /// What the providers' own prompt caching saved, net: reads at their discount, less the
    /// premium paid on writes (negative while writes outweigh reads).
    pub saved_prompt_cache: f64,
}

#[derive(Debug, Serialize)]
pub struct RouteStats {
    pub name: String,
    pub requests: u64,
    #[serde(flatten)]
    pub lookups: Lookups,
    /// 95th percentile of all its requests' latency, seconds.
    pub p95_seconds: Option<f64>,
    pub cost_usd: f64,
    /// What the response cache saved.
    pub saved_usd: f64,
    /// What the providers' prompt caching saved, net of the write premium.
    pub saved_prompt_cache_usd: f64,
}

#[derive(Debug, Serialize)]
pub struct UpstreamStats {
    pub name: String,
    /// Passive health: `healthy`, or `ejected` (tried only after every other target).
    pub state: &'static str,
    pub ejected_for_seconds: f64,
    pub consecutive_failures: u32,
    /// Failed attempts since start.
    pub failures: u64,
    /// Exchanges under way.
    pub inflight: usize,
    /// `max_concurrent`, `null` without a cap.
    pub max_concurrent: Option<usize>,
    pub free_slots: Option<usize>,
    /// Smoothed time to first byte, `null` before the first answer.
    pub ttfb_ms: Option<f64>,
    /// What the newest connection speaks: `h1` or `h2`; `null` before the first.
    pub protocol: Option<&'static str>,
    /// Connections opened since the upstream's pool was created (it is kept across reloads
    /// while the upstream's connection settings are unchanged).
    pub connections_opened: u64,
}

#[derive(Debug, Serialize)]
pub struct ConfigStats {
    pub routes: usize,
    /// Last successful load (start-up or reload).
    pub loaded_at: f64,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// The last reload attempt since start; `null` before the first.
    pub last_reload: Option<ReloadStats>,
}

#[derive(Debug, Serialize)]
pub struct ReloadStats {
    pub time: f64,
    /// `file changed`, `SIGHUP` or `POST /reload`.
    pub trigger: String,
    /// `success` or `error`.
    pub result: &'static str,
    /// What was wrong (the running config stayed in force).
    pub error: Option<String>,
}

/// One recent request: what the access log shows, never a body, header or query string.
#[derive(Debug, Serialize)]
pub struct Recent {
    pub time: f64,
    pub method: String,
    pub path: String,
    pub route: Option<String>,
    pub upstream: Option<String>,
    /// `HIT`, `MISS`, `BYPASS`, or `null` on routes not cached.
    pub cache: Option<&'static str>,
    pub status: u16,
    pub duration_ms: f64,
}

/// Columns of the time series, each as long as `time` (`null`: nothing to measure).
#[derive(Debug, Serialize, Default)]
pub struct SeriesColumns {
    pub interval_seconds: u64,
    pub time: Vec<f64>,
    pub requests_per_second: Vec<f64>,
    pub hit_ratio: Vec<Option<f64>>,
    pub p95_hit_seconds: Vec<Option<f64>>,
    pub p95_miss_seconds: Vec<Option<f64>>,
}

fn lookup_counts(reading: &Reading, keep: impl Fn(&Metric) -> bool) -> LookupCounts {
    let c = |result: &str| {
        reading.count("promptgate_cache_lookups_total", |m| {
            keep(m) && label(m, "result") == result
        })
    };
    LookupCounts {
        hits: c("hit"),
        misses: c("miss"),
        bypasses: c("bypass"),
        coalesced: c("coalesced"),
        errors: c("error"),
        semantic_hits: c("semantic_hit"),
    }
}

fn quantiles(reading: &Reading, keep: impl Fn(&Metric) -> bool) -> Quantiles {
    let b = reading.histogram("promptgate_request_duration_seconds", keep);
    Quantiles {
        count: b.count,
        p50: b.quantile(0.5),
        p95: b.quantile(0.95),
        p99: b.quantile(0.99),
    }
}

fn tokens(reading: &Reading, kind: &str) -> TokenCounts {
    let sum = |hit: bool| {
        reading.count("promptgate_tokens_total", |m| {
            label(m, "kind") == kind && (label(m, "cache") == CacheStatus::Hit.label()) == hit
        })
    };
    TokenCounts {
        paid: sum(false),
        saved: sum(true),
    }
}

/// What prompt caching saved, net of the write premium, over the series `keep` selects.
fn prompt_cache_saved(reading: &Reading, keep: impl Fn(&Metric) -> bool) -> f64 {
    reading.sum("promptgate_prompt_cache_saved_usd_total", &keep)
        - reading.sum("promptgate_prompt_cache_write_premium_usd_total", &keep)
}

/// The route names to list: the table's, then the others the metrics know, sorted.
fn route_names(runtime: &Runtime, reading: &Reading) -> Vec<String> {
    let mut names: Vec<String> = runtime.routes.iter().map(|r| r.name.clone()).collect();
    let mut others: Vec<String> = reading
        .series("promptgate_requests_total")
        .map(|m| label(m, "route").to_string())
        .filter(|n| !names.contains(n))
        .collect();
    others.sort();
    others.dedup();
    names.extend(others);
    names
}

fn route_stats(reading: &Reading, name: &str) -> RouteStats {
    let here = |m: &Metric| label(m, "route") == name;
    RouteStats {
        name: name.to_string(),
        requests: reading.count("promptgate_requests_total", here),
        lookups: Lookups::from(&lookup_counts(reading, here)),
        p95_seconds: reading
            .histogram("promptgate_request_duration_seconds", here)
            .quantile(0.95),
        cost_usd: reading.sum("promptgate_cost_usd_total", here),
        saved_usd: reading.sum("promptgate_cost_saved_usd_total", here),
        saved_prompt_cache_usd: prompt_cache_saved(reading, here),
    }
}

/// Each upstream a route targets (plain targets and priority groups), once.
fn upstreams(runtime: &Runtime) -> Vec<Arc<Upstream>> {
    let mut seen: Vec<Arc<Upstream>> = Vec::new();
    let targets = runtime.routes.iter().flat_map(|r| {
        r.targets
            .iter()
            .chain(r.groups.iter().flat_map(|(_, targets)| targets.iter()))
    });
    for t in targets {
        if !seen.iter().any(|u| u.name == t.upstream.name) {
            seen.push(t.upstream.clone());
        }
    }
    seen
}

fn upstream_stats(up: &Upstream) -> UpstreamStats {
    let s = up.state();
    let ejected = !s.ejected_for.is_zero();
    UpstreamStats {
        name: up.name.clone(),
        state: if ejected { "ejected" } else { "healthy" },
        ejected_for_seconds: s.ejected_for.as_secs_f64(),
        consecutive_failures: s.consecutive_failures,
        failures: s.failures,
        inflight: s.inflight,
        max_concurrent: s.slots.map(|(_, all)| all),
        free_slots: s.slots.map(|(free, _)| free),
        ttfb_ms: (s.latency_micros > 0.0).then_some(s.latency_micros / 1000.0),
        protocol: Some(up.pool.protocol()).filter(|p| !p.is_empty()),
        connections_opened: {
            let (h1, h2) = up.pool.opened();
            h1 + h2
        },
    }
}

fn recent(r: &RecentRequest) -> Recent {
    Recent {
        time: unix_seconds(r.at),
        method: r.method().to_string(),
        path: r.path().to_string(),
        route: r.route().map(str::to_string),
        upstream: r.upstream().map(str::to_string),
        cache: r.cache.map(CacheStatus::as_str),
        status: r.status,
        duration_ms: r.duration.as_secs_f64() * 1000.0,
    }
}

fn columns(samples: &[Sample]) -> SeriesColumns {
    SeriesColumns {
        interval_seconds: series::INTERVAL.as_secs(),
        time: samples.iter().map(|s| s.time).collect(),
        requests_per_second: samples.iter().map(|s| s.requests_per_second).collect(),
        hit_ratio: samples.iter().map(|s| s.hit_ratio).collect(),
        p95_hit_seconds: samples.iter().map(|s| s.p95_hit_seconds).collect(),
        p95_miss_seconds: samples.iter().map(|s| s.p95_miss_seconds).collect(),
    }
}

/// Everything the dashboard shows, now.
pub fn snapshot(s: &Sources) -> Snapshot {
    let reading = Reading::new(s.metrics.gather());
    let activity = s.metrics.activity();
    let samples = activity.series.samples();
    let cache_label = |c: &'static str| move |m: &Metric| label(m, "cache") == c;
    let saved = reading.sum("promptgate_cost_saved_usd_total", |_| true);
    let saved_prompt_cache = prompt_cache_saved(&reading, |_| true);
    let (entries, bytes) = s.cache.memory_usage();
    let reloads = |result: &str| {
        reading.count("promptgate_config_reloads_total", |m| {
            label(m, "result") == result
        })
    };
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        time: unix_seconds(SystemTime::now()),
        uptime_seconds: activity.uptime().as_secs_f64(),
        requests: Requests {
            total: reading.count("promptgate_requests_total", |_| true),
            inflight: s.inflight,
            per_second: series::recent_rate(&samples, RATE_SAMPLES),
        },
        cache: CacheStats {
            enabled: s.runtime.cache.enabled,
            backend: match s.runtime.cache.backend {
                CacheBackend::Memory => "memory",
                CacheBackend::Redis => "redis",
            },
            lookups: Lookups::from(&lookup_counts(&reading, |_| true)),
            memory: MemoryStats { entries, bytes },
            redis: s.cache.redis().map(|r| {
                let open = r.state() == RedisState::CircuitOpen;
                RedisStats {
                    state: if open { "circuit_open" } else { "up" },
                    breaker: if open { "open" } else { "closed" },
                    errors: r.error_count(),
                }
            }),
        },
        latency_seconds: Latency {
            hit: quantiles(&reading, cache_label(CacheStatus::Hit.label())),
            miss: quantiles(&reading, cache_label(CacheStatus::Miss.label())),
            bypass: quantiles(&reading, cache_label(CacheStatus::Bypass.label())),
            none: quantiles(&reading, cache_label(NO_CACHE)),
        },
        tokens: Tokens {
            input: tokens(&reading, "input"),
            output: tokens(&reading, "output"),
            cache_read: tokens(&reading, "cache_read"),
            cache_write: tokens(&reading, "cache_write"),
        },
        cost_usd: Cost {
            spent: reading.sum("promptgate_cost_usd_total", |_| true),
            saved: saved + saved_prompt_cache,
            saved_response_cache: saved,
            saved_prompt_cache,
        },
        routes: route_names(s.runtime, &reading)
            .iter()
            .map(|name| route_stats(&reading, name))
            .collect(),
        upstreams: upstreams(s.runtime)
            .iter()
            .map(|u| upstream_stats(u))
            .collect(),
        config: ConfigStats {
            routes: s.runtime.routes.len(),
            loaded_at: reading.sum(
                "promptgate_config_last_reload_success_timestamp_seconds",
                |_| true,
            ),
            reloads_succeeded: reloads("success"),
            reloads_failed: reloads("error"),
            last_reload: s.last_reload.as_ref().map(|l| ReloadStats {
                time: unix_seconds(l.at),
                trigger: l.trigger.to_string(),
                result: if l.error.is_none() {
                    "success"
                } else {
                    "error"
                },
                error: l.error.clone(),
            }),
        },
        recent: activity.recent.newest_first().iter().map(recent).collect(),
        series: columns(&samples),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Entry;
    use crate::cache::Lookup;
    use crate::metrics::RequestRecord;
    use crate::pricing::Pricing;
    use crate::providers::Usage;
    use std::time::Duration;

    fn runtime() -> Runtime {
        crate::runtime::build(
            &crate::config::parse(
                r#"
upstreams:
  mock: {url: "http://127.0.0.1:9", max_concurrent: 4}
  spare: {url: "http://127.0.0.1:10"}
routes:
  - name: openai
    match: {path_prefix: /openai}
    targets: [mock, spare]
  - name: quiet
    targets: [mock]
"#,
                "test.yaml",
                &|_| None,
            )
            .unwrap(),
        )
    }

    fn hit() -> Lookup {
        Lookup::Hit(Arc::new(Entry {
            status: 200,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            chunks: Vec::new(),
            stored_at: 0,
            ttl: Duration::from_secs(60),
            usage: Default::default(),
            head: Default::default(),
        }))
    }

    #[test]
    fn one_miss_and_three_hits_read_back_exactly() {
        let m = Metrics::new();
        let pricing = Pricing::default();
        let usage = Usage {
            input: 1000,
            output: 500,
            cache_read: 2000,
            cache_write: 0,
            model: Some("gpt-4o-mini".into()),
        };
        let done = |cache, lookup: Lookup, upstream, ms| {
            m.request_done(&RequestRecord {
                method: "POST",
                path: "/openai/v1/chat/completions",
                route: Some("openai"),
                upstream,
                status: 200,
                cache: Some(cache),
                lookup: Some(&lookup),
                retries: 0,
                failovers: 0,
                duration: Duration::from_millis(ms),
                ttfb: None,
                usage: Some(&usage),
                pricing: Some(&pricing),
                prompt_cache_breakpoints: 0,
            });
        };
        done(CacheStatus::Miss, Lookup::Miss, Some("mock"), 300);
        for _ in 0..3 {
            done(CacheStatus::Hit, hit(), None, 1);
        }
        let runtime = runtime();
        let cache = Cache::new(&runtime.cache).unwrap();
        let snap = snapshot(&Sources {
            metrics: &m,
            runtime: &runtime,
            cache: &cache,
            inflight: 2,
            last_reload: None,
        });
        assert_eq!((snap.requests.total, snap.requests.inflight), (4, 2));
        assert_eq!(snap.cache.lookups.hits, 3);
        assert_eq!(snap.cache.lookups.misses, 1);
        assert_eq!(snap.cache.lookups.hit_ratio, 0.75);
        assert_eq!(snap.cache.backend, "memory");
        assert!(snap.cache.redis.is_none());
        assert_eq!(snap.latency_seconds.hit.count, 3);
        assert_eq!(snap.latency_seconds.miss.count, 1);
        let p95 = snap.latency_seconds.miss.p95.unwrap();
        assert!(p95 > 0.25 && p95 <= 0.5, "{p95}");
        assert_eq!(snap.latency_seconds.bypass.p50, None);
        assert_eq!(
            snap.tokens.input,
            TokenCounts {
                paid: 1000,
                saved: 3000
            }
        );
        assert_eq!(
            snap.tokens.cache_read,
            TokenCounts {
                paid: 2000,
                saved: 6000
            }
        );
        let one = (1000.0 * 0.15 + 2000.0 * 0.075 + 500.0 * 0.60) / 1e6;
        let prompt_saved = 2000.0 * (0.15 - 0.075) / 1e6;
        assert!((snap.cost_usd.spent - one).abs() < 1e-12);
        assert!((snap.cost_usd.saved_response_cache - 3.0 * one).abs() < 1e-12);
        assert!((snap.cost_usd.saved_prompt_cache - prompt_saved).abs() < 1e-12);
        assert!((snap.cost_usd.saved - 3.0 * one - prompt_saved).abs() < 1e-12);
        let names: Vec<_> = snap.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["openai", "quiet"]);
        assert_eq!(snap.routes[0].requests, 4);
        assert_eq!(snap.routes[0].lookups.hit_ratio, 0.75);
        assert_eq!(snap.routes[1].requests, 0);
        let ups: Vec<_> = snap.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(ups, ["mock", "spare"]);
        assert_eq!(
            (
                snap.upstreams[0].max_concurrent,
                snap.upstreams[0].free_slots
            ),
            (Some(4), Some(4))
        );
        assert_eq!(snap.upstreams[1].max_concurrent, None);
        assert_eq!(snap.upstreams[0].state, "healthy");
        assert_eq!(snap.recent.len(), 4);
        assert_eq!(snap.recent[0].cache, Some("HIT"));
        assert_eq!(snap.recent[3].upstream.as_deref(), Some("mock"));
        assert_eq!(snap.config.routes, 2);
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["cache"]["hit_ratio"], 0.75);
        assert_eq!(json["cache"]["semantic_hits"], 0);
        assert_eq!(json["routes"][0]["hits"], 3);
    }
}
