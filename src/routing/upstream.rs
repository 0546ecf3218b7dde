//! An upstream as the proxy uses it: where it is, how to reach it, what to inject, and how
//! it has been doing (passive health, latency, concurrency).

use crate::config::schema::{HealthSpec, TimeoutsSpec};
use crate::config::secret::Secret;
use crate::config::spec;
use http::{HeaderName, HeaderValue};
use pingora::upstreams::peer::HttpPeer;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    resolved: Mutex<Option<(SocketAddr, Instant)>>,
    health: Health,
    /// Smoothed time to first byte, in microseconds as f64 bits (0 = not measured yet).
    latency_ewma: AtomicU64,
    /// With `max_concurrent`: the slots, and how long to wait for one.
    slots: Option<(Arc<Semaphore>, Duration)>,
}

/// Passive health: consecutive failures, and until when the upstream is skipped.
#[derive(Debug)]
struct Health {
    spec: HealthSpec,
    failures: AtomicU32,
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

/// No slot for this upstream freed up within its `queue_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("upstream is at its max_concurrent limit")]
pub struct Busy;

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
            name,
            tls: spec.tls,
            host: spec.host.clone(),
            port: spec.port,
            base_path: spec.base_path.clone(),
            host_header: spec.host_header.clone(),
            headers: spec.headers.clone(),
            timeouts: spec.timeouts.clone(),
            resolved: Mutex::new(None),
            health: Health {
                spec: spec.health.clone(),
                failures: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
            },
            latency_ewma: AtomicU64::new(0),
            slots: (spec.max_concurrent > 0).then(|| {
                (
                    Arc::new(Semaphore::new(spec.max_concurrent)),
                    spec.queue_timeout,
                )
            }),
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

    /// A slot under `max_concurrent` (none needed without a cap), waiting up to `queue_timeout`.
    pub async fn slot(&self) -> Result<Option<OwnedSemaphorePermit>, Busy> {
        let Some((slots, wait)) = &self.slots else {
            return Ok(None);
        };
        match tokio::time::timeout(*wait, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Busy),
        }
    }

    /// The upstream path for a client path (already stripped of the route prefix).
    pub fn path_for(&self, path_and_query: &str) -> String {
        let mut out = String::with_capacity(self.base_path.len() + path_and_query.len());
        out.push_str(&self.base_path);
        out.push_str(path_and_query);
        out
    }

    /// A Pingora peer for this upstream, with DNS resolved asynchronously and cached.
    /// (`HttpPeer::new` with a host name would resolve blocking, and panic on failure.)
    pub async fn peer(&self) -> Result<HttpPeer, ResolveError> {
        let addr = self.resolve().await?;
        let sni = if self.tls {
            self.host.trim_matches(['[', ']']).to_string()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, self.tls, sni);
        let o = &mut peer.options;
        o.connection_timeout = Some(self.timeouts.connect);
        o.total_connection_timeout = Some(self.timeouts.connect);
        o.read_timeout = Some(self.timeouts.read);
        o.write_timeout = Some(self.timeouts.write);
        o.idle_timeout = Some(self.timeouts.idle);
        Ok(peer)
    }

    async fn resolve(&self) -> Result<SocketAddr, ResolveError> {
        let bare = self.host.trim_matches(['[', ']']);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        if let Some((addr, at)) = *self.resolved.lock().expect("dns cache lock") {
            if at.elapsed() < DNS_TTL {
                return Ok(addr);
            }
        }
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
        *self.resolved.lock().expect("dns cache lock") = Some((addr, Instant::now()));
        Ok(addr)
    }
}
