//! An upstream as the proxy uses it: where it is, how to reach it, what to inject, and how
//! it has been doing (passive health, latency, concurrency).

use super::pool::{acquire_within, Peer, Pool, Reserved};
use crate::config::schema::{HealthSpec, HttpVersion, Provider, TimeoutsSpec};
use crate::config::secret::Secret;
use crate::config::spec;
use arc_swap::ArcSwapOption;
use http::{HeaderName, HeaderValue};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a DNS answer is reused. Provider endpoints move rarely; a short TTL still
/// follows them without a lookup on every request.
const DNS_TTL: Duration = Duration::from_secs(30);

/// One configured upstream (`upstreams.NAME`), shared by every route that targets it.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Base path from the URL without a trailing slash (`""` for none).
    pub base_path: String,
    /// `Host` header value: host, plus the port when it is not the scheme's default.
    pub host_header: HeaderValue,
    /// Injected headers, replacing the client's (credentials, usually).
    pub headers: Vec<(HeaderName, Secret<HeaderValue>)>,
    pub timeouts: TimeoutsSpec,
    /// Whose API this is (`upstreams.NAME.provider`, or told from the host).
    pub provider: Provider,
    /// The host when it is an IP address (parsed once, not per request).
    ip: Option<IpAddr>,
    /// The last DNS answer for a host name and when it came; read without a lock, so the
    /// threads serving requests never contend for it.
    resolved: ArcSwapOption<(SocketAddr, Instant)>,
    health: Health,
    /// Smoothed time to first byte, in microseconds as f64 bits (0 = not measured yet).
    latency_ewma: AtomicU64,
    /// With `max_concurrent`: the slots, how many there are, and how long to wait for one.
    slots: Option<(Arc<Semaphore>, usize, Duration)>,
    /// Exchanges with this upstream under way (each holds a [`Slot`]), for the dashboard.
    inflight: Arc<AtomicUsize>,
    /// Its connections (kept across reloads while its connection settings are unchanged).
    pub pool: Arc<Pool>,
    pub http_version: HttpVersion,
    /// How long a request waits for a free connection.
    pub queue_timeout: Duration,
}

/// Passive health: consecutive failures, and until when the upstream is skipped.
#[derive(Debug)]
struct Health {
    spec: HealthSpec,
    failures: AtomicU32,
    /// Failed attempts since start (never reset), for the dashboard.
    failures_total: AtomicU64,
    /// Milliseconds since [`epoch`]; 0 = not ejected.
    ejected_until: AtomicU64,
}

/// Weight of the newest sample in the latency moving average.
const EWMA_ALPHA: f64 = 0.3;

/// A process-wide time origin, so instants fit in atomics.
fn epoch_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// No slot for this upstream freed up within its `queue_timeout`; `limit` names the setting
/// that was full (`max_concurrent` or `pool.max_connections`).
#[derive(Debug, thiserror::Error)]
#[error("upstream is at its {limit} limit")]
pub struct Busy {
    pub limit: &'static str,
}

/// One exchange with an upstream under way: its `max_concurrent` slot (when capped), its
/// connection capacity under `pool.max_connections` and its place in the upstream's in-flight
/// count, all given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    connection: Reserved,
    inflight: Arc<AtomicUsize>,
}

impl Slot {
    /// The connection capacity this exchange holds (an HTTP/1.1 session tops it up).
    pub fn connection(&mut self) -> &mut Reserved {
        &mut self.connection
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the dashboard shows of one upstream's state.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamState {
    /// How long the upstream stays ejected (zero when it is not).
    pub ejected_for: Duration,
    /// Failed attempts in a row (reset by a success, and when the upstream is ejected).
    pub consecutive_failures: u32,
    /// Failed attempts since start.
    pub failures: u64,
    /// Exchanges under way.
    pub inflight: usize,
    /// With `max_concurrent`: (free slots, all slots).
    pub slots: Option<(usize, usize)>,
    /// Smoothed time to first byte in microseconds (0 before the first measurement).
    pub latency_micros: f64,
}

/// DNS resolution of an upstream host failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct ResolveError {
    pub host: String,
    pub reason: String,
}

impl Upstream {
    /// The running upstream `name` for its validated config: health counters at zero, no
    /// DNS answer yet, and `max_concurrent` slots when capped.
    pub fn new(name: String, spec: &spec::Upstream) -> Upstream {
        Upstream {
            tls: spec.tls,
            host: spec.host.clone(),
            port: spec.port,
            base_path: spec.base_path.clone(),
            host_header: spec.host_header.clone(),
            headers: spec.headers.clone(),
            timeouts: spec.timeouts.clone(),
            provider: spec.provider,
            ip: spec.host.trim_matches(['[', ']']).parse().ok(),
            resolved: ArcSwapOption::empty(),
            health: Health {
                spec: spec.health.clone(),
                failures: AtomicU32::new(0),
                failures_total: AtomicU64::new(0),
                ejected_until: AtomicU64::new(0),
            },
            latency_ewma: AtomicU64::new(0),
            slots: (spec.max_concurrent > 0).then(|| {
                (
                    Arc::new(Semaphore::new(spec.max_concurrent)),
                    spec.max_concurrent,
                    spec.queue_timeout,
                )
            }),
            inflight: Arc::default(),
            pool: Pool::shared(&name, spec),
            http_version: spec.http_version,
            queue_timeout: spec.queue_timeout,
            name,
        }
    }

    /// True while the upstream is ejected after repeated failures.
    pub fn is_ejected(&self) -> bool {
        epoch_ms() < self.health.ejected_until.load(Ordering::Acquire)
    }

    /// A successful exchange: resets the failure count and feeds the latency average.
    pub fn record_success(&self, ttfb: Duration) {
        self.health.failures.store(0, Ordering::Release);
        let sample = ttfb.as_secs_f64() * 1e6;
        let _ = self
            .latency_ewma
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let old = f64::from_bits(bits);
                let new = if old == 0.0 {
                    sample
                } else {
                    old + EWMA_ALPHA * (sample - old)
                };
                Some(new.max(1.0).to_bits())
            });
    }

    /// A failed attempt; enough of them in a row eject the upstream for its cool-down.
    pub fn record_failure(&self) {
        let spec = &self.health.spec;
        self.health.failures_total.fetch_add(1, Ordering::Relaxed);
        let n = self.health.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if spec.failures > 0 && n >= spec.failures {
            self.health.failures.store(0, Ordering::Release);
            let until = epoch_ms() + spec.cooldown.as_millis() as u64;
            self.health.ejected_until.store(until, Ordering::Release);
            log::warn!(
                "upstream {} failed {n} times in a row; skipping it for {:?}",
                self.name,
                spec.cooldown
            );
        }
    }

    /// Smoothed time to first byte in microseconds (0 before the first measurement).
    pub fn latency_micros(&self) -> f64 {
        f64::from_bits(self.latency_ewma.load(Ordering::Acquire))
    }

    /// A slot under `max_concurrent` (always granted without a cap) and the connection
    /// capacity of one exchange under `pool.max_connections` (a whole connection with `h1`,
    /// which a WebSocket upgrade needs), waiting up to `queue_timeout` for both together. Held
    /// for as long as the exchange lasts.
    pub async fn slot(&self, h1: bool) -> Result<Slot, Busy> {
        let mut left = self.queue_timeout;
        let permit = match &self.slots {
            None => None,
            Some((slots, _, wait)) => {
                let started = tokio::time::Instant::now();
                let permit = acquire_within(slots, 1, *wait).await;
                left = left.saturating_sub(started.elapsed());
                let Some(permit) = permit else {
                    return Err(Busy {
                        limit: "max_concurrent",
                    });
                };
                Some(permit)
            }
        };
        let Some(connection) = self.pool.reserve(h1, left).await else {
            return Err(Busy {
                limit: "pool.max_connections",
            });
        };
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            _permit: permit,
            connection,
            inflight: self.inflight.clone(),
        })
    }

    /// Health, load and latency right now (a few atomic reads).
    pub fn state(&self) -> UpstreamState {
        let until = self.health.ejected_until.load(Ordering::Acquire);
        UpstreamState {
            ejected_for: Duration::from_millis(until.saturating_sub(epoch_ms())),
            consecutive_failures: self.health.failures.load(Ordering::Acquire),
            failures: self.health.failures_total.load(Ordering::Relaxed),
            inflight: self.inflight.load(Ordering::Acquire),
            slots: self
                .slots
                .as_ref()
                .map(|(s, all, _)| (s.available_permits(), *all)),
            latency_micros: self.latency_micros(),
        }
    }

    /// The upstream path for a client path (already stripped of the route prefix).
    pub fn path_for(&self, path_and_query: &str) -> String {
        let mut out = String::with_capacity(self.base_path.len() + path_and_query.len());
        out.push_str(&self.base_path);
        out.push_str(path_and_query);
        out
    }

    /// Where and how to connect for an exchange with this upstream, with DNS resolved
    /// asynchronously and cached. With `h1`, only HTTP/1.1 is offered (a WebSocket upgrade
    /// needs it).
    pub async fn peer(&self, h1: bool) -> Result<Peer, ResolveError> {
        let addr = self.resolve().await?;
        Ok(Peer {
            addr,
            tls: self.tls,
            offer: self.pool.offer(h1),
            connect_timeout: self.timeouts.connect,
            write_timeout: self.timeouts.write,
        })
    }

    async fn resolve(&self) -> Result<SocketAddr, ResolveError> {
        if let Some(ip) = self.ip {
            return Ok(SocketAddr::new(ip, self.port));
        }
        if let Some(&(addr, at)) = self.resolved.load().as_deref() {
            if at.elapsed() < DNS_TTL {
                return Ok(addr);
            }
        }
        let bare = self.host.trim_matches(['[', ']']);
        let fail = |reason: String| ResolveError {
            host: self.host.clone(),
            reason,
        };
        let lookup = tokio::net::lookup_host((bare, self.port));
        let mut addrs = tokio::time::timeout(self.timeouts.connect, lookup)
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let addr = addrs.next().ok_or_else(|| fail("no addresses".into()))?;
        self.resolved.store(Some(Arc::new((addr, Instant::now()))));
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(max_concurrent: usize) -> Upstream {
        let spec = spec::Upstream {
            tls: false,
            host: "127.0.0.1".into(),
            port: 9,
            base_path: String::new(),
            host_header: HeaderValue::from_static("127.0.0.1:9"),
            headers: Vec::new(),
            timeouts: TimeoutsSpec::default(),
            health: HealthSpec {
                failures: 2,
                cooldown: Duration::from_secs(30),
            },
            max_concurrent,
            queue_timeout: Duration::from_millis(10),
            pool: Default::default(),
            http_version: Default::default(),
            ca: None,
            sni: None,
            provider: Provider::Other,
        };
        Upstream::new("u".into(), &spec)
    }

    #[tokio::test]
    async fn state_counts_exchanges_slots_and_failures() {
        let up = upstream(2);
        let first = up.slot(false).await.unwrap();
        let second = up.slot(false).await.unwrap();
        assert!(up.slot(false).await.is_err(), "both slots taken");
        let s = up.state();
        assert_eq!((s.inflight, s.slots), (2, Some((0, 2))));
        drop(first);
        assert_eq!(up.state().slots, Some((1, 2)));
        drop(second);
        assert_eq!(up.state().inflight, 0);

        up.record_failure();
        assert_eq!(up.state().consecutive_failures, 1);
        assert!(up.state().ejected_for.is_zero());
        up.record_failure();
        let s = up.state();
        assert!(s.ejected_for > Duration::from_secs(29), "{s:?}");
        assert_eq!((s.consecutive_failures, s.failures), (0, 2));
    }

    #[tokio::test]
    async fn uncapped_upstreams_still_count_their_exchanges() {
        let up = upstream(0);
        let mut slots = Vec::new();
        for _ in 0..3 {
            slots.push(up.slot(false).await.unwrap());
        }
        assert_eq!((up.state().inflight, up.state().slots), (3, None));
        drop(slots);
        assert_eq!(up.state().inflight, 0);
    }
}
