//! An upstream as the proxy uses it: where it is, how to reach it, what to inject.

use crate::config::schema::TimeoutsSpec;
use crate::config::secret::Secret;
use http::{HeaderName, HeaderValue};
use pingora::upstreams::peer::HttpPeer;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}

/// DNS resolution of an upstream host failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct ResolveError {
    pub host: String,
    pub reason: String,
}

impl Upstream {
    pub fn new(
        name: String,
        tls: bool,
        host: String,
        port: u16,
        base_path: String,
        headers: Vec<(HeaderName, Secret<HeaderValue>)>,
        timeouts: TimeoutsSpec,
    ) -> Result<Upstream, http::header::InvalidHeaderValue> {
        let default_port = if tls { 443 } else { 80 };
        let host_header = if port == default_port {
            HeaderValue::from_str(&host)?
        } else {
            HeaderValue::from_str(&format!("{host}:{port}"))?
        };
        Ok(Upstream {
            name,
            tls,
            host,
            port,
            base_path,
            host_header,
            headers,
            timeouts,
            resolved: Mutex::new(None),
        })
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
