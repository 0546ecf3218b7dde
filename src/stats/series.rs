//! The last 15 minutes of request rate, hit ratio and p95 latency: a background task samples
//! the metrics every [`INTERVAL`] into a bounded ring, for the dashboard's charts.
//!
//! Each sample is the difference between two readings of the counters and histograms, so it
//! describes only the requests finished within its interval.

use super::read::{label, Buckets, Reading};
use crate::metrics::Metrics;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::time::MissedTickBehavior;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: 15 minutes' worth (about 40 bytes each).
pub const CAPACITY: usize = 15 * 60 / INTERVAL.as_secs() as usize;

/// What happened within one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// End of the interval, Unix seconds.
    pub time: f64,
    /// Requests finished per second.
    pub requests_per_second: f64,
    /// Lookups answered without an upstream call over lookups that could have been; `None`
    /// when there was no lookup.
    pub hit_ratio: Option<f64>,
    /// 95th percentile of hits' arrival-to-last-byte time, seconds; `None` without hits.
    pub p95_hit_seconds: Option<f64>,
    /// The same for misses.
    pub p95_miss_seconds: Option<f64>,
}

/// The ring of the last [`CAPACITY`] samples.
#[derive(Debug, Default)]
pub struct Series {
    ring: Mutex<VecDeque<Sample>>,
}

impl Series {
    pub fn push(&self, sample: Sample) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() >= CAPACITY {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// The kept samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().cloned().collect()
    }
}

/// Mean requests per second over the newest `n` samples (0 without samples).
pub fn recent_rate(samples: &[Sample], n: usize) -> f64 {
    let newest = &samples[samples.len().saturating_sub(n)..];
    if newest.is_empty() {
        return 0.0;
    }
    newest.iter().map(|s| s.requests_per_second).sum::<f64>() / newest.len() as f64
}

/// Cumulative counts at one instant, to take differences of.
#[derive(Debug, Clone)]
pub struct Totals {
    at: Instant,
    wall: SystemTime,
    requests: u64,
    /// Lookups answered by the cache (hits, coalesced).
    served: u64,
    /// Lookups that could have been: served, misses, errors.
    asked: u64,
    hit: Buckets,
    miss: Buckets,
}

impl Totals {
    pub fn read(reading: &Reading, at: Instant, wall: SystemTime) -> Totals {
        let lookups = |results: &[&str]| {
            reading.count("promptgate_cache_lookups_total", |m| {
                results.contains(&label(m, "result"))
            })
        };
        let duration = |cache: &str| {
            reading.histogram("promptgate_request_duration_seconds", |m| {
                label(m, "cache") == cache
            })
        };
        Totals {
            at,
            wall,
            requests: reading.count("promptgate_requests_total", |_| true),
            served: lookups(&["hit", "coalesced", "semantic_hit"]),
            asked: lookups(&["hit", "coalesced", "semantic_hit", "miss", "error"]),
            hit: duration("hit"),
            miss: duration("miss"),
        }
    }

    /// What happened between `earlier` and these totals.
    pub fn since(&self, earlier: &Totals) -> Sample {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64();
        let requests = self.requests.saturating_sub(earlier.requests);
        let asked = self.asked.saturating_sub(earlier.asked);
        let served = self.served.saturating_sub(earlier.served);
        Sample {
            time: unix_seconds(self.wall),
            requests_per_second: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            hit_ratio: (asked > 0).then(|| served as f64 / asked as f64),
            p95_hit_seconds: self.hit.since(&earlier.hit).quantile(0.95),
            p95_miss_seconds: self.miss.since(&earlier.miss).quantile(0.95),
        }
    }
}

/// Unix time in seconds, with fractions.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The background task that fills [`Series`] from the metrics, until shutdown.
pub struct Sampler {
    metrics: Arc<Metrics>,
}

impl Sampler {
    pub fn new(metrics: Arc<Metrics>) -> Sampler {
        Sampler { metrics }
    }

    fn read(&self) -> Totals {
        Totals::read(
            &Reading::new(self.metrics.gather()),
            Instant::now(),
            SystemTime::now(),
        )
    }
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(INTERVAL);
        // After a stall, carry on from now: a sample covers however long it really was.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut previous: Option<Totals> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = self.read();
            if let Some(earlier) = &previous {
                self.metrics.activity().series.push(now.since(earlier));
            }
            previous = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Entry;
    use crate::cache::{CacheStatus, Lookup};
    use crate::metrics::RequestRecord;
    use std::sync::Arc;

    fn finish(m: &Metrics, cache: CacheStatus, lookup: Lookup, ms: u64) {
        m.request_done(&RequestRecord {
            method: "POST",
            path: "/r",
            route: Some("r"),
            upstream: None,
            status: 200,
            cache: Some(cache),
            lookup: Some(&lookup),
            retries: 0,
            failovers: 0,
            duration: Duration::from_millis(ms),
            ttfb: None,
            usage: None,
            pricing: None,
            prompt_cache_breakpoints: 0,
        });
    }

    #[test]
    fn a_sample_describes_only_its_own_interval() {
        let m = Metrics::new();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let read = |at: Instant| Totals::read(&Reading::new(m.gather()), at, wall);
        // Before the first reading: not part of the sample.
        finish(&m, CacheStatus::Miss, Lookup::Miss, 3000);
        let first = read(t0);
        finish(&m, CacheStatus::Miss, Lookup::Miss, 200);
        for _ in 0..3 {
            finish(
                &m,
                CacheStatus::Hit,
                Lookup::Hit(Arc::new(Entry {
                    status: 200,
                    headers: Vec::new(),
                    body: bytes::Bytes::new(),
                    chunks: Vec::new(),
                    stored_at: 0,
                    ttl: Duration::from_secs(60),
                    usage: Default::default(),
                    head: Default::default(),
                })),
                1,
            );
        }
        let second = read(t0 + Duration::from_secs(2));
        let s = second.since(&first);
        assert_eq!(s.requests_per_second, 2.0);
        assert_eq!(s.hit_ratio, Some(0.75));
        // hits in (0.0005, 0.001], the miss in (0.1, 0.25]: not the earlier 3 s one
        let hit = s.p95_hit_seconds.unwrap();
        assert!(hit > 0.0005 && hit <= 0.001, "{hit}");
        let miss = s.p95_miss_seconds.unwrap();
        assert!(miss > 0.1 && miss <= 0.25, "{miss}");
        let idle = read(t0 + Duration::from_secs(4)).since(&second);
        assert_eq!(
            (
                idle.requests_per_second,
                idle.hit_ratio,
                idle.p95_hit_seconds
            ),
            (0.0, None, None)
        );
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes() {
        let series = Series::default();
        for i in 0..CAPACITY + 10 {
            series.push(Sample {
                time: i as f64,
                requests_per_second: i as f64,
                hit_ratio: None,
                p95_hit_seconds: None,
                p95_miss_seconds: None,
            });
        }
        let samples = series.samples();
        assert_eq!(CAPACITY, 450);
        assert_eq!(samples.len(), CAPACITY);
        assert_eq!(samples[0].time, 10.0);
        let newest = (CAPACITY + 9) as f64;
        assert_eq!(recent_rate(&samples, 2), newest - 0.5);
        assert_eq!(recent_rate(&[], 5), 0.0);
    }
}
